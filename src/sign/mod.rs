//! Signing in cosign's formats, with a cosign key pair or keylessly: the legacy
//! `sha256-<hex>.sig` tag (simple-signing payload, signature in the layer's annotation; its
//! Rekor entry a `hashedrekord`) and cosign v3's Sigstore bundle v0.3 (a DSSE envelope around
//! an in-toto statement; its Rekor entry a `dsse` with inclusion proof) attached as an OCI 1.1
//! referrer through the `sha256-<hex>` fallback tag index, since GHCR, Docker Hub and
//! distribution have no referrers API. Signatures already there are kept, and a tag holding
//! something else stops signing rather than being overwritten; the same signature is not added
//! twice. Keys and crypto come from the `sigstore` crate; the OCI attachment, the Rekor entries
//! and verification (`verify.rs`, `tlog.rs`, `trust.rs`) are ours.

pub mod attest;
pub mod keyless;
pub mod keys;
mod merge;
mod prepared;
pub mod provenance;
pub mod rekor;
pub mod tlog;
pub mod trust;
mod verify;
mod verify_attest;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::{Value, json};
use sigstore::crypto::{CosignVerificationKey, Signature};

use crate::image::{OCI_INDEX, OCI_MANIFEST};
use crate::registry::{Client, RegistryError};
use crate::types::Digest;
pub use keys::KeySigner;
pub use prepared::{PrepareError, PreparedSigner};
pub use verify::{SignatureReport, Verified, Verifier, VerifyOptions, verify};
pub use verify_attest::{AttestationReport, Attestations, verify_attestations};

/// Who signs: a cosign key pair (logged in Rekor when `signing.tlog` is on), or a keyless
/// session (Fulcio certificate; always logged).
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Key(&'a KeySigner, Option<&'a rekor::Rekor>),
    Keyless(&'a keyless::Session),
}

impl Signer<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Signer::Key(k, _) => k.sign(msg),
            Signer::Keyless(s) => s.sign(msg),
        }
    }

    fn rekor(&self) -> Option<&rekor::Rekor> {
        match self {
            Signer::Key(_, r) => *r,
            Signer::Keyless(s) => Some(&s.rekor),
        }
    }

    /// What Rekor records as the verifier: the public key or the certificate (PEM).
    fn verifier_pem(&self) -> String {
        match self {
            Signer::Key(k, _) => k.public_pem(),
            Signer::Keyless(s) => s.leaf_pem().to_string(),
        }
    }

    /// Whether an existing signature is this signer's: made with the same key, or (keyless,
    /// where certificates are short-lived) by a certificate of the same identity from the same
    /// Fulcio CA, whose key made the signature.
    /// `cert` comes with the intermediates stored beside it (`chain`), if any.
    fn made(&self, signature_b64: &str, msg: &[u8], (cert, chain): (Option<&str>, &[String])) -> bool {
        match self {
            Signer::Key(k, _) => k.verification_key().is_ok_and(|key| verifies(&key, signature_b64, msg)),
            Signer::Keyless(s) => cert.is_some_and(|c| s.made((c, chain), signature_b64, msg)),
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
    #[error(
        "the signature tag {tag} exists but cannot be read ({why}); signing stopped so that nothing already there is overwritten"
    )]
    Unparsable { tag: String, why: String },
    #[error(
        "other signers kept rewriting {tag} at the same time: after {attempts} reads and writes this signature is not settled in it{last}; sign again"
    )]
    Contended { tag: String, attempts: u32, last: String },
}

/// The image being signed, as pushed.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `host/path`, cosign's `docker-reference`.
    pub repository: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Where it came from (`provenance`): written into each signature.
    pub annotations: provenance::Annotations,
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
/// `annotations` go in `optional` (null without any), as `cosign sign -a` writes them.
pub fn simple_signing_payload(repository: &str, digest: &Digest, annotations: &provenance::Annotations) -> Vec<u8> {
    let optional = if annotations.is_empty() { Value::Null } else { json!(annotations) };
    let v = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest.as_str()},
            "type": "cosign container image signature"
        },
        "optional": optional
    });
    v.to_string().into_bytes()
}

/// The in-toto statement cosign v3 signs; `annotations` in its predicate (empty without any).
pub fn statement(repository: &str, digest: &Digest, annotations: &provenance::Annotations) -> Vec<u8> {
    let predicate = if annotations.is_empty() { json!({}) } else { json!({"annotations": annotations}) };
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": repository, "digest": {"sha256": digest.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate
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

/// The manifest at `reference`, if any. One that is there but does not parse is an error:
/// signing over it would lose whatever it holds (other signers' signatures).
async fn manifest_json(client: &Client, repository: &str, reference: &str) -> Result<Option<Value>, SignError> {
    let Some(bytes) = client.manifest(repository, reference).await? else { return Ok(None) };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Ok(Some(v)),
        _ => Err(SignError::Unparsable { tag: reference.to_string(), why: "it is not a JSON manifest".into() }),
    }
}

