//! Attestations written as cosign writes them, with the signer of the signatures: a DSSE
//! envelope around an in-toto statement, as a layer of the legacy `sha256-<hex>.att` manifest
//! (media type `application/vnd.dsse.envelope.v1+json`, the predicate type and an empty
//! signature annotated, the certificate, chain and Rekor entry as for `.sig`), and as a
//! Sigstore bundle v0.3 referrer listed in the `sha256-<hex>` fallback index, both logged as
//! `dsse` entries (`cosign attest`'s default). Attestations already there, by anyone, are kept
//! (`merge`); a signer adds one attestation of a predicate type per image, not one per run.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::verify::{BundleParts, Envelope};
use super::{
    BUNDLE_V03, CERT_ANNOTATION, CHAIN_ANNOTATION, Format, IN_TOTO, REKOR_ANNOTATION, SIGNATURE_ANNOTATION, SignError,
    Signer, Subject, annotation, descriptors, fallback_tag, merge, pae, split_pem,
};
use crate::attest::{Attestation, Written};
use crate::registry::Client;
use crate::types::Digest;

pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const PREDICATE_ANNOTATION: &str = "predicateType";
/// An envelope (an SBOM's, base64 in it) read back is at most this big.
pub const MAX_ENVELOPE: u64 = 64 * 1024 * 1024;

pub fn attestation_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// A DSSE envelope of `statement` signed by `signer`.
fn envelope(statement: &[u8], signer: Signer<'_>) -> Result<(Value, Vec<u8>), SignError> {
    let sig = signer.sign(&pae(IN_TOTO, statement))?;
    let envelope = json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(statement),
        "signatures": [{"keyid": "", "sig": B64.encode(&sig)}]
    });
    Ok((envelope, sig))
}

