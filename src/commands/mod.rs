//! The commands, one file each, as uv lays them out: `cli.rs` lowers clap's types into a
//! `Request`; each command loads what it needs, calls the library and prints its result;
//! `main.rs` turns the `ExitStatus` into the process's exit code. The process environment is
//! read once, by `load::environment`, into an `Env` handed to whatever needs a variable; the
//! run's client configuration is built once, by `load::client_config`.

mod check;
mod init;
mod keys;
mod load;
mod plan;
mod prune;
pub mod push;
mod rollback;
mod run;
mod runpod;
mod sign;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::github;
use crate::policy::Diagnostics;
use crate::runpod::template::TemplateErrors;

pub use check::CheckArgs;
pub use init::{InitArgs, SelfHostedArgs};
pub use keys::KeyPairArgs;
pub use prune::PruneArgs;
pub use push::PushArgs;
pub use rollback::To as RollbackTo;
pub use run::RunArgs;
pub use runpod::{RunPodArgs, RunPodCommand};
pub use sign::SignArgs;
pub use verify::VerifyArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// The policy-reading commands' common arguments.
#[derive(Debug, Clone, Default)]
pub struct PolicyArgs {
    pub policy: PathBuf,
    pub output: Output,
}

/// What `publish plan` measures before ranking.
pub use crate::plan::Measure;

/// `publish plan`.
#[derive(Debug, Clone, Default)]
pub struct PlanArgs {
    pub policy: PolicyArgs,
    /// Which registries' usage to measure (read-only requests).
    pub measure: Measure,
    /// Print a GitHub Actions matrix (one entry per target id).
    pub matrix: bool,
}

#[derive(Debug, Clone)]
pub enum Request {
    Check(CheckArgs),
    Plan(PlanArgs),
    Run(RunArgs),
    Push(PushArgs),
    Schema,
    RunPod(RunPodArgs),
    Sign(SignArgs),
    Verify(VerifyArgs),
    GenerateKeyPair(KeyPairArgs),
    Init(init::InitArgs),
    Prune(PruneArgs),
    /// A command line the command cannot honour (a top-level `--dry-run` before a command
    /// that has none): exit 2, nothing done.
    Refused(String),
}

/// Exit codes, as documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    /// A runtime failure: network, authentication, registry.
    Failure = 1,
    /// A usage or policy error: nothing was contacted (but read-only requests the command
    /// documents), nothing was written.
    Usage = 2,
    /// Some targets, signatures or templates failed.
    Partial = 3,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

/// A mistake in how the tool was called or configured (exit 2), found before anything was
/// written: a message, or the typed error that found it, kept as it is (its text unchanged).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Typed(Box<dyn std::error::Error + Send + Sync>),
}

impl UsageError {
    /// A typed error (or `anyhow` one) as a usage mistake, without flattening it to text.
    pub fn of(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> UsageError {
        UsageError::Typed(e.into())
    }
}

/// The exit code for an error that ended a command: the one classification. A policy
/// mistake (`Diagnostics`), a template that does not render (`TemplateErrors`) or any other
/// `UsageError`, wherever it stands in the error's chain, is exit 2; anything else (network,
/// authentication, a registry's refusal) is exit 1.
pub fn exit_for(err: &anyhow::Error) -> ExitStatus {
    let usage = err.chain().any(|e| e.is::<Diagnostics>() || e.is::<UsageError>() || e.is::<TemplateErrors>());
    if usage { ExitStatus::Usage } else { ExitStatus::Failure }
}

pub async fn execute(request: Request) -> anyhow::Result<ExitStatus> {
    let env = load::environment();
    let actions = github::Actions::detect(&env);
    if actions.is_some() {
        github::mask_secrets_from_now_on();
    }
    match request {
        Request::Schema => {
            print_out(&format!("{}\n", crate::report::json(&crate::policy::schema())));
            Ok(ExitStatus::Success)
        }
        Request::Check(args) => check::check(args, &env, actions.as_ref()).await,
        Request::Plan(args) => plan::plan(args, &env, actions.as_ref()).await,
        Request::Run(args) => run::run(args, &env, actions.as_ref()).await,
        Request::Push(args) => push::push(args, &env).await,
        Request::Prune(args) => prune::prune(args, &env, actions.as_ref()).await,
        Request::RunPod(args) => runpod::runpod(args, &env).await,
        Request::Sign(args) => sign::sign(args, &env).await,
        Request::Verify(args) => verify::verify(args, &env).await,
        Request::GenerateKeyPair(args) => keys::generate_key_pair(args, &env),
        Request::Init(args) => init::init(args, &env),
        Request::Refused(why) => Err(UsageError::Message(why).into()),
    }
}

/// Prints a command's error; in GitHub Actions, policy mistakes also become annotations on
/// the policy file (at most 10, GitHub's limit per step).
pub fn report_error(err: &anyhow::Error) {
    let in_actions = github::Actions::detect(&load::environment()).is_some();
    if let Some(d) = err.downcast_ref::<Diagnostics>() {
        // Already `file:line:col: field: message`, the shape editors and Actions parse.
        eprintln!("{d}");
        if in_actions {
            for x in d.0.iter().take(github::MAX_ERROR_ANNOTATIONS) {
                let message = match &x.hint {
                    Some(h) => format!("{}\nhint: {h}", x.message),
                    None => x.message.clone(),
                };
                github::error_annotation(&x.file, x.line, x.col, &x.field, &message);
            }
        }
    } else if let Some(t) = err.downcast_ref::<TemplateErrors>() {
        eprintln!("{t}");
    } else {
        eprintln!("error: {err:#}");
        if in_actions {
            github::error(&format!("{err:#}"));
        }
    }
}

fn print_json_or<T: serde::Serialize>(output: Output, value: &T, text: impl FnOnce() -> String) {
    match output {
        Output::Json => print_out(&format!("{}\n", crate::report::json(value))),
        Output::Text => print_out(&text()),
    }
}

/// Writes a result on stdout. A reader that went away (`publish schema | head`) is not an
/// error worth a panic: the rest is dropped.
pub fn print_out(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}

fn exit_for_report(report: &crate::report::RunReport) -> ExitStatus {
    match report.status {
        crate::report::RunStatus::Success => ExitStatus::Success,
        crate::report::RunStatus::Partial => ExitStatus::Partial,
        crate::report::RunStatus::Failed => ExitStatus::Failure,
    }
}

/// Fulcio and Rekor from the command line.
pub fn sign_endpoints(fulcio: String, rekor: String) -> crate::sign::keyless::Endpoints {
    crate::sign::keyless::Endpoints { fulcio, rekor }
}
