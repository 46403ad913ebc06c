//! Command-line syntax (clap only), lowered into `commands::Request`. Each subcommand takes
//! only the flags that mean something to it. Nothing else knows clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::{
    CheckArgs, KeyPairArgs, Output, PlanArgs, PolicyArgs, PushArgs, Request, RunArgs, RunPodArgs, RunPodCommand,
    SignArgs, VerifyArgs,
};
use crate::commands::{push::RegistryArgs, sign_endpoints};

mod verify;
pub use verify::VerifyCmd;

/// Publish container images, signed, to the registry that fits, and point RunPod at them.
#[derive(Debug, Parser)]
#[command(name = "publish", version = VERSION, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Without a command: print the plan and stop (same as `publish plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Debug logs on stderr (RUST_LOG overrides). Secrets are never logged.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(flatten)]
    pub policy: PolicyOpts,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// `publish --version`: the crate's version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PUBLISH_COMMIT"), ")");

const EXIT_CODES: &str = "Exit codes: 0 success; 1 runtime failure (network, auth, registry); \
2 usage or policy error (nothing written); 3 partial (some targets failed)";

const DEFAULT_POLICY: &str = "publish.yaml";

#[derive(Debug, Args, Clone, Default)]
pub struct PolicyOpts {
    /// The policy file [default: publish.yaml].
    #[arg(long, env = "PUBLISH_POLICY")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputOpt,
}

#[derive(Debug, Args, Clone, Default)]
pub struct OutputOpt {
    /// Output format on stdout.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate the policy and the image sources (every blob there, with its size), offline.
    Check(CheckCmd),
    /// Print what would be pushed where, and why, writing nothing.
    Plan(PlanCmd),
    /// Execute the plan (the default command), or a plan saved by `plan --output json`.
    Run(RunCmd),
    /// Copy one image to a registry, like `skopeo copy`: publish push oci:DIR docker://HOST/REPO:TAG
    Push(PushCmd),
    /// Print the policy file's JSON Schema.
    Schema,
    /// Sign an image in cosign's formats: publish sign HOST/REPO@sha256:… --key cosign.key
    Sign(SignCmd),
    /// Verify an image's cosign signatures: publish verify HOST/REPO[:TAG|@DIGEST] --key cosign.pub
    Verify(VerifyCmd),
    /// Write a commented publish.yaml and .github/workflows/publish.yml from what the checkout
    /// holds (git remote, an image build, RUNPOD_API_KEY); never overwrites.
    Init {
        /// The checkout to set up.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Instead: write a self-hosted registry set-up into this directory (distribution
        /// behind nginx with TLS and htpasswd; see docs/self-hosting.md).
        #[arg(long)]
        self_hosted: Option<PathBuf>,
        /// The registry's host name (or IP) for its TLS certificate (--self-hosted).
        #[arg(long, default_value = "registry.example.com", requires = "self_hosted")]
        host: String,
        /// Where nginx listens (--self-hosted).
        #[arg(long, default_value = "0.0.0.0:443", requires = "self_hosted")]
        listen: String,
        /// The loopback port distribution listens on behind nginx (--self-hosted).
        #[arg(long, default_value_t = 5000, requires = "self_hosted")]
        backend_port: u16,
    },
    /// Write a new cosign key pair, cosign.key (encrypted with COSIGN_PASSWORD) and cosign.pub.
    GenerateKeyPair {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Replace an existing cosign.key and cosign.pub.
        #[arg(long)]
        force: bool,
    },
    /// Delete old images as the policy's retention: says (never one a kept tag, RunPod or a kept
    /// index still uses).
    Prune {
        /// List every image with its verdict and reason, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// One image, or one image on one registry: IMAGE[@REGISTRY].
        #[arg(long, value_name = "IMAGE[@REGISTRY]")]
        only: Option<String>,
        #[command(flatten)]
        policy: PolicyOpts,
    },
    /// RunPod templates: render them, or sync them for images already published.
    #[command(subcommand)]
    Runpod(RunPodCmd),
}

