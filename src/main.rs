//! `publish`: parse the command line, run the command, map the outcome to an exit code.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use publish_action::cli::Cli;
use publish_action::commands::{self, ExitStatus};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitStatus::Usage } else { ExitStatus::Success }.into();
        }
    };
    init_logging(cli.debug);
    let request = cli.into_request();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(commands::execute(request)) {
        Ok(exit) => exit.into(),
        Err(err) => {
            commands::report_error(&err);
            commands::exit_for(&err).into()
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
