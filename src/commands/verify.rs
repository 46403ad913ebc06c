//! `publish verify HOST/REPO[:TAG|@DIGEST]`: check an image's cosign signatures with a
//! public key, or keylessly against an identity, an issuer and trusted Fulcio roots.

use std::path::{Path, PathBuf};

use super::push::RegistryArgs;
use super::sign::parse_reference;
use super::{ExitStatus, UsageError};
use crate::credentials::Env;
use crate::sign::{self, keyless};

#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub reference: String,
    /// The public key (cosign.pub), or keyless with identity and issuer.
    pub key: Option<PathBuf>,
    pub identity: Option<String>,
    pub issuer: Option<String>,
    /// Trusted Fulcio roots (PEM), for keyless verification.
    pub roots: Option<PathBuf>,
    /// Which format must verify (`both`: either).
    pub format: sign::Format,
    pub registry: RegistryArgs,
    pub output: super::Output,
}

/// DER certificates from a PEM file.
fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
        let body = block.split("-----END CERTIFICATE-----").next().unwrap_or_default();
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        out.push(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .map_err(|_| "a certificate in the roots file is not base64".to_string())?,
        );
    }
    if out.is_empty() { Err("no PEM certificate in the roots file".into()) } else { Ok(out) }
}

pub async fn verify(args: VerifyArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    super::load::configure(crate::http::Settings::default(), env);
    let reference = parse_reference(&args.reference)?;
    let verifier = match (&args.key, &args.identity, &args.issuer) {
        (Some(key), None, None) => {
            sign::Verifier::Key(sign::keys::load_public(key).map_err(|e| UsageError(e.to_string()))?)
        }
        (None, Some(identity), Some(issuer)) => {
            let roots_path = args.roots.as_ref().ok_or_else(|| {
                UsageError(
                    "keyless verification needs --certificate-roots FILE: the Fulcio root certificates to trust (PEM)"
                        .into(),
                )
            })?;
            let pem = crate::http::read_file_limited(Path::new(roots_path), crate::http::MAX_CA_FILE)
                .map_err(|e| UsageError(e.to_string()))?;
            let roots = parse_pem_certificates(&pem).map_err(UsageError)?;
            sign::Verifier::Keyless(keyless::Policy { identity: identity.clone(), issuer: issuer.clone(), roots })
        }
        _ => {
            return Err(UsageError(
                "verify with --key cosign.pub, or with --certificate-identity and --certificate-oidc-issuer (keyless)"
                    .into(),
            )
            .into());
        }
    };
    let client = args.registry.client(&reference, env)?;
    client.authenticate().await?;
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        None => {
            let tag = reference.tag.clone().unwrap_or_else(|| crate::reference::DEFAULT_TAG.into());
            client.resolve(&tag).await?.ok_or_else(|| anyhow::anyhow!("{}: no image {reference}", reference.host))?.0
        }
    };
    let verified = sign::verify(&client, &reference.repository, &digest, &verifier).await?;
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
        for i in &verified.invalid {
            s.push_str(&format!("  invalid: {i}\n"));
        }
        s.push_str(if ok { "verified\n" } else { "NOT verified\n" });
        s
    });
    Ok(if ok { ExitStatus::Success } else { ExitStatus::Failure })
}
