//! Signing in cosign's formats, with a cosign key pair: the legacy `sha256-<hex>.sig` tag
//! (simple-signing payload, signature in the layer's annotation) and cosign v3's Sigstore
//! bundle v0.3 (a DSSE envelope around an in-toto statement) attached as an OCI 1.1 referrer
//! through the `sha256-<hex>` fallback tag index, since GHCR, Docker Hub and distribution
//! have no referrers API. Signatures already there are kept; the same signature is not added
//! twice. Keys and crypto come from the `sigstore` crate; the OCI attachment is ours.

pub mod keyless;
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

/// Who signs: a cosign key pair, or a keyless session (Fulcio certificate, Rekor entries).
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Key(&'a KeySigner),
    Keyless(&'a keyless::Session),
}

impl Signer<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Signer::Key(k) => k.sign(msg),
            Signer::Keyless(s) => s.sign(msg),
        }
    }

    fn verifier(&self) -> Result<Verifier, SignError> {
        match self {
            Signer::Key(k) => Ok(Verifier::Key(k.verification_key()?)),
            Signer::Keyless(s) => Ok(Verifier::Identity(s.identity.clone())),
        }
    }
}

/// What a signature must verify against.
pub enum Verifier {
    Key(CosignVerificationKey),
    /// Keyless: a certificate for this identity and issuer, chaining to trusted roots.
    Keyless(keyless::Policy),
    /// While signing keylessly: a signature by the same identity counts as already there
    /// (certificates are short-lived, so a key cannot be compared).
    Identity(String),
}

impl Verifier {
    /// Checks a signature over `msg`, given the certificate material that came with it.
    fn check(
        &self,
        signature_b64: &str,
        msg: &[u8],
        cert: Option<&str>,
        chain: &[String],
        time: i64,
    ) -> Result<(), Rejected> {
        match self {
            Verifier::Key(k) => {
                if verifies(k, signature_b64, msg) {
                    Ok(())
                } else {
                    Err("the signature does not verify with the key".into())
                }
            }
            Verifier::Keyless(policy) => {
                let cert = cert.ok_or("no certificate comes with the signature")?;
                let key = keyless::check_certificate(cert, chain, policy, time)?;
                if verifies(&key, signature_b64, msg) {
                    Ok(())
                } else {
                    Err("the signature does not verify with the certificate's key".into())
                }
            }
            Verifier::Identity(id) => {
                let cert = cert.ok_or("no certificate")?;
                match keyless::identity(cert) {
                    Ok((who, _)) if &who == id => Ok(()),
                    _ => Err("another identity".into()),
                }
            }
        }
    }
}

const CERT_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
const REKOR_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

