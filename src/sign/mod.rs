//! Signing in cosign's formats, with a cosign key pair: the legacy `sha256-<hex>.sig` tag
//! (simple-signing payload, signature in the layer's annotation) and cosign v3's Sigstore
//! bundle v0.3 (a DSSE envelope around an in-toto statement) attached as an OCI 1.1 referrer
//! through the `sha256-<hex>` fallback tag index, since GHCR, Docker Hub and distribution
//! have no referrers API. Signatures already there are kept; the same signature is not added
//! twice. Keys and crypto come from the `sigstore` crate; the OCI attachment is ours.

pub mod keys;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::{Value, json};
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::image::{OCI_INDEX, OCI_MANIFEST};
use crate::registry::{Client, RegistryError};
use crate::types::Digest;
pub use keys::KeySigner;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const MAX_SIGNATURE_BLOB: u64 = 1024 * 1024;

/// Which formats to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The `sha256-<hex>.sig` tag cosign has written since v1.
    Legacy,
    /// cosign v3's Sigstore bundle, attached as a referrer.
    Bundle,
    #[default]
    Both,
}

impl Format {
    fn legacy(self) -> bool {
        matches!(self, Format::Legacy | Format::Both)
    }
    fn bundle(self) -> bool {
        matches!(self, Format::Bundle | Format::Both)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Invalid(String),
}

/// The image being signed, as pushed.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `host/path`, cosign's `docker-reference`.
    pub repository: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What signing wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Signed {
    /// `repo:sha256-<hex>.sig` when the legacy format was written (or already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<String>,
    /// The referrer manifest's digest when the bundle was written (or already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Digest>,
    /// Formats whose identical signature was already there.
    pub already_signed: Vec<&'static str>,
}

/// cosign's simple-signing payload, byte for byte as cosign writes it.
pub fn simple_signing_payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest.as_str()},
            "type": "cosign container image signature"
        },
        "optional": null
    });
    v.to_string().into_bytes()
}

/// The in-toto statement cosign v3 signs.
pub fn statement(repository: &str, digest: &Digest) -> Vec<u8> {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": repository, "digest": {"sha256": digest.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {}
    })
    .to_string()
    .into_bytes()
}

/// DSSE's pre-authentication encoding: what the envelope's signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

fn legacy_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

fn fallback_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

fn verifies(key: &CosignVerificationKey, signature_b64: &str, msg: &[u8]) -> bool {
    key.verify_signature(Signature::Base64Encoded(signature_b64.as_bytes()), msg).is_ok()
}