#[derive(Debug, Args)]
pub struct SignCmd {
    /// The image: [docker://]HOST/REPOSITORY@sha256:… (the digest is required).
    pub reference: String,
    /// The private key: a path, or env://VAR holding it.
    #[arg(long, required_unless_present = "keyless")]
    pub key: Option<String>,
    /// Keyless, with GitHub Actions' OIDC token, Fulcio and Rekor.
    #[arg(long, conflicts_with = "key")]
    pub keyless: bool,
    /// Fulcio's URL (keyless).
    #[arg(long, default_value = crate::sign::keyless::FULCIO_URL, requires = "keyless")]
    pub fulcio_url: String,
    /// Rekor's URL (keyless, or a key with --tlog-upload).
    #[arg(long, default_value = crate::sign::keyless::REKOR_URL)]
    pub rekor_url: String,
    /// Log a key-pair signature in Rekor, as cosign does by default (keyless always logs).
    #[arg(long, conflicts_with = "keyless")]
    pub tlog_upload: bool,
    /// legacy, bundle or both.
    #[arg(long, value_enum, default_value_t = SignFormatArg::Both)]
    pub format: SignFormatArg,
    /// Print what would be written, write nothing, contact only read-only endpoints.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub output: OutputOpt,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignFormatArg {
    Legacy,
    Bundle,
    Both,
}

impl From<SignFormatArg> for crate::sign::Format {
    fn from(f: SignFormatArg) -> Self {
        match f {
            SignFormatArg::Legacy => crate::sign::Format::Legacy,
            SignFormatArg::Bundle => crate::sign::Format::Bundle,
            SignFormatArg::Both => crate::sign::Format::Both,
        }
    }
}

