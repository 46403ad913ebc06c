//! `publish verify`: every signature of an image, in both formats, checked as cosign checks it:
//! the signature over the payload, the payload naming the image digest, and for keyless the
//! certificate chain to a trusted Fulcio CA, its SCTs, the identity and issuer; the
//! transparency-log entry (SET, inclusion proof and checkpoint, and that the entry is this
//! signature), and the certificate's validity at the *verified* integrated time. Each
//! signature's report names the checks that passed, or the one that failed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::tlog::LogEntry;
use super::trust::TrustedRoot;
use super::{
    CERT_ANNOTATION, CHAIN_ANNOTATION, MAX_SIGNATURE_BLOB, PREDICATE_TYPE, REKOR_ANNOTATION, Rejected,
    SIGNATURE_ANNOTATION, SignError, annotation, der_to_pem, fallback_tag, keyless, legacy_tag, pae, split_pem,
};
use crate::registry::Client;
use crate::types::Digest;

/// cosign's `--insecure-ignore-tlog` and `--insecure-ignore-sct`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    pub ignore_tlog: bool,
    pub ignore_sct: bool,
}

/// What a signature must verify against.
pub enum Verifier {
    /// A public key; transparency-log entries are checked when trust roots are given.
    Key { key: CosignVerificationKey, spki: Vec<u8>, trust: Option<TrustedRoot> },
    /// A certificate for this identity and issuer from a trusted Fulcio CA, logged in a
    /// trusted Rekor.
    Keyless { policy: keyless::Policy, trust: TrustedRoot },
}

/// One signature, and what was checked.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    /// `legacy` or `bundle`.
    pub format: &'static str,
    /// The payload digest (legacy) or the referrer manifest digest (bundle).
    pub digest: String,
    pub verified: bool,
    /// The checks that passed, in order.
    pub passed: Vec<&'static str>,
    /// The check that failed, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Notes: what was not checked, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The integrated time, once its SET verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<i64>,
    /// What the signature says of the image's source (`git.sha`, `git.ref`, `github.*`): the
    /// legacy payload's `optional`, a bundle statement's `predicate.annotations`. Signed, so
    /// trusted as far as the signature is.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: super::provenance::Annotations,
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
    pub signatures: Vec<SignatureReport>,
}

/// A signature and what comes with it, in either format.
pub(super) struct Material {
    pub signature: Vec<u8>,
    /// What the signature covers: the payload (legacy) or the DSSE PAE (bundle).
    pub signed: Vec<u8>,
    /// SHA-256 of the payload, as the log records it.
    pub payload_sha256: Vec<u8>,
    pub cert_pem: Option<String>,
    pub chain: Vec<String>,
    pub entries: Vec<LogEntry>,
    /// Bundles from v0.2 on carry inclusion proofs; legacy annotations only the SET.
    pub require_proof: bool,
    pub annotations: super::provenance::Annotations,
}

/// A DSSE envelope's parts: the statement it carries and the signature over its PAE.
pub(super) struct Envelope {
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub signature: Vec<u8>,
    pub statement: Value,
}

impl Envelope {
    pub fn parse(env: &Value) -> Result<Envelope, Rejected> {
        let payload = env.get("payload").and_then(Value::as_str).ok_or("the envelope has no payload")?;
        let payload = B64.decode(payload).map_err(|e| format!("the payload is not base64: {e}"))?;
        let payload_type = env.get("payloadType").and_then(Value::as_str).unwrap_or_default().to_string();
        let sig = env.pointer("/signatures/0/sig").and_then(Value::as_str).ok_or("the envelope has no signature")?;
        let signature = B64.decode(sig).map_err(|_| "the signature is not base64")?;
        let statement = serde_json::from_slice(&payload).map_err(|e| format!("the statement is not JSON: {e}"))?;
        Ok(Envelope { payload, payload_type, signature, statement })
    }

    /// What the signature covers: the pre-authentication encoding.
    pub fn signed(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }
}

/// A bundle's parts (v0.3, or v0.1/v0.2 with a certificate chain).
pub(super) struct BundleParts {
    pub envelope: Envelope,
    pub cert_der: Option<Vec<u8>>,
    pub entries: Vec<Value>,
}

impl BundleParts {
    pub fn parse(bundle: &Value) -> Result<BundleParts, Rejected> {
        let env = bundle.get("dsseEnvelope").ok_or("the bundle has no DSSE envelope")?;
        let envelope = Envelope::parse(env)?;
        let material = bundle.get("verificationMaterial");
        let cert_der = material
            .and_then(|m| {
                m.pointer("/certificate/rawBytes")
                    .or_else(|| m.pointer("/x509CertificateChain/certificates/0/rawBytes"))
            })
            .and_then(Value::as_str)
            .and_then(|b| B64.decode(b).ok());
        let entries =
            material.and_then(|m| m.get("tlogEntries")).and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(BundleParts { envelope, cert_der, entries })
    }