async fn manifest_json(client: &Client, repository: &str, reference: &str) -> Result<Option<Value>, SignError> {
    Ok(client.manifest(repository, reference).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Signs `subject` in the requested formats, keeping signatures already there and not adding
/// one that is already there for the same key.
pub async fn sign(
    client: &Client,
    path: &str,
    subject: &Subject,
    signer: &KeySigner,
    format: Format,
) -> Result<Signed, SignError> {
    let mut out = Signed::default();
    let verify_key = signer.verification_key()?;
    if format.legacy() {
        let payload = simple_signing_payload(&subject.repository, &subject.digest);
        let payload_digest = Digest::of(&payload);
        let tag = legacy_tag(&subject.digest);
        let existing = manifest_json(client, path, &tag).await?;
        let mut layers: Vec<Value> =
            existing.as_ref().and_then(|m| m.get("layers")).and_then(Value::as_array).cloned().unwrap_or_default();
        let already = layers.iter().any(|l| {
            l.get("digest").and_then(Value::as_str) == Some(payload_digest.as_str())
                && l.pointer(&format!("/annotations/{}", SIGNATURE_ANNOTATION.replace('/', "~1")))
                    .and_then(Value::as_str)
                    .is_some_and(|sig| verifies(&verify_key, sig, &payload))
        });
        if already {
            out.already_signed.push("legacy");
        } else {
            client.put_blob(&payload).await?;
            let signature = B64.encode(signer.sign(&payload)?);
            layers.push(json!({
                "mediaType": SIMPLESIGNING,
                "size": payload.len(),
                "digest": payload_digest.as_str(),
                "annotations": {SIGNATURE_ANNOTATION: signature}
            }));
            let diff_ids: Vec<Value> = layers.iter().filter_map(|l| l.get("digest").cloned()).collect();
            let config = json!({
                "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
                "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
            })
            .to_string()
            .into_bytes();
            let config_digest = client.put_blob(&config).await?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest.as_str()},
                "layers": layers
            });
            client.put_manifest(&tag, OCI_MANIFEST, manifest.to_string().as_bytes()).await?;
        }
        out.legacy = Some(format!("{}:{tag}", subject.repository));
    }
    if format.bundle() {
        let statement = statement(&subject.repository, &subject.digest);
        let tag = fallback_tag(&subject.digest);
        let mut index = manifest_json(client, path, &tag)
            .await?
            .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}));
        let entries: Vec<Value> = index.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut found = None;
        for e in entries.iter().filter(|e| e.get("artifactType").and_then(Value::as_str) == Some(BUNDLE_V03)) {
            let Some(digest) = e.get("digest").and_then(Value::as_str) else { continue };
            if let Some(bundle) = referrer_bundle(client, path, digest).await?
                && bundle_verifies(&bundle, &verify_key, &subject.digest).is_ok()
            {
                found = digest.parse::<Digest>().ok();
                break;
            }
        }
        match found {
            Some(d) => {
                out.already_signed.push("bundle");
                out.bundle = Some(d);
            }
            None => {
                let sig = signer.sign(&pae(IN_TOTO, &statement))?;
                let bundle = json!({
                    "mediaType": BUNDLE_V03,
                    "verificationMaterial": {"publicKey": {"hint": signer.hint()}, "tlogEntries": []},
                    "dsseEnvelope": {
                        "payload": B64.encode(&statement),
                        "payloadType": IN_TOTO,
                        "signatures": [{"sig": B64.encode(sig), "keyid": ""}]
                    }
                })
                .to_string()
                .into_bytes();
                let bundle_digest = client.put_blob(&bundle).await?;
                let empty_digest = client.put_blob(b"{}").await?;
                let annotations = json!({
                    "dev.sigstore.bundle.content": "dsse-envelope",
                    "dev.sigstore.bundle.predicateType": PREDICATE_TYPE
                });
                let referrer = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": BUNDLE_V03,
                    "config": {"mediaType": EMPTY, "digest": empty_digest.as_str(), "size": 2},
                    "layers": [{"mediaType": BUNDLE_V03, "digest": bundle_digest.as_str(), "size": bundle.len()}],
                    "subject": {"mediaType": subject.media_type, "digest": subject.digest.as_str(), "size": subject.size},
                    "annotations": annotations
                })
                .to_string()
                .into_bytes();
                let referrer_digest =
                    client.put_manifest(&Digest::of(&referrer).to_string(), OCI_MANIFEST, &referrer).await?;
                let mut manifests = entries;
                manifests.push(json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": referrer_digest.as_str(),
                    "size": referrer.len(),
                    "artifactType": BUNDLE_V03,
                    "annotations": annotations
                }));
                index["manifests"] = Value::Array(manifests);
                client.put_manifest(&tag, OCI_INDEX, index.to_string().as_bytes()).await?;
                out.bundle = Some(referrer_digest);
            }
        }
    }
    Ok(out)
}

