//! `publish`: parse the command line, run the library, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use publish_action::app::{self, Exit};
use publish_action::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { Exit::Success as u8 });
        }
    };
    init_logging(cli.debug);
    let request = cli.into_request();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    match runtime.block_on(app::execute(request)) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            app::report_error(&err);
            ExitCode::from(app::exit_for(&err) as u8)
        }
    }
}

fn init_logging(debug: bool) {
    let default = if debug { "publish_action=debug" } else { "publish_action=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(publish_action::progress::LogLine::new)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
}