    /// What the signature is checked with: its certificate, its log entries (with inclusion
    /// proofs, as bundles from v0.2 on carry them).
    pub fn material(&self) -> Result<Material, Rejected> {
        let entries = self.entries.iter().map(LogEntry::from_bundle_entry).collect::<Result<Vec<_>, _>>()?;
        Ok(Material {
            signature: self.envelope.signature.clone(),
            signed: self.envelope.signed(),
            payload_sha256: Sha256::digest(&self.envelope.payload).to_vec(),
            cert_pem: self.cert_der.as_deref().map(der_to_pem),
            chain: Vec::new(),
            entries,
            require_proof: true,
            annotations: Default::default(),
        })
    }

    /// Whether the statement is a cosign signature naming `digest`.
    pub fn names(&self, digest: &Digest) -> bool {
        let statement = &self.envelope.statement;
        statement.get("predicateType").and_then(Value::as_str) == Some(PREDICATE_TYPE)
            && statement
                .get("subject")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| s.pointer("/digest/sha256").and_then(Value::as_str) == Some(digest.hex()))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Verifier {
    pub(super) fn check(
        &self,
        m: &Material,
        opts: VerifyOptions,
        report: &mut SignatureReport,
    ) -> Result<(), Rejected> {
        let (trust, verifier_der) = match self {
            Verifier::Key { spki, trust, .. } => (trust.as_ref(), spki.clone()),
            Verifier::Keyless { trust, .. } => {
                let pem = m.cert_pem.as_deref().ok_or("certificate: no certificate comes with the signature")?;
                let der = super::tlog::pem_der(pem.as_bytes()).ok_or("certificate: not PEM")?;
                (Some(trust), der)
            }
        };
        // The signature itself first: nothing else matters if it does not verify.
        let certified;
        let key = match self {
            Verifier::Key { key, .. } => key,
            Verifier::Keyless { .. } => {
                certified = keyless::certificate_key(m.cert_pem.as_deref().unwrap_or_default())?;
                &certified
            }
        };
        if key.verify_signature(Signature::Raw(&m.signature), &m.signed).is_err() {
            return Err(match self {
                Verifier::Key { .. } => "signature: does not verify with the key".into(),
                Verifier::Keyless { .. } => "signature: does not verify with the certificate's key".into(),
            });
        }
        report.passed.push("signature");
        let mut time = None;
        if opts.ignore_tlog {
            report.notes.push("transparency log not checked (--insecure-ignore-tlog)".into());
        } else if m.entries.is_empty() {
            if matches!(self, Verifier::Keyless { .. }) {
                return Err("tlog: no transparency-log entry comes with the signature (--insecure-ignore-tlog skips this check)".into());
            }
            report.notes.push("not logged in a transparency log".into());
        } else if let Some(trust) = trust {
            let mut last = Rejected::from("tlog: no entry");
            for e in &m.entries {
                let checked = e.verify(trust, m.require_proof).and_then(|(t, checked)| {
                    e.matches(&m.signature, &verifier_der, &m.payload_sha256)?;
                    Ok((t, checked))
                });
                match checked {
                    Ok((t, checked)) => {
                        report.passed.extend(checked);
                        report.passed.push("tlog entry is this signature");
                        time = Some(t);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if time.is_none() {
                return Err(last);
            }
            report.integrated_time = time;
        } else {
            report.notes.push("transparency-log entry present, not checked: give --trusted-root".into());
        }
        if let Verifier::Keyless { policy, trust } = self {
            if opts.ignore_sct {
                report.notes.push("SCT not checked (--insecure-ignore-sct)".into());
            }
            let at = time.unwrap_or_else(now);
            let checked = keyless::check_certificate(
                m.cert_pem.as_deref().unwrap_or_default(),
                &m.chain,
                policy,
                trust,
                at,
                opts.ignore_sct,
            )?;
            report.passed.extend(checked);
        }
        Ok(())
    }
}

fn record(out: &mut Verified, mut report: SignatureReport, result: Result<(), Rejected>) {
    match result {
        Ok(()) => {
            report.verified = true;
            if let Ok(d) = report.digest.parse::<Digest>() {
                if report.format == "legacy" { out.legacy.push(d) } else { out.bundle.push(d) }
            }
        }
        Err(why) => {
            // What a signature that does not verify claims is nobody's word: not shown.
            report.annotations.clear();
            out.invalid.push(format!("{} {}: {why}", report.format, report.digest));
            report.failed = Some(why.0);
        }
    }
    out.signatures.push(report);
}

pub(super) fn report(format: &'static str, digest: &str) -> SignatureReport {
    SignatureReport {
        format,
        digest: digest.to_string(),
        verified: false,
        passed: Vec::new(),
        failed: None,
        notes: Vec::new(),
        integrated_time: None,
        annotations: Default::default(),
    }
}

/// Finds and checks every signature of `digest` in both formats.
pub async fn verify(
    client: &Client,
    path: &str,
    digest: &Digest,
    verifier: &Verifier,
    opts: VerifyOptions,
) -> Result<Verified, SignError> {
    let mut out = Verified { digest: Some(digest.clone()), ..Default::default() };
    let legacy = client.manifest(path, &legacy_tag(digest)).await?;
    if let Some(bytes) = legacy {
        let m: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !m.is_object() {
            let mut r = report("legacy", &legacy_tag(digest));
            r.failed = Some("the signature manifest does not parse".into());
            out.invalid.push(format!("legacy {}: the signature manifest does not parse", legacy_tag(digest)));
            out.signatures.push(r);
        }
        for l in m.get("layers").and_then(Value::as_array).into_iter().flatten() {
            let Some(d) = l.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
                continue;
            };
            let mut r = report("legacy", d.as_str());
            let result = legacy_material(client, l, &d, digest).await?.and_then(|m| {
                r.passed.push("digest");
                r.annotations = m.annotations.clone();
                verifier.check(&m, opts, &mut r)
            });
            record(&mut out, r, result);
        }
    }
    if let Some(bytes) = client.manifest(path, &fallback_tag(digest)).await? {
        let index: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for e in index.get("manifests").and_then(Value::as_array).into_iter().flatten() {
            if !super::is_signature_bundle(e) {
                continue;
            }
            let Some(d) = e.get("digest").and_then(Value::as_str) else { continue };
            let bundle = super::referrer_bundle(client, path, d).await?;
            // An attestation (a statement of another predicate type) is `--attestation`'s.
            let statement = bundle.as_ref().and_then(|b| BundleParts::parse(b).ok()).map(|p| p.envelope.statement);
            if statement.is_some_and(|s| s.get("predicateType").and_then(Value::as_str) != Some(PREDICATE_TYPE)) {
                continue;
            }
            let mut r = report("bundle", d);
            let result = match bundle {
                None => Err("the referrer or its bundle is missing or unreadable".into()),
                Some(bundle) => bundle_material(&bundle, digest).and_then(|m| {
                    r.passed.push("digest");
                    r.annotations = m.annotations.clone();
                    verifier.check(&m, opts, &mut r)
                }),
            };
            record(&mut out, r, result);
        }
    }
    Ok(out)
}

async fn legacy_material(
    client: &Client,
    layer: &Value,
    payload_digest: &Digest,
    digest: &Digest,
) -> Result<Result<Material, Rejected>, SignError> {
    let Some(payload) = client.get_blob(payload_digest, MAX_SIGNATURE_BLOB).await? else {
        return Ok(Err("the payload blob is missing".into()));
    };
    Ok((|| {
        let claims: Value = serde_json::from_slice(&payload).map_err(|_| "the payload is not JSON")?;
        let named = claims.pointer("/critical/image/docker-manifest-digest").and_then(Value::as_str);
        match named {
            Some(n) if n == digest.as_str() => {}
            Some(n) => return Err(format!("digest: signs {n}, not {digest}").into()),
            None => return Err("digest: the payload names no image digest".into()),
        }
        let sig = annotation(layer, SIGNATURE_ANNOTATION).ok_or("no signature annotation")?;
        let signature = B64.decode(sig.trim()).map_err(|_| "signature: not base64")?;
        let entries = match annotation(layer, REKOR_ANNOTATION) {
            Some(a) => vec![LogEntry::from_annotation(a)?],
            None => Vec::new(),
        };
        Ok(Material {
            signature,
            payload_sha256: Sha256::digest(&payload).to_vec(),
            signed: payload.clone(),
            cert_pem: annotation(layer, CERT_ANNOTATION).map(str::to_string),
            chain: annotation(layer, CHAIN_ANNOTATION).map(split_pem).unwrap_or_default(),
            entries,
            require_proof: false,
            annotations: super::provenance::read(claims.get("optional")),
        })
    })())
}

fn bundle_material(bundle: &Value, digest: &Digest) -> Result<Material, Rejected> {
    let b = BundleParts::parse(bundle)?;
    if !b.names(digest) {
        return Err(format!("digest: the statement is not a cosign signature of {digest}").into());
    }
    let mut m = b.material()?;
    m.annotations = super::provenance::read(b.envelope.statement.pointer("/predicate/annotations"));
    Ok(m)
}