#[derive(Debug, Args)]
pub struct RegistryFlags {
    /// Extra CA certificate (PEM) to trust for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP (loopback registries only).
    #[arg(long)]
    pub insecure: bool,
    /// Username (with --password-env; default: Docker's config.json).
    #[arg(long, requires = "password_env")]
    pub username: Option<String>,
    /// Environment variable holding the password or token.
    #[arg(long, requires = "username")]
    pub password_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunPodCmd {
    /// Print the rendered template JSON.
    Render {
        /// Only this template (by name).
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        policy: PolicyOpts,
    },
    /// Create or update the templates through RunPod's API.
    Sync {
        /// Print the diff, write nothing (read-only requests only).
        #[arg(long)]
        dry_run: bool,
        /// Move a template even when it holds a newer image than this one.
        #[arg(long)]
        allow_rollback: bool,
        #[command(flatten)]
        policy: PolicyOpts,
    },
    /// List the images a template could point to, newest first (the one it runs marked).
    History {
        /// The template's name.
        template: String,
        #[command(flatten)]
        policy: PolicyOpts,
    },
    /// Point a template and its endpoints at an earlier image, its signature verified.
    Rollback {
        /// The template's name.
        template: String,
        /// previous (the image before the one it runs), a tag, or sha256:….
        #[arg(long, value_parser = clap::value_parser!(crate::commands::RollbackTo))]
        to: crate::commands::RollbackTo,
        /// Move to an image whose signature does not verify with the policy's signing.
        #[arg(long)]
        allow_unsigned: bool,
        /// Print what would move, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        policy: PolicyOpts,
    },
}

#[derive(Debug, Args, Default)]
pub struct CheckCmd {
    /// Also hash every blob of every source against its digest (reads every byte).
    #[arg(long)]
    pub verify_digests: bool,
    #[command(flatten)]
    pub policy: PolicyOpts,
}

#[derive(Debug, Args, Default)]
pub struct PlanCmd {
    /// Print a GitHub Actions matrix: one entry per target (`only` is the target's id).
    #[arg(long)]
    pub matrix: bool,
    /// Measure usage on every candidate that allows it, even without credentials (by default:
    /// those whose credentials are there; read-only requests).
    #[arg(long, conflicts_with = "no_measure")]
    pub measure: bool,
    /// Measure nothing: no request to any registry.
    #[arg(long)]
    pub no_measure: bool,
    #[command(flatten)]
    pub policy: PolicyOpts,
}

#[derive(Debug, Args, Default)]
pub struct RunCmd {
    /// Execute this plan (saved by `publish plan --output json`) instead of planning again.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Run one entry: an image id, or a target id IMAGE@REGISTRY (see `publish plan --matrix`).
    #[arg(long, value_name = "IMAGE[@REGISTRY]")]
    pub only: Option<String>,
    /// Print the plan, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move tags and templates even when they hold a newer image than this run's.
    #[arg(long)]
    pub allow_rollback: bool,
    #[command(flatten)]
    pub policy: PolicyOpts,
}

#[derive(Debug, Args)]
pub struct PushCmd {
    /// Source image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
    /// docker-daemon:NAME[:TAG] or docker://HOST/REPO[:TAG|@DIGEST].
    pub source: String,
    /// Destination: docker://HOST/REPOSITORY[:TAG].
    pub destination: String,
    /// Read a docker:// source over plain HTTP (loopback registries only).
    #[arg(long)]
    pub src_insecure: bool,
    /// Upload in PATCH chunks of this size (e.g. 8MiB), resumable where the registry allows.
    #[arg(long, value_parser = parse_size)]
    pub chunk_size: Option<crate::types::ByteSize>,
    /// Print what would be written (blobs missing, manifests, tags), write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub output: OutputOpt,
}

fn parse_size(s: &str) -> Result<crate::types::ByteSize, Box<dyn std::error::Error + Send + Sync>> {
    let size: crate::types::ByteSize = s.parse()?;
    if size.0 == 0 { Err("a chunk of 0 bytes never finishes".into()) } else { Ok(size) }
}

impl OutputOpt {
    fn or(&self, outer: &OutputOpt) -> Output {
        match self.output.or(outer.output) {
            Some(Format::Json) => Output::Json,
            Some(Format::Text) | None => Output::Text,
        }
    }
}

impl PolicyOpts {
    /// This command's policy options, falling back to those written before the command.
    fn lower(&self, outer: &PolicyOpts) -> PolicyArgs {
        let policy = self.policy.clone().or_else(|| outer.policy.clone()).unwrap_or_else(|| DEFAULT_POLICY.into());
        PolicyArgs { policy, output: self.output.or(&outer.output) }
    }
}

impl Cli {
    pub fn into_request(self) -> Request {
        let top = self.policy;
        match self.command {
            None => {
                let policy = top.lower(&PolicyOpts::default());
                if self.dry_run {
                    Request::Plan(PlanArgs { policy, ..Default::default() })
                } else {
                    Request::Run(RunArgs { policy, ..Default::default() })
                }
            }
            Some(Cmd::Check(c)) => {
                Request::Check(CheckArgs { policy: c.policy.lower(&top), verify_digests: c.verify_digests })
            }
            Some(Cmd::Plan(p)) => Request::Plan(PlanArgs {
                policy: p.policy.lower(&top),
                matrix: p.matrix,
                measure: if p.no_measure {
                    crate::commands::Measure::Nothing
                } else if p.measure {
                    crate::commands::Measure::All
                } else {
                    crate::commands::Measure::WithCredentials
                },
            }),
            Some(Cmd::Run(r)) => Request::Run(RunArgs {
                policy: r.policy.lower(&top),
                plan: r.plan,
                only: r.only,
                dry_run: r.dry_run || self.dry_run,
                allow_rollback: r.allow_rollback,
            }),
            Some(Cmd::Schema) => Request::Schema,
            Some(Cmd::Prune { dry_run, only, policy }) => Request::Prune(crate::commands::PruneArgs {
                policy: policy.lower(&top),
                dry_run: dry_run || self.dry_run,
                only,
            }),
            Some(Cmd::Sign(s)) => Request::Sign(SignArgs {
                reference: s.reference,
                key: s.key,
                keyless: sign_endpoints(s.fulcio_url, s.rekor_url),
                tlog_upload: s.tlog_upload,
                format: s.format.into(),
                registry: s.registry.into(),
                output: s.output.or(&top.output),
                dry_run: s.dry_run || self.dry_run,
            }),
            Some(Cmd::Verify(v)) => Request::Verify(VerifyArgs {
                reference: v.reference,
                key: v.key,
                identity: v.certificate_identity,
                issuer: v.certificate_oidc_issuer,
                identity_regexp: v.certificate_identity_regexp,
                issuer_regexp: v.certificate_oidc_issuer_regexp,
                roots: v.certificate_roots,
                trusted_root: v.trusted_root,
                options: crate::sign::VerifyOptions {
                    ignore_tlog: v.insecure_ignore_tlog,
                    ignore_sct: v.insecure_ignore_sct,
                },
                offline: v.offline,
                format: v.format.into(),
                attestation: v.attestation,
                registry: v.registry.into(),
                output: v.output.or(&top.output),
            }),
            Some(Cmd::Init { .. } | Cmd::GenerateKeyPair { .. }) if self.dry_run => Request::Refused(
                "--dry-run: `init` and `generate-key-pair` only write files and have no dry run; nothing was written"
                    .into(),
            ),
            Some(Cmd::Init { dir, self_hosted, host, listen, backend_port }) => {
                Request::Init(crate::commands::InitArgs {
                    dir,
                    self_hosted: self_hosted.map(|d| crate::commands::SelfHostedArgs {
                        dir: d,
                        host,
                        listen,
                        backend_port,
                    }),
                })
            }
            Some(Cmd::GenerateKeyPair { output_dir, force }) => {
                Request::GenerateKeyPair(KeyPairArgs { dir: output_dir, force })
            }
            Some(Cmd::Runpod(cmd)) => Request::RunPod(cmd.lower(&top, self.dry_run)),
            Some(Cmd::Push(p)) => Request::Push(PushArgs {
                source: p.source,
                destination: p.destination,
                src_insecure: p.src_insecure,
                chunk_size: p.chunk_size,
                registry: p.registry.into(),
                output: p.output.or(&top.output),
                dry_run: p.dry_run || self.dry_run,
            }),
        }
    }
}

impl RunPodCmd {
    /// The request, with `--dry-run` given before the subcommand (`dry_run_before`).
    fn lower(self, top: &PolicyOpts, dry_run_before: bool) -> RunPodArgs {
        match self {
            RunPodCmd::Render { template, policy } => {
                RunPodArgs { policy: policy.lower(top), command: RunPodCommand::Render { template } }
            }
            RunPodCmd::Sync { dry_run, allow_rollback, policy } => RunPodArgs {
                policy: policy.lower(top),
                command: RunPodCommand::Sync { dry_run: dry_run || dry_run_before, allow_rollback },
            },
            RunPodCmd::History { template, policy } => {
                RunPodArgs { policy: policy.lower(top), command: RunPodCommand::History { template } }
            }
            RunPodCmd::Rollback { template, to, allow_unsigned, dry_run, policy } => RunPodArgs {
                policy: policy.lower(top),
                command: RunPodCommand::Rollback { template, to, allow_unsigned, dry_run: dry_run || dry_run_before },
            },
        }
    }
}

impl From<RegistryFlags> for RegistryArgs {
    fn from(f: RegistryFlags) -> Self {
        RegistryArgs { ca_file: f.ca_file, insecure: f.insecure, username: f.username, password_env: f.password_env }
    }
}

#[cfg(test)]
mod tests;