async fn referrer_bundle(client: &Client, path: &str, digest: &str) -> Result<Option<Value>, SignError> {
    let Some(m) = manifest_json(client, path, digest).await? else { return Ok(None) };
    let Some(layer) = m.get("layers").and_then(Value::as_array).and_then(|l| l.first()) else { return Ok(None) };
    let Some(d) = layer.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
        return Ok(None);
    };
    Ok(client.get_blob(&d, MAX_SIGNATURE_BLOB).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Checks a bundle's DSSE signature with `key` and that its statement names `digest`.
pub fn bundle_verifies(bundle: &Value, key: &CosignVerificationKey, digest: &Digest) -> Result<(), String> {
    let env = bundle.get("dsseEnvelope").ok_or("the bundle has no DSSE envelope")?;
    let payload = env.get("payload").and_then(Value::as_str).ok_or("the envelope has no payload")?;
    let payload = B64.decode(payload).map_err(|e| format!("the payload is not base64: {e}"))?;
    let payload_type = env.get("payloadType").and_then(Value::as_str).unwrap_or_default();
    let ok = env
        .get("signatures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("sig").and_then(Value::as_str))
        .any(|sig| verifies(key, sig, &pae(payload_type, &payload)));
    if !ok {
        return Err("no signature in the bundle verifies with the key".into());
    }
    let statement: Value = serde_json::from_slice(&payload).map_err(|e| format!("the statement is not JSON: {e}"))?;
    if statement.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE) {
        return Err("the statement is not a cosign signature".into());
    }
    let names_digest = statement
        .get("subject")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| s.pointer("/digest/sha256").and_then(Value::as_str) == Some(digest.hex()));
    if names_digest { Ok(()) } else { Err(format!("the statement does not name {digest}")) }
}

/// What `publish verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verified {
    pub digest: Option<Digest>,
    /// Valid legacy signatures (payload digests).
    pub legacy: Vec<Digest>,
    /// Valid bundles (referrer manifest digests).
    pub bundle: Vec<Digest>,
    /// Signatures that were there but did not verify, and why.
    pub invalid: Vec<String>,
}

/// Finds and checks every signature of `digest` in both formats with `key`.
pub async fn verify(
    client: &Client,
    path: &str,
    digest: &Digest,
    key: &CosignVerificationKey,
) -> Result<Verified, SignError> {
    let mut out = Verified { digest: Some(digest.clone()), ..Default::default() };
    if let Some(m) = manifest_json(client, path, &legacy_tag(digest)).await? {
        for l in m.get("layers").and_then(Value::as_array).into_iter().flatten() {
            let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
                continue;
            };
            let sig =
                l.pointer(&format!("/annotations/{}", SIGNATURE_ANNOTATION.replace('/', "~1"))).and_then(Value::as_str);
            let Some(payload) = client.get_blob(&d, MAX_SIGNATURE_BLOB).await? else {
                out.invalid.push(format!("legacy {d}: the payload blob is missing"));
                continue;
            };
            let claims: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let named = claims.pointer("/critical/image/docker-manifest-digest").and_then(Value::as_str);
            match (sig, named) {
                (Some(sig), Some(n)) if n == digest.as_str() && verifies(key, sig, &payload) => out.legacy.push(d),
                (_, Some(n)) if n != digest.as_str() => {
                    out.invalid.push(format!("legacy {d}: signs {n}, not {digest}"))
                }
                _ => out.invalid.push(format!("legacy {d}: the signature does not verify with the key")),
            }
        }
    }
    if let Some(index) = manifest_json(client, path, &fallback_tag(digest)).await? {
        for e in index.get("manifests").and_then(Value::as_array).into_iter().flatten() {
            if e.get("artifactType").and_then(Value::as_str) != Some(BUNDLE_V03) {
                continue;
            }
            let Some(d) = e.get("digest").and_then(Value::as_str) else { continue };
            match referrer_bundle(client, path, d).await? {
                Some(bundle) => match bundle_verifies(&bundle, key, digest) {
                    Ok(()) => out.bundle.extend(d.parse::<Digest>().ok()),
                    Err(why) => out.invalid.push(format!("bundle {d}: {why}")),
                },
                None => out.invalid.push(format!("bundle {d}: the referrer or its bundle is missing")),
            }
        }
    }
    Ok(out)
}