fn annotation<'a>(layer: &'a Value, key: &str) -> Option<&'a str> {
    layer.get("annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// Splits concatenated PEM certificates.
fn split_pem(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----"))
        .collect()
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
use crate::image::oci::OCI_EMPTY_CONFIG as EMPTY;
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

/// Why a signature was not accepted: shown per signature by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl From<String> for Rejected {
    fn from(s: String) -> Self {
        Rejected(s)
    }
}

impl From<&str> for Rejected {
    fn from(s: &str) -> Self {
        Rejected(s.to_string())
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

pub fn legacy_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

pub fn fallback_tag(digest: &Digest) -> String {
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
    signer: Signer<'_>,
    format: Format,
) -> Result<Signed, SignError> {
    let mut out = Signed::default();
    let verifier = signer.verifier()?;
    if format.legacy() {
        let payload = simple_signing_payload(&subject.repository, &subject.digest);
        let payload_digest = Digest::of(&payload);
        let tag = legacy_tag(&subject.digest);
        let existing = manifest_json(client, path, &tag).await?;
        let mut layers: Vec<Value> =
            existing.as_ref().and_then(|m| m.get("layers")).and_then(Value::as_array).cloned().unwrap_or_default();
        let already = layers.iter().any(|l| {
            l.get("digest").and_then(Value::as_str) == Some(payload_digest.as_str())
                && annotation(l, SIGNATURE_ANNOTATION).is_some_and(|sig| {
                    verifier.check(sig, &payload, annotation(l, CERT_ANNOTATION), &[], i64::MAX / 2).is_ok()
                })
        });
        if already {
            out.already_signed.push("legacy");
        } else {
            client.put_blob(&payload).await?;
            let raw = signer.sign(&payload)?;
            let mut annotations = serde_json::Map::new();
            annotations.insert(SIGNATURE_ANNOTATION.into(), Value::String(B64.encode(&raw)));
            if let Signer::Keyless(session) = signer {
                let entry = session.log(&payload, &raw).await?;
                annotations.insert(CERT_ANNOTATION.into(), Value::String(session.leaf_pem().to_string()));
                annotations.insert(CHAIN_ANNOTATION.into(), Value::String(session.chain[1..].join("\n")));
                annotations.insert(REKOR_ANNOTATION.into(), Value::String(keyless::rekor_bundle_annotation(&entry)));
            }
            layers.push(json!({
                "mediaType": SIMPLESIGNING,
                "size": payload.len(),
                "digest": payload_digest.as_str(),
                "annotations": annotations
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
                && bundle_verifies(&bundle, &verifier, &subject.digest).is_ok()
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
                let signed_bytes = pae(IN_TOTO, &statement);
                let sig = signer.sign(&signed_bytes)?;
                let material = match signer {
                    Signer::Key(k) => json!({"publicKey": {"hint": k.hint()}, "tlogEntries": []}),
                    Signer::Keyless(session) => {
                        let entry = session.log(&signed_bytes, &sig).await?;
                        json!({
                            "certificate": {"rawBytes": B64.encode(session.leaf_der()?)},
                            "tlogEntries": [keyless::tlog_entry(&entry)]
                        })
                    }
                };
                let bundle = json!({
                    "mediaType": BUNDLE_V03,
                    "verificationMaterial": material,
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
pub fn bundle_verifies(bundle: &Value, verifier: &Verifier, digest: &Digest) -> Result<(), Rejected> {
    let env = bundle.get("dsseEnvelope").ok_or("the bundle has no DSSE envelope")?;
    let payload = env.get("payload").and_then(Value::as_str).ok_or("the envelope has no payload")?;
    let payload = B64.decode(payload).map_err(|e| format!("the payload is not base64: {e}"))?;
    let payload_type = env.get("payloadType").and_then(Value::as_str).unwrap_or_default();
    let material = bundle.get("verificationMaterial");
    let cert = material
        .and_then(|m| m.pointer("/certificate/rawBytes"))
        .and_then(Value::as_str)
        .and_then(|b| B64.decode(b).ok())
        .map(|der| der_to_pem(&der));
    let time = material
        .and_then(|m| m.pointer("/tlogEntries/0/integratedTime"))
        .and_then(|t| t.as_str().and_then(|s| s.parse().ok()).or_else(|| t.as_i64()))
        .unwrap_or(0);
    let mut last = Rejected::from("the bundle has no signature");
    let signatures = env.get("signatures").and_then(Value::as_array).into_iter().flatten();
    let ok = signatures.filter_map(|s| s.get("sig").and_then(Value::as_str)).any(|sig| {
        match verifier.check(sig, &pae(payload_type, &payload), cert.as_deref(), &[], time) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if !ok {
        return Err(last);
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
    if names_digest { Ok(()) } else { Err(format!("the statement does not name {digest}").into()) }
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
pub async fn verify(client: &Client, path: &str, digest: &Digest, verifier: &Verifier) -> Result<Verified, SignError> {
    let mut out = Verified { digest: Some(digest.clone()), ..Default::default() };
    if let Some(m) = manifest_json(client, path, &legacy_tag(digest)).await? {
        for l in m.get("layers").and_then(Value::as_array).into_iter().flatten() {
            let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
                continue;
            };
            let sig = annotation(l, SIGNATURE_ANNOTATION);
            let chain = annotation(l, CHAIN_ANNOTATION).map(split_pem).unwrap_or_default();
            let time = annotation(l, REKOR_ANNOTATION)
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|b| b.pointer("/Payload/integratedTime").and_then(Value::as_i64))
                .unwrap_or(0);
            let Some(payload) = client.get_blob(&d, MAX_SIGNATURE_BLOB).await? else {
                out.invalid.push(format!("legacy {d}: the payload blob is missing"));
                continue;
            };
            let claims: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let named = claims.pointer("/critical/image/docker-manifest-digest").and_then(Value::as_str);
            match (sig, named) {
                (_, Some(n)) if n != digest.as_str() => {
                    out.invalid.push(format!("legacy {d}: signs {n}, not {digest}"))
                }
                (Some(sig), Some(_)) => {
                    match verifier.check(sig, &payload, annotation(l, CERT_ANNOTATION), &chain, time) {
                        Ok(()) => out.legacy.push(d),
                        Err(why) => out.invalid.push(format!("legacy {d}: {why}")),
                    }
                }
                _ => out.invalid.push(format!("legacy {d}: no signature or payload claim")),
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
                Some(bundle) => match bundle_verifies(&bundle, verifier, digest) {
                    Ok(()) => out.bundle.extend(d.parse::<Digest>().ok()),
                    Err(why) => out.invalid.push(format!("bundle {d}: {why}")),
                },
                None => out.invalid.push(format!("bundle {d}: the referrer or its bundle is missing")),
            }
        }
    }
    Ok(out)
}
