//! `publish verify --attestation TYPE`: every attestation of an image of one predicate type,
//! in both formats (the `.att` layers, the bundle referrers), checked as cosign's
//! `verify-attestation` checks them: the envelope's signature over its PAE, the chain of
//! trust and the transparency log exactly as for signatures (`verify`), and that the
//! statement is about this digest. Attestations of other types are listed, not checked.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::attest::{DSSE_ENVELOPE, MAX_ENVELOPE, attestation_tag};
use super::tlog::LogEntry;
use super::verify::{BundleParts, Envelope, Material, SignatureReport, report};
use super::{
    BUNDLE_V03, CERT_ANNOTATION, CHAIN_ANNOTATION, IN_TOTO, PREDICATE_TYPE, REKOR_ANNOTATION, Rejected, SignError,
    Verifier, VerifyOptions, annotation, fallback_tag, split_pem,
};
use crate::registry::Client;
use crate::types::Digest;

/// One attestation of the type asked for, and what was checked.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationReport {
    #[serde(flatten)]
    pub check: SignatureReport,
    /// The statement's predicate, once the attestation verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Value>,
}

/// What `publish verify --attestation` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attestations {
    pub predicate_type: String,
    pub attestations: Vec<AttestationReport>,
    /// Predicate types of the other attestations there (not checked).
    pub other_types: Vec<String>,
}

impl Attestations {
    pub fn verified(&self) -> impl Iterator<Item = &AttestationReport> {
        self.attestations.iter().filter(|a| a.check.verified)
    }
}

fn predicate_type(statement: &Value) -> &str {
    statement.get("predicateType").and_then(Value::as_str).unwrap_or("(none)")
}

/// That the statement is an in-toto statement about `digest`.
fn about(e: &Envelope, digest: &Digest) -> Result<(), Rejected> {
    if e.payload_type != IN_TOTO {
        return Err(format!("envelope: payloadType {:?}, not {IN_TOTO}", e.payload_type).into());
    }
    let subjects = e.statement.get("subject").and_then(Value::as_array).cloned().unwrap_or_default();
    if subjects.iter().any(|s| s.pointer("/digest/sha256").and_then(Value::as_str) == Some(digest.hex())) {
        return Ok(());
    }
    let named: Vec<String> = subjects
        .iter()
        .filter_map(|s| s.pointer("/digest/sha256").and_then(Value::as_str))
        .map(|h| format!("sha256:{h}"))
        .collect();
    Err(format!(
        "digest: the statement is about {}, not {digest}",
        if named.is_empty() { "nothing".into() } else { named.join(", ") }
    )
    .into())
}

/// One attestation found: of another type (listed), or of the type asked for, checked.
enum Found {
    Other(String),
    Checked(SignatureReport, Result<Value, Rejected>),
}

/// Finds and checks every attestation of `digest` whose predicate type is `wanted`.
pub async fn verify_attestations(
    client: &Client,
    path: &str,
    digest: &Digest,
    check: (&Verifier, VerifyOptions),
    wanted: &str,
) -> Result<Attestations, SignError> {
    let mut found = Vec::new();
    if let Some(bytes) = client.manifest(path, &attestation_tag(digest)).await? {
        let m: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for l in m.get("layers").and_then(Value::as_array).into_iter().flatten() {
            found.extend(legacy_layer(client, l, digest, check, wanted).await?);
        }
    }
    if let Some(bytes) = client.manifest(path, &fallback_tag(digest)).await? {
        let index: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for entry in index.get("manifests").and_then(Value::as_array).into_iter().flatten() {
            if entry.get("artifactType").and_then(Value::as_str) != Some(BUNDLE_V03) {
                continue;
            }
            let Some(d) = entry.get("digest").and_then(Value::as_str) else { continue };
            // A bundle that cannot be read is a signature's, `verify`'s to report.
            let Some(bundle) = super::referrer_bundle(client, path, d).await? else { continue };
            let Ok(parts) = BundleParts::parse(&bundle) else { continue };
            let t = predicate_type(&parts.envelope.statement).to_string();
            if t == PREDICATE_TYPE {
                continue;
            }
            if t != wanted {
                found.push(Found::Other(t));
                continue;
            }
            let mut r = report("bundle", d);
            let result = parts.material().and_then(|m| checked(&parts.envelope, &m, digest, check, &mut r));
            found.push(Found::Checked(r, result));
        }
    }
    let mut out = Attestations { predicate_type: wanted.to_string(), ..Default::default() };
    for f in found {
        match f {
            Found::Other(t) => out.other_types.push(t),
            Found::Checked(mut r, result) => {
                let predicate = match result {
                    Ok(p) => {
                        r.verified = true;
                        Some(p)
                    }
                    Err(why) => {
                        r.failed = Some(why.0);
                        None
                    }
                };
                out.attestations.push(AttestationReport { check: r, predicate });
            }
        }
    }
    out.other_types.sort();
    out.other_types.dedup();
    Ok(out)
}