/// Writes each attestation of `subject` (its `statement` over `subjects`) in the formats asked.
pub async fn attest(
    client: &Client,
    path: &str,
    subject: &Subject,
    (signer, format): (Signer<'_>, Format),
    attestations: &[(Attestation, Vec<u8>)],
) -> Result<Vec<Written>, (Vec<Written>, SignError)> {
    let mut out = Vec::new();
    for (a, statement) in attestations {
        let mut w =
            Written { predicate_type: a.predicate_type.clone(), source: a.source.clone(), ..Default::default() };
        if format.legacy() {
            match legacy(client, path, subject, signer, (a, statement)).await {
                Ok(already) => {
                    if already {
                        w.already_there.push("legacy");
                    }
                    w.legacy = Some(format!("{}:{}", subject.repository, attestation_tag(&subject.digest)));
                }
                Err(e) => return Err((out, e)),
            }
        }
        if format.bundle() {
            match bundle(client, path, subject, signer, (a, statement)).await {
                Ok((digest, already)) => {
                    if already {
                        w.already_there.push("bundle");
                    }
                    w.bundle = Some(digest);
                }
                Err(e) => {
                    // What this one wrote in the legacy format is there: said.
                    if w.legacy.is_some() {
                        out.push(w);
                    }
                    return Err((out, e));
                }
            }
        }
        out.push(w);
    }
    Ok(out)
}

/// Adds an envelope layer to the `.att` manifest; `true` when this signer's envelope of the
/// same predicate type about this image was already there.
async fn legacy(
    client: &Client,
    path: &str,
    subject: &Subject,
    signer: Signer<'_>,
    (a, statement): (&Attestation, &[u8]),
) -> Result<bool, SignError> {
    let tag = attestation_tag(&subject.digest);
    let layers = match merge::shared(client, path, &tag).await? {
        Some(m) => descriptors(&m, &tag, "layers")?,
        None => Vec::new(),
    };
    for l in layers.iter().filter(|l| annotation(l, PREDICATE_ANNOTATION) == Some(a.predicate_type.as_str())) {
        let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else { continue };
        // Another signer's envelope that cannot be read is not ours: skipped, never fatal.
        let Ok(Some(bytes)) = client.get_blob(&d, MAX_ENVELOPE).await else { continue };
        let Some(e) = serde_json::from_slice(&bytes).ok().and_then(|v| Envelope::parse(&v).ok()) else { continue };
        let chain = annotation(l, CHAIN_ANNOTATION).map(split_pem).unwrap_or_default();
        if envelope_by(&e, statement, signer, (annotation(l, CERT_ANNOTATION), &chain)) {
            return Ok(true);
        }
    }
    let text = envelope(statement, signer)?.0.to_string();
    let bytes = text.as_bytes();
    let digest = client.put_blob(bytes).await?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(SIGNATURE_ANNOTATION.into(), json!(""));
    annotations.insert(PREDICATE_ANNOTATION.into(), json!(a.predicate_type));
    if let Signer::Keyless(session) = signer {
        annotations.insert(CERT_ANNOTATION.into(), json!(session.leaf_pem()));
        annotations.insert(CHAIN_ANNOTATION.into(), json!(session.chain[1..].join("\n")));
    }
    if let Some(rekor) = signer.rekor() {
        // A `dsse` entry of the envelope exactly as stored, as `cosign attest` logs it: cosign
        // compares its envelope hash with the layer's bytes.
        let entry = rekor.dsse(&text, &signer.verifier_pem()).await?;
        annotations.insert(REKOR_ANNOTATION.into(), json!(entry.annotation()));
    }
    let ours =
        json!({"mediaType": DSSE_ENVELOPE, "size": bytes.len(), "digest": digest.as_str(), "annotations": annotations});
    merge::add(client, path, &tag, merge::List::Signatures, ours).await?;
    Ok(false)
}

/// Whether `e` is signed by `signer` and carries a statement of the same predicate type about
/// the same image as `statement`: one per signer and image (a re-run's provenance, with its
/// own run id, or a regenerated SBOM, with syft's new timestamps, adds none).
fn envelope_by(e: &Envelope, statement: &[u8], signer: Signer<'_>, cert: (Option<&str>, &[String])) -> bool {
    same_kind(&e.payload, statement) && signer.made(&B64.encode(&e.signature), &e.signed(), cert)
}

/// Two statements of the same predicate type about the same first subject (the image).
fn same_kind(theirs: &[u8], ours: &[u8]) -> bool {
    let key = |b: &[u8]| {
        let v: Value = serde_json::from_slice(b).ok()?;
        Some((v.get("predicateType").cloned()?, v.pointer("/subject/0/digest").cloned()?))
    };
    key(theirs).is_some_and(|k| Some(k) == key(ours))
}

/// The bundle referrer of this attestation, written (and listed in the fallback index) unless
/// this signer's bundle of the same predicate type about this image is there; `true` when it was.
async fn bundle(
    client: &Client,
    path: &str,
    subject: &Subject,
    signer: Signer<'_>,
    (a, statement): (&Attestation, &[u8]),
) -> Result<(Digest, bool), SignError> {
    let tag = fallback_tag(&subject.digest);
    let entries = match merge::shared(client, path, &tag).await? {
        Some(index) => descriptors(&index, &tag, "manifests")?,
        None => Vec::new(),
    };
    let same_type = |e: &&Value| {
        e.get("artifactType").and_then(Value::as_str) == Some(BUNDLE_V03)
            && e.pointer("/annotations/dev.sigstore.bundle.predicateType").and_then(Value::as_str)
                == Some(a.predicate_type.as_str())
    };
    for e in entries.iter().filter(same_type) {
        let Some(digest) = e.get("digest").and_then(Value::as_str) else { continue };
        if let Some(b) = super::referrer_bundle(client, path, digest).await?
            && let Ok(b) = BundleParts::parse(&b)
            && let cert = b.cert_der.as_deref().map(super::der_to_pem)
            && envelope_by(&b.envelope, statement, signer, (cert.as_deref(), &[]))
        {
            return Ok((digest.parse().map_err(|_| SignError::Invalid(format!("bad digest {digest}")))?, true));
        }
    }
    let (referrer, descriptor) = super::write_referrer(client, subject, signer, (statement, &a.predicate_type)).await?;
    merge::add(client, path, &tag, merge::List::Referrers, descriptor).await?;
    Ok((referrer, false))
}
