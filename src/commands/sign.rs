//! `publish sign HOST/REPO@sha256:… --key cosign.key | --keyless`: cosign's formats, for an
//! image already in a registry. `--dry-run` names what would be written, from read-only
//! requests, and contacts neither Fulcio nor Rekor.

use super::push::RegistryArgs;
use super::{ExitStatus, Output, UsageError};
use crate::credentials::Env;
use crate::reference::Reference;
use crate::sign::{self, PreparedSigner, keyless};

#[derive(Debug, Clone)]
pub struct SignArgs {
    pub reference: String,
    /// The private key (path or `env://VAR`); `None` for keyless.
    pub key: Option<String>,
    pub keyless: keyless::Endpoints,
    /// Log key-pair signatures in Rekor (`keyless.rekor`); keyless always logs.
    pub tlog_upload: bool,
    pub format: sign::Format,
    pub registry: RegistryArgs,
    pub output: Output,
    pub dry_run: bool,
}

pub fn parse_reference(s: &str) -> Result<Reference, UsageError> {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    Reference::parse(s).map_err(|e| UsageError::Message(format!("{s:?}: {e}")))
}

pub async fn sign(args: SignArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    let config = super::load::client_config(crate::http::ClientConfig::default(), env);
    let reference = parse_reference(&args.reference)?;
    let digest = reference.digest.clone().ok_or_else(|| {
        UsageError::Message(format!(
            "sign {}: name the image by digest, REF@sha256:…, so the signature covers exactly it",
            args.reference
        ))
    })?;
    let prepared = match &args.key {
        Some(_) if !env.contains_key(sign::keys::COSIGN_PASSWORD) => {
            return Err(UsageError::Message("set COSIGN_PASSWORD to the key's password".into()).into());
        }
        Some(key) => {
            let rekor = args.tlog_upload.then_some(args.keyless.rekor.as_str());
            PreparedSigner::key(key, sign::keys::COSIGN_PASSWORD, rekor, env, &config)
        }
        None => PreparedSigner::keyless(args.keyless.clone(), env, &config),
    }
    .map_err(UsageError::of)?;
    let client = args.registry.client(&reference, env, config)?;
    client.authenticate().await?;
    let found = client
        .resolve(digest.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("{}: no manifest {digest} in {}", reference.host, reference.repository))?;
    if found.digest != digest {
        anyhow::bail!("{}: the registry served {} for {digest}", reference.host, found.digest);
    }
    if args.dry_run {
        let mut would = Vec::new();
        if matches!(args.format, sign::Format::Legacy | sign::Format::Both) {
            would.push(format!("{}:{}", reference.name(), sign::legacy_tag(&digest)));
        }
        if matches!(args.format, sign::Format::Bundle | sign::Format::Both) {
            would.push(format!("{}:{} (bundle referrer, fallback tag)", reference.name(), sign::fallback_tag(&digest)));
        }
        let how = match (&prepared, args.tlog_upload) {
            (PreparedSigner::Key(..), false) => "with the key".to_string(),
            (PreparedSigner::Key(..), true) => format!("with the key, logged in Rekor {}", args.keyless.rekor),
            (PreparedSigner::Keyless(_), _) => {
                format!("keyless (Fulcio {}, Rekor {})", args.keyless.fulcio, args.keyless.rekor)
            }
        };
        let doc = serde_json::json!({"dry_run": true, "digest": digest, "signer": how, "would_write": would});
        super::print_json_or(args.output, &doc, || {
            let mut s = format!("Dry run: nothing is written; {}@{digest} would be signed {how}\n", reference.name());
            for w in &would {
                s.push_str(&format!("  would write {w}\n"));
            }
            s
        });
        return Ok(ExitStatus::Success);
    }
    let signer = prepared.signer().await?;
    let subject = sign::Subject {
        repository: reference.name(),
        digest,
        media_type: found.media_type,
        size: found.size,
        annotations: sign::provenance::from_environment(env, None),
    };
    let signed = sign::sign(&client, &reference.repository, &subject, signer, args.format).await?;
    super::print_json_or(args.output, &signed, || {
        let mut s = String::new();
        if let Some(l) = &signed.legacy {
            s.push_str(&format!("legacy signature: {l}\n"));
        }
        if let Some(b) = &signed.bundle {
            s.push_str(&format!("bundle referrer: {}@{b}\n", reference.name()));
        }
        if !signed.already_signed.is_empty() {
            s.push_str(&format!(
                "already signed with this key ({}): nothing added\n",
                signed.already_signed.join(", ")
            ));
        }
        s
    });
    Ok(ExitStatus::Success)
}
