//! Command-line syntax (clap only), lowered into `app::Request`. Nothing else knows clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{Output, PolicyArgs, PushArgs, RegistryArgs, Request, RunPodArgs, RunPodCommand, SignArgs};

/// Publish container images, signed, to the registry that fits, and point RunPod at them.
#[derive(Debug, Parser)]
#[command(name = "publish", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Print the plan and stop (same as `publish plan`).
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Debug logs on stderr (RUST_LOG overrides). Secrets are never logged.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(flatten)]
    pub policy: PolicyOpts,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 runtime failure (network, auth, registry); \
2 usage or policy error (nothing contacted, nothing written); 3 partial (some targets failed)";

#[derive(Debug, Args, Clone)]
pub struct PolicyOpts {
    /// The policy file.
    #[arg(long, global = true, default_value = "publish.yaml", env = "PUBLISH_POLICY")]
    pub policy: PathBuf,
    /// Output format on stdout.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate the policy and open the image sources, offline.
    Check,
    /// Print what would be pushed where, and why, writing nothing.
    Plan(PlanCmd),
    /// Execute the plan (the default command).
    Run(RunCmd),
    /// Copy one image to a registry, like `skopeo copy`: publish push oci:DIR docker://HOST/REPO:TAG
    Push(PushCmd),
    /// Print the policy file's JSON Schema.
    Schema,
    /// Sign an image in cosign's formats: publish sign HOST/REPO@sha256:… --key cosign.key
    Sign(SignCmd),
    /// Verify an image's cosign signatures: publish verify HOST/REPO[:TAG|@DIGEST] --key cosign.pub
    Verify(SignCmd),
    /// Write a new cosign key pair, cosign.key (encrypted with COSIGN_PASSWORD) and cosign.pub.
    GenerateKeyPair {
        /// Where to write them.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
    },
    /// RunPod templates: render them, or sync them for images already published.
    #[command(subcommand)]
    Runpod(RunPodCmd),
}

#[derive(Debug, Args)]
pub struct SignCmd {
    /// The image: [docker://]HOST/REPOSITORY[:TAG][@DIGEST] (sign needs the digest).
    pub reference: String,
    /// sign: the private key (path or env://VAR); verify: the public key (cosign.pub).
    #[arg(long, required_unless_present_any = ["keyless", "certificate_identity"])]
    pub key: Option<String>,
    /// sign: keyless, with GitHub Actions' OIDC token, Fulcio and Rekor.
    #[arg(long, conflicts_with = "key")]
    pub keyless: bool,
    /// verify (keyless): the identity the certificate must carry, e.g.
    /// https://github.com/OWNER/REPO/.github/workflows/publish.yml@refs/heads/main
    #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    /// verify (keyless): the OIDC issuer, e.g. https://token.actions.githubusercontent.com
    #[arg(long, requires = "certificate_identity")]
    pub certificate_oidc_issuer: Option<String>,
    /// verify (keyless): the Fulcio root certificates to trust (PEM).
    #[arg(long)]
    pub certificate_roots: Option<PathBuf>,
    /// Fulcio's URL.
    #[arg(long, default_value = "https://fulcio.sigstore.dev")]
    pub fulcio_url: String,
    /// Rekor's URL.
    #[arg(long, default_value = "https://rekor.sigstore.dev")]
    pub rekor_url: String,
    /// legacy, bundle or both.
    #[arg(long, value_enum, default_value_t = SignFormatArg::Both)]
    pub format: SignFormatArg,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SignFormatArg {
    Legacy,
    Bundle,
    Both,
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
    },
    /// Create or update the templates through RunPod's API (`--dry-run`: print the diff).
    Sync,
}

#[derive(Debug, Args, Default)]
pub struct PlanCmd {
    /// Print a GitHub Actions matrix: one entry per image and selected registry.
    #[arg(long)]
    pub matrix: bool,
    /// Measure the usage already spent on self-hosted registries (read-only requests).
    #[arg(long)]
    pub measure: bool,
}

#[derive(Debug, Args, Default)]
pub struct RunCmd {
    /// Run one entry of the plan: IMAGE or IMAGE@REGISTRY (see `publish plan --matrix`).
    #[arg(long, value_name = "IMAGE[@REGISTRY]")]
    pub only: Option<String>,
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
    #[command(flatten)]
    pub registry: RegistryFlags,
}

fn parse_size(s: &str) -> Result<crate::types::ByteSize, String> {
    let size: crate::types::ByteSize = s.parse()?;
    if size.0 == 0 { Err("a chunk of 0 bytes never finishes".into()) } else { Ok(size) }
}

impl Cli {
    pub fn into_request(self) -> Request {
        let output = match self.policy.output {
            Format::Text => Output::Text,
            Format::Json => Output::Json,
        };
        let policy = PolicyArgs { policy: self.policy.policy, output, ..Default::default() };
        match (self.command, self.dry_run) {
            (Some(Cmd::Check), _) => Request::Check(policy),
            (Some(Cmd::Plan(p)), _) => Request::Plan(PolicyArgs { matrix: p.matrix, measure: p.measure, ..policy }),
            (None | Some(Cmd::Run(_)), true) => Request::Plan(policy),
            (Some(Cmd::Run(r)), false) => Request::Run(PolicyArgs { only: r.only, ..policy }),
            (None, false) => Request::Run(policy),
            (Some(Cmd::Schema), _) => Request::Schema,
            (Some(Cmd::Sign(s)), _) => Request::Sign(sign_args(s, output)),
            (Some(Cmd::Verify(s)), _) => Request::Verify(sign_args(s, output)),
            (Some(Cmd::GenerateKeyPair { output_dir }), _) => Request::GenerateKeyPair { dir: output_dir },
            (Some(Cmd::Runpod(cmd)), dry_run) => Request::RunPod(RunPodArgs {
                policy,
                dry_run,
                command: match cmd {
                    RunPodCmd::Render { template } => RunPodCommand::Render { template },
                    RunPodCmd::Sync => RunPodCommand::Sync,
                },
            }),
            (Some(Cmd::Push(p)), _) => Request::Push(PushArgs {
                source: p.source,
                destination: p.destination,
                src_insecure: p.src_insecure,
                chunk_size: p.chunk_size,
                registry: p.registry.into(),
                output,
            }),
        }
    }
}

fn sign_args(s: SignCmd, output: Output) -> SignArgs {
    SignArgs {
        reference: s.reference,
        key: s.key,
        keyless: crate::sign::keyless::Endpoints { fulcio: s.fulcio_url, rekor: s.rekor_url },
        identity: s.certificate_identity,
        issuer: s.certificate_oidc_issuer,
        roots: s.certificate_roots,
        format: match s.format {
            SignFormatArg::Legacy => crate::sign::Format::Legacy,
            SignFormatArg::Bundle => crate::sign::Format::Bundle,
            SignFormatArg::Both => crate::sign::Format::Both,
        },
        registry: s.registry.into(),
        output,
    }
}

impl From<RegistryFlags> for RegistryArgs {
    fn from(f: RegistryFlags) -> Self {
        RegistryArgs { ca_file: f.ca_file, insecure: f.insecure, username: f.username, password_env: f.password_env }
    }
}