/// One layer of the `.att` manifest: an envelope of another type, or of `wanted`, checked.
async fn legacy_layer(
    client: &Client,
    l: &Value,
    digest: &Digest,
    check: (&Verifier, VerifyOptions),
    wanted: &str,
) -> Result<Option<Found>, SignError> {
    let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
        return Ok(None);
    };
    let media_type = l.get("mediaType").and_then(Value::as_str).unwrap_or_default();
    let mut r = report("legacy", d.as_str());
    let Some(blob) = client.get_blob(&d, MAX_ENVELOPE).await? else {
        return Ok(Some(Found::Checked(r, Err("the envelope blob is missing".into()))));
    };
    let parsed = serde_json::from_slice::<Value>(&blob).map_err(|_| Rejected::from("the envelope is not JSON"));
    let e = match parsed.and_then(|v| Envelope::parse(&v)) {
        Ok(e) => e,
        Err(why) => return Ok(Some(Found::Checked(r, Err(why)))),
    };
    if predicate_type(&e.statement) != wanted {
        return Ok(Some(Found::Other(predicate_type(&e.statement).to_string())));
    }
    let result = (|| {
        if media_type != DSSE_ENVELOPE {
            return Err(format!("layer media type {media_type}, not {DSSE_ENVELOPE}").into());
        }
        let entries = match annotation(l, REKOR_ANNOTATION) {
            Some(a) => vec![LogEntry::from_annotation(a)?],
            None => Vec::new(),
        };
        let m = Material {
            signature: e.signature.clone(),
            signed: e.signed(),
            payload_sha256: Sha256::digest(&e.payload).to_vec(),
            cert_pem: annotation(l, CERT_ANNOTATION).map(str::to_string),
            chain: annotation(l, CHAIN_ANNOTATION).map(split_pem).unwrap_or_default(),
            entries,
            require_proof: false,
            annotations: Default::default(),
        };
        checked(&e, &m, digest, check, &mut r)
    })();
    Ok(Some(Found::Checked(r, result)))
}

/// The statement about `digest`, then the signature and its chain (`Verifier::check`): the
/// predicate once all hold.
fn checked(
    e: &Envelope,
    m: &Material,
    digest: &Digest,
    (verifier, opts): (&Verifier, VerifyOptions),
    r: &mut SignatureReport,
) -> Result<Value, Rejected> {
    verifier.check(m, opts, r)?;
    about(e, digest)?;
    r.passed.push("subject");
    let predicate = e.statement.get("predicate").cloned().unwrap_or(Value::Null);
    // Keyless, the certificate says which workflow signed: a provenance naming another builder
    // is said (GitHub's builder is the signing workflow).
    let builder = predicate.pointer("/runDetails/builder/id").and_then(Value::as_str);
    if predicate_type(&e.statement) == crate::attest::provenance::PREDICATE_TYPE
        && let (Some(builder), Some(cert)) = (builder, m.cert_pem.as_deref())
        && let Ok((identity, _)) = super::keyless::identity(cert)
    {
        if builder == identity {
            r.passed.push("builder is the certificate's identity");
        } else {
            r.notes.push(format!("builder.id {builder} is not the certificate's identity {identity}"));
        }
    }
    Ok(predicate)
}
