//! `publish verify HOST/REPO[:TAG|@DIGEST]`: check an image's cosign signatures with a
//! public key, or keylessly against an identity, an issuer and trust roots (a Sigstore
//! trusted_root.json, PEM roots, or the public-good instance through TUF), as cosign does.

use std::path::{Path, PathBuf};

use super::push::RegistryArgs;
use super::sign::parse_reference;
use super::{ExitStatus, UsageError};
use crate::credentials::Env;
use crate::sign::keyless::Matcher;
use crate::sign::trust::TrustedRoot;
use crate::sign::{self, keyless};

#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub reference: String,
    /// The public key (cosign.pub), or keyless with identity and issuer.
    pub key: Option<PathBuf>,
    pub identity: Option<String>,
    pub issuer: Option<String>,
    pub identity_regexp: Option<String>,
    pub issuer_regexp: Option<String>,
    /// Trusted Fulcio roots (PEM), for keyless verification.
    pub roots: Option<PathBuf>,
    /// Sigstore's trusted_root.json.
    pub trusted_root: Option<PathBuf>,
    pub options: sign::VerifyOptions,
    /// Never fetch trust roots.
    pub offline: bool,
    /// Which format must verify (`both`: either).
    pub format: sign::Format,
    /// Verify attestations of this predicate type (a cosign name or a URI) instead.
    pub attestation: Option<String>,
    pub registry: RegistryArgs,
    pub output: super::Output,
}

const MAX_TRUSTED_ROOT: u64 = 4 * 1024 * 1024;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, UsageError> {
    crate::http::read_file_limited(path, MAX_TRUSTED_ROOT).map_err(|e| UsageError::Message(format!("{what}: {e}")))
}

/// The trust roots: `--trusted-root`, `--certificate-roots` (with cosign's environment
/// variables for the Rekor and CT log keys), or the public-good roots through TUF.
async fn trust(args: &VerifyArgs, env: &Env, required: bool) -> anyhow::Result<Option<TrustedRoot>> {
    if let Some(path) = &args.trusted_root {
        let mut t = TrustedRoot::from_json(&read(path, "--trusted-root")?)
            .map_err(|e| UsageError::Message(format!("--trusted-root {}: {e}", path.display())))?;
        t.source = path.display().to_string();
        return Ok(Some(t));
    }
    if let Some(path) = &args.roots {
        let key = |var: &str| -> Result<Option<Vec<u8>>, UsageError> {
            env.get(var).filter(|v| !v.is_empty()).map(|f| read(Path::new(f), var)).transpose()
        };
        let rekor = key("SIGSTORE_REKOR_PUBLIC_KEY")?;
        let ctlog = key("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE")?;
        let mut t = TrustedRoot::from_pem(&read(path, "--certificate-roots")?, rekor.as_deref(), ctlog.as_deref())
            .map_err(|e| UsageError::Message(format!("--certificate-roots {}: {e}", path.display())))?;
        t.source = path.display().to_string();
        return Ok(Some(t));
    }
    if !required {
        return Ok(None);
    }
    if args.offline {
        return Err(UsageError::Message(
            "--offline: keyless verification needs trust roots from a file: give --trusted-root trusted_root.json (Sigstore's format, as cosign takes it)".into(),
        )
        .into());
    }
    let cache = super::load::cache_dir(env).join("tuf");
    Ok(Some(TrustedRoot::public_good(Some(&cache)).await.map_err(anyhow::Error::msg)?))
}

fn matcher(exact: &Option<String>, regexp: &Option<String>, flag: &str) -> Result<Option<Matcher>, UsageError> {
    match (exact, regexp) {
        (Some(e), _) => Ok(Some(Matcher::Exact(e.clone()))),
        (None, Some(r)) => Matcher::regex(r).map(Some).map_err(|e| UsageError::Message(format!("--{flag}-regexp {e}"))),
        (None, None) => Ok(None),
    }
}

