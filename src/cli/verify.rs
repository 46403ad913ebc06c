//! `publish verify`'s flags, as cosign's `verify` and `verify-attestation` name them.

use std::path::PathBuf;

use clap::Args;

use super::{OutputOpt, RegistryFlags, SignFormatArg};

#[derive(Debug, Args)]
pub struct VerifyCmd {
    /// The image: [docker://]HOST/REPOSITORY[:TAG|@DIGEST].
    pub reference: String,
    /// The public key (cosign.pub).
    #[arg(long, required_unless_present_any = ["certificate_identity", "certificate_identity_regexp"])]
    pub key: Option<PathBuf>,
    /// Keyless: the identity the certificate must carry, e.g.
    /// https://github.com/OWNER/REPO/.github/workflows/publish.yml@refs/heads/main
    #[arg(long, conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    /// Keyless: the OIDC issuer, e.g. https://token.actions.githubusercontent.com
    #[arg(long, conflicts_with = "key")]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless: the identity as a regular expression (whole value), like cosign's.
    #[arg(long, conflicts_with_all = ["key", "certificate_identity"])]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer as a regular expression (whole value).
    #[arg(long, conflicts_with_all = ["key", "certificate_oidc_issuer"])]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Sigstore's trusted_root.json (Fulcio CAs, Rekor and CT log keys), as cosign takes it.
    /// Default for keyless: the public-good roots through Sigstore's TUF repository.
    #[arg(long, conflicts_with = "certificate_roots")]
    pub trusted_root: Option<PathBuf>,
    /// Keyless: the Fulcio root certificates to trust (PEM); Rekor and CT log keys then come
    /// from SIGSTORE_REKOR_PUBLIC_KEY and SIGSTORE_CT_LOG_PUBLIC_KEY_FILE, as for cosign.
    #[arg(long)]
    pub certificate_roots: Option<PathBuf>,
    /// Do not check transparency-log entries (cosign's flag; keyless then checks the
    /// certificate at the current time).
    #[arg(long)]
    pub insecure_ignore_tlog: bool,
    /// Do not check the certificate's embedded SCTs (cosign's flag).
    #[arg(long)]
    pub insecure_ignore_sct: bool,
    /// No network but the registry: roots must come from --trusted-root or --certificate-roots.
    #[arg(long)]
    pub offline: bool,
    /// The format that must verify: legacy, bundle, or both (either one).
    #[arg(long, value_enum, default_value_t = SignFormatArg::Both)]
    pub format: SignFormatArg,
    /// Verify attestations of this predicate type instead of signatures: slsaprovenance1,
    /// spdxjson, cyclonedx (cosign's names) or a predicate type URI.
    #[arg(long, value_name = "TYPE")]
    pub attestation: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub output: OutputOpt,
}