/// The `field` array (`layers` of a `.sig` manifest, `manifests` of a referrer index) of the
/// manifest at `tag`, refusing one whose field is not an array of objects.
fn descriptors(m: &Value, tag: &str, field: &str) -> Result<Vec<Value>, SignError> {
    // A `.sig` tag holds an image manifest, a fallback tag an index: anything else there is
    // someone else's, and writing ours would replace it.
    let kinds: &[&str] = if field == "layers" {
        &[crate::image::OCI_MANIFEST, crate::image::oci::DOCKER_MANIFEST]
    } else {
        &[crate::image::OCI_INDEX, crate::image::oci::DOCKER_LIST]
    };
    let media_type = m.get("mediaType").and_then(Value::as_str);
    if media_type.is_some_and(|t| !kinds.contains(&t)) || (media_type.is_none() && m.get(field).is_none()) {
        return Err(SignError::Unparsable {
            tag: tag.to_string(),
            why: format!("it holds {}, not {}", media_type.unwrap_or("a manifest without a media type"), kinds[0]),
        });
    }
    match m.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items.clone()),
        Some(_) => Err(SignError::Unparsable {
            tag: tag.to_string(),
            why: format!("its {field} is not a list of descriptors"),
        }),
    }
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
    if format.legacy() {
        if sign_legacy(client, path, subject, signer).await? {
            out.already_signed.push("legacy");
        }
        out.legacy = Some(format!("{}:{}", subject.repository, legacy_tag(&subject.digest)));
    }
    if format.bundle() {
        let (digest, already) = sign_bundle(client, path, subject, signer).await?;
        if already {
            out.already_signed.push("bundle");
        }
        out.bundle = Some(digest);
    }
    Ok(out)
}

/// Adds a signature layer to the `.sig` manifest; `true` when this signer's was already there.
async fn sign_legacy(client: &Client, path: &str, subject: &Subject, signer: Signer<'_>) -> Result<bool, SignError> {
    let payload = simple_signing_payload(&subject.repository, &subject.digest, &subject.annotations);
    let payload_digest = Digest::of(&payload);
    let tag = legacy_tag(&subject.digest);
    let layers = match merge::shared(client, path, &tag).await? {
        Some(m) => descriptors(&m, &tag, "layers")?,
        None => Vec::new(),
    };
    if signed_before(client, &layers, (&payload, &payload_digest), signer).await? {
        return Ok(true);
    }
    client.put_blob(&payload).await?;
    let raw = signer.sign(&payload)?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(SIGNATURE_ANNOTATION.into(), Value::String(B64.encode(&raw)));
    if let Signer::Keyless(session) = signer {
        annotations.insert(CERT_ANNOTATION.into(), Value::String(session.leaf_pem().to_string()));
        annotations.insert(CHAIN_ANNOTATION.into(), Value::String(session.chain[1..].join("\n")));
    }
    if let Some(rekor) = signer.rekor() {
        let entry = rekor.hashedrekord(&payload, &raw, &signer.verifier_pem()).await?;
        annotations.insert(REKOR_ANNOTATION.into(), Value::String(entry.annotation()));
    }
    let ours = json!({
        "mediaType": SIMPLESIGNING,
        "size": payload.len(),
        "digest": payload_digest.as_str(),
        "annotations": annotations
    });
    merge::add(client, path, &tag, merge::List::Signatures, ours).await?;
    Ok(false)
}