pub async fn verify(args: VerifyArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    let config = super::load::client_config(crate::http::ClientConfig::default(), env);
    let reference = parse_reference(&args.reference)?;
    let identity = matcher(&args.identity, &args.identity_regexp, "certificate-identity")?;
    let issuer = matcher(&args.issuer, &args.issuer_regexp, "certificate-oidc-issuer")?;
    let verifier = match (&args.key, identity, issuer) {
        (Some(key), None, None) => {
            let pem = read(key, "--key")?;
            let spki = crate::sign::tlog::pem_der(&pem)
                .ok_or_else(|| UsageError::Message(format!("--key {}: not a PEM public key", key.display())))?;
            sign::Verifier::Key {
                key: sign::keys::load_public(key).map_err(UsageError::of)?,
                spki,
                trust: trust(&args, env, false).await?,
            }
        }
        (None, Some(identity), Some(issuer)) => sign::Verifier::Keyless {
            policy: keyless::Policy { identity, issuer },
            trust: trust(&args, env, true).await?.unwrap_or_default(),
        },
        _ => {
            return Err(UsageError::Message(
                "verify with --key cosign.pub, or keyless with --certificate-identity[-regexp] and --certificate-oidc-issuer[-regexp]"
                    .into(),
            )
            .into());
        }
    };
    let client = args.registry.client(&reference, env, config)?;
    client.authenticate().await?;
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        None => {
            let tag = reference.tag.clone().unwrap_or_else(|| crate::reference::DEFAULT_TAG.into());
            client
                .resolve(&tag)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{}: no image {reference}", reference.host))?
                .digest
        }
    };
    if let Some(name) = &args.attestation {
        let wanted =
            crate::attest::predicate_type(name).map_err(|e| UsageError::Message(format!("--attestation {e}")))?;
        let found =
            sign::verify_attestations(&client, &reference.repository, &digest, (&verifier, args.options), &wanted)
                .await?;
        return Ok(attestations_result(&args, &format!("{}@{digest}", reference.name()), &found));
    }
    let verified = sign::verify(&client, &reference.repository, &digest, &verifier, args.options).await?;
    let legacy_ok = !verified.legacy.is_empty();
    let bundle_ok = !verified.bundle.is_empty();
    let ok = match args.format {
        sign::Format::Legacy => legacy_ok,
        sign::Format::Bundle => bundle_ok,
        sign::Format::Both => legacy_ok || bundle_ok,
    };
    let doc = serde_json::json!({"verified": ok, "result": verified});
    super::print_json_or(args.output, &doc, || {
        let mut s = format!("{}@{digest}\n", reference.name());
        s.push_str(&format!("  legacy (.sig): {} valid\n", verified.legacy.len()));
        s.push_str(&format!("  bundle (referrer): {} valid\n", verified.bundle.len()));
        for r in &verified.signatures {
            let mark = if r.verified { "ok" } else { "FAILED" };
            s.push_str(&format!("  {} {}: {mark}", r.format, r.digest));
            if !r.passed.is_empty() {
                s.push_str(&format!("; checked: {}", r.passed.join(", ")));
            }
            s.push('\n');
            if !r.annotations.is_empty() {
                let a: Vec<String> = r.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("    annotations: {}\n", a.join(", ")));
            }
            for n in &r.notes {
                s.push_str(&format!("    note: {n}\n"));
            }
        }
        for i in &verified.invalid {
            s.push_str(&format!("  invalid: {i}\n"));
        }
        s.push_str(if ok { "verified\n" } else { "NOT verified\n" });
        s
    });
    Ok(if ok { ExitStatus::Success } else { ExitStatus::Failure })
}

/// Prints what `verify --attestation` found; success when one of the format asked verified.
fn attestations_result(args: &VerifyArgs, image: &str, found: &sign::Attestations) -> ExitStatus {
    let counts = |f: &str| found.verified().filter(|a| a.check.format == f).count();
    let ok = match args.format {
        sign::Format::Legacy => counts("legacy") > 0,
        sign::Format::Bundle => counts("bundle") > 0,
        sign::Format::Both => counts("legacy") + counts("bundle") > 0,
    };
    let doc = serde_json::json!({"verified": ok, "result": found});
    super::print_json_or(args.output, &doc, || {
        let mut s = format!("{image}\n  attestations of {}\n", found.predicate_type);
        s.push_str(&format!(
            "  legacy (.att): {} valid\n  bundle (referrer): {} valid\n",
            counts("legacy"),
            counts("bundle")
        ));
        for a in &found.attestations {
            let r = &a.check;
            let mark = if r.verified { "ok" } else { "FAILED" };
            s.push_str(&format!("  {} {}: {mark}", r.format, r.digest));
            if !r.passed.is_empty() {
                s.push_str(&format!("; checked: {}", r.passed.join(", ")));
            }
            s.push('\n');
            if let Some(why) = &r.failed {
                s.push_str(&format!("    failed: {why}\n"));
            }
            for (k, v) in a.predicate.as_ref().map(|p| predicate_summary(&found.predicate_type, p)).unwrap_or_default()
            {
                s.push_str(&format!("    {k}: {v}\n"));
            }
            for n in &r.notes {
                s.push_str(&format!("    note: {n}\n"));
            }
        }
        if found.attestations.is_empty() {
            let others = if found.other_types.is_empty() { "none".to_string() } else { found.other_types.join(", ") };
            s.push_str(&format!("  no attestation of {} (found: {others})\n", found.predicate_type));
        }
        s.push_str(if ok { "verified\n" } else { "NOT verified\n" });
        s
    });
    if ok { ExitStatus::Success } else { ExitStatus::Failure }
}

/// A predicate's key fields: the provenance's source, workflow and builder; an SBOM's format,
/// name and how many packages it lists.
fn predicate_summary(predicate_type: &str, p: &serde_json::Value) -> Vec<(&'static str, String)> {
    use serde_json::Value;
    if predicate_type == crate::attest::provenance::PREDICATE_TYPE {
        return crate::attest::provenance::summary(p);
    }
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let count = |k: &str| p.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    if p.get("spdxVersion").is_some() {
        return vec![("sbom", format!("{} {}, {} packages", s("spdxVersion"), s("name"), count("packages")))];
    }
    if p.get("bomFormat").is_some() {
        let name = p.pointer("/metadata/component/name").and_then(Value::as_str).unwrap_or_default();
        return vec![("sbom", format!("CycloneDX {} {name}, {} components", s("specVersion"), count("components")))];
    }
    let keys: Vec<String> = p.as_object().map(|o| o.keys().take(8).cloned().collect()).unwrap_or_default();
    vec![("predicate", format!("fields {}", keys.join(", ")))]
}