/// Whether one of `layers` is this signer's signature of the same image: the same payload, or
/// one that differs only in its annotations (another run of the same image: a re-run adds no
/// second signature, in either format).
async fn signed_before(
    client: &Client,
    layers: &[Value],
    (payload, payload_digest): (&[u8], &Digest),
    signer: Signer<'_>,
) -> Result<bool, SignError> {
    let critical = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok().and_then(|v| v.get("critical").cloned());
    let ours = critical(payload);
    for l in layers {
        let Some(sig) = annotation(l, SIGNATURE_ANNOTATION) else { continue };
        let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else { continue };
        let theirs = if &d == payload_digest {
            payload.to_vec()
        } else {
            // Another signer's blob that cannot be read is not ours: skipped, never fatal.
            match client.get_blob(&d, MAX_SIGNATURE_BLOB).await {
                Ok(Some(b)) if critical(&b) == ours => b,
                _ => continue,
            }
        };
        let chain = annotation(l, CHAIN_ANNOTATION).map(split_pem).unwrap_or_default();
        if signer.made(sig, &theirs, (annotation(l, CERT_ANNOTATION), &chain)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The bundle referrer of `subject` by this signer, written (with the fallback index listing
/// it) unless it is already there; `true` when it was.
async fn sign_bundle(
    client: &Client,
    path: &str,
    subject: &Subject,
    signer: Signer<'_>,
) -> Result<(Digest, bool), SignError> {
    let statement = statement(&subject.repository, &subject.digest, &subject.annotations);
    let tag = fallback_tag(&subject.digest);
    let entries = match merge::shared(client, path, &tag).await? {
        Some(index) => descriptors(&index, &tag, "manifests")?,
        None => Vec::new(),
    };
    let mut found = None;
    for e in entries.iter().filter(|e| is_signature_bundle(e)) {
        let Some(digest) = e.get("digest").and_then(Value::as_str) else { continue };
        if let Some(bundle) = referrer_bundle(client, path, digest).await?
            && bundled_by(&bundle, signer, &subject.digest)
        {
            found = digest.parse::<Digest>().ok();
            break;
        }
    }
    if let Some(d) = found {
        return Ok((d, true));
    }
    let (referrer_digest, descriptor) = write_referrer(client, subject, signer, (&statement, PREDICATE_TYPE)).await?;
    merge::add(client, path, &tag, merge::List::Referrers, descriptor).await?;
    Ok((referrer_digest, false))
}

/// Signs the in-toto statement (of `predicate_type`) as a DSSE envelope (logged in Rekor when
/// the signer logs), puts the bundle and its referrer manifest, and returns the referrer's
/// digest and its descriptor for the fallback index.
async fn write_referrer(
    client: &Client,
    subject: &Subject,
    signer: Signer<'_>,
    (statement, predicate_type): (&[u8], &str),
) -> Result<(Digest, Value), SignError> {
    let signed_bytes = pae(IN_TOTO, statement);
    let sig = signer.sign(&signed_bytes)?;
    let envelope = json!({
        "payload": B64.encode(statement),
        "payloadType": IN_TOTO,
        "signatures": [{"sig": B64.encode(sig), "keyid": ""}]
    });
    let mut tlog_entries = Vec::new();
    if let Some(rekor) = signer.rekor() {
        // A DSSE bundle's entry is a `dsse` entry: what sigstore-go (cosign) checks.
        let entry = rekor.dsse(&envelope.to_string(), &signer.verifier_pem()).await?;
        tlog_entries.push(entry.bundle_entry());
    }
    let material = match signer {
        Signer::Key(k, _) => json!({"publicKey": {"hint": k.hint()}, "tlogEntries": tlog_entries}),
        Signer::Keyless(session) => json!({
            "certificate": {"rawBytes": B64.encode(session.leaf_der()?)},
            "tlogEntries": tlog_entries
        }),
    };
    let bundle = json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": material,
        "dsseEnvelope": envelope
    })
    .to_string()
    .into_bytes();
    let bundle_digest = client.put_blob(&bundle).await?;
    let empty_digest = client.put_blob(b"{}").await?;
    let annotations = json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": predicate_type
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
    let referrer_digest = client.put_manifest(&Digest::of(&referrer).to_string(), OCI_MANIFEST, &referrer).await?;
    let descriptor = json!({
        "mediaType": OCI_MANIFEST,
        "digest": referrer_digest.as_str(),
        "size": referrer.len(),
        "artifactType": BUNDLE_V03,
        "annotations": annotations
    });
    Ok((referrer_digest, descriptor))
}

/// Whether a fallback index entry may be a signature's bundle: a bundle, not annotated as an
/// attestation of another predicate type (those are read only by `--attestation`).
fn is_signature_bundle(entry: &Value) -> bool {
    let annotated = entry.pointer("/annotations/dev.sigstore.bundle.predicateType").and_then(Value::as_str);
    entry.get("artifactType").and_then(Value::as_str) == Some(BUNDLE_V03)
        && annotated.is_none_or(|t| t == PREDICATE_TYPE)
}

/// The bundle a referrer manifest carries (`None` when it is missing or unreadable: it is
/// reported, and kept as it is).
async fn referrer_bundle(client: &Client, path: &str, digest: &str) -> Result<Option<Value>, SignError> {
    let Some(m) = client.manifest(path, digest).await?.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
        return Ok(None);
    };
    let Some(layer) = m.get("layers").and_then(Value::as_array).and_then(|l| l.first()) else { return Ok(None) };
    let Some(d) = layer.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
        return Ok(None);
    };
    // A bundle carries its envelope: an SBOM's is megabytes.
    Ok(client.get_blob(&d, attest::MAX_ENVELOPE).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Whether a bundle is this signer's signature over a statement naming `digest`.
fn bundled_by(bundle: &Value, signer: Signer<'_>, digest: &Digest) -> bool {
    let Ok(b) = verify::BundleParts::parse(bundle) else { return false };
    let cert = b.cert_der.as_deref().map(der_to_pem);
    b.names(digest) && signer.made(&B64.encode(&b.envelope.signature), &b.envelope.signed(), (cert.as_deref(), &[]))
}
