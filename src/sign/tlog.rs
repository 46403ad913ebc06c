//! Transparency-log entries: how they are carried (cosign's `dev.sigstore.cosign/bundle`
//! annotation, a bundle's `verificationMaterial.tlogEntries[]`) and how they are checked, as
//! sigstore-go checks them: the signed entry timestamp (SET) over the canonical JSON of the
//! entry with the log's key, the RFC 6962 inclusion proof (RFC 9162's algorithm) up to the
//! root hash, the checkpoint's note signature over that root, and that the logged body is the
//! signature being verified (same signature, same verifier, same payload digest).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::Signature;

use super::Rejected;
use super::trust::TrustedRoot;

/// A Rekor entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub uuid: String,
    /// The canonicalised body (JSON bytes).
    pub body: Vec<u8>,
    pub integrated_time: i64,
    pub log_index: i64,
    /// SHA-256 of the log's public key.
    pub log_id: Vec<u8>,
    /// The signed entry timestamp (DER ECDSA signature).
    pub set: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub log_index: i64,
    pub root_hash: Vec<u8>,
    pub tree_size: i64,
    pub hashes: Vec<Vec<u8>>,
    /// The signed note: origin, tree size, root hash, signatures.
    pub checkpoint: String,
}

impl LogEntry {
    /// `kind` of the logged body (`hashedrekord`, `dsse`, …).
    pub fn kind(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        body.get("kind").and_then(Value::as_str).map(str::to_string)
    }

    /// cosign's `dev.sigstore.cosign/bundle` annotation (legacy signatures).
    pub fn annotation(&self) -> String {
        json!({
            "SignedEntryTimestamp": self.set.as_deref().map(|s| B64.encode(s)).unwrap_or_default(),
            "Payload": {
                "body": B64.encode(&self.body),
                "integratedTime": self.integrated_time,
                "logIndex": self.log_index,
                "logID": hex::encode(&self.log_id)
            }
        })
        .to_string()
    }

    pub fn from_annotation(text: &str) -> Result<LogEntry, Rejected> {
        let v: Value = serde_json::from_str(text).map_err(|_| "the Rekor bundle annotation is not JSON")?;
        let p = v.get("Payload").ok_or("the Rekor bundle annotation has no Payload")?;
        Ok(LogEntry {
            uuid: String::new(),
            body: b64_field(p, "body")?,
            integrated_time: p.get("integratedTime").and_then(Value::as_i64).ok_or("no integratedTime")?,
            log_index: p.get("logIndex").and_then(Value::as_i64).ok_or("no logIndex")?,
            log_id: p
                .get("logID")
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .ok_or("the logID is not hex")?,
            set: Some(b64_field(&v, "SignedEntryTimestamp")?),
            proof: None,
        })
    }

    /// A bundle v0.3 `tlogEntries` item.
    pub fn bundle_entry(&self) -> Value {
        let kind = self.kind().unwrap_or_default();
        let mut e = json!({
            "logIndex": self.log_index.to_string(),
            "logId": {"keyId": B64.encode(&self.log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": self.integrated_time.to_string(),
            "canonicalizedBody": B64.encode(&self.body)
        });
        if let Some(set) = &self.set {
            e["inclusionPromise"] = json!({"signedEntryTimestamp": B64.encode(set)});
        }
        if let Some(p) = &self.proof {
            e["inclusionProof"] = json!({
                "logIndex": p.log_index.to_string(),
                "rootHash": B64.encode(&p.root_hash),
                "treeSize": p.tree_size.to_string(),
                "hashes": p.hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": p.checkpoint}
            });
        }
        e
    }

    pub fn from_bundle_entry(e: &Value) -> Result<LogEntry, Rejected> {
        let int = |v: &Value, k: &str| -> Result<i64, Rejected> {
            let f = v.get(k).ok_or_else(|| format!("the tlog entry has no {k}"))?;
            f.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| f.as_i64())
                .ok_or_else(|| format!("{k} is not a number").into())
        };
        let proof = match e.get("inclusionProof") {
            None => None,
            Some(p) => Some(InclusionProof {
                log_index: int(p, "logIndex")?,
                root_hash: b64_field(p, "rootHash")?,
                tree_size: int(p, "treeSize")?,
                hashes: p
                    .get("hashes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|h| h.as_str().and_then(|h| B64.decode(h).ok()).ok_or("a proof hash is not base64"))
                    .collect::<Result<_, _>>()?,
                checkpoint: p
                    .pointer("/checkpoint/envelope")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .ok_or("the inclusion proof has no checkpoint")?
                    .to_string(),
            }),
        };
        let entry = LogEntry {
            uuid: String::new(),
            body: b64_field(e, "canonicalizedBody")?,
            integrated_time: int(e, "integratedTime").unwrap_or(0),
            log_index: int(e, "logIndex")?,
            log_id: e
                .pointer("/logId/keyId")
                .and_then(Value::as_str)
                .and_then(|k| B64.decode(k).ok())
                .ok_or("no logId")?,
            set: e
                .pointer("/inclusionPromise/signedEntryTimestamp")
                .and_then(Value::as_str)
                .and_then(|s| B64.decode(s).ok()),
            proof,
        };
        let kind = e.pointer("/kindVersion/kind").and_then(Value::as_str);
        if kind.is_some() && kind.map(str::to_string) != entry.kind() {
            return Err("the tlog entry's kindVersion is not the kind of its body".into());
        }
        Ok(entry)
    }

    /// Checks the entry against the trusted logs: the SET, and the inclusion proof with its
    /// checkpoint when there is one (`require_proof`: bundles must have one). Returns the
    /// integrated time, now trusted, and what was checked.
    pub fn verify(&self, trust: &TrustedRoot, require_proof: bool) -> Result<(i64, Vec<&'static str>), Rejected> {
        let log = trust.tlog(&self.log_id).ok_or_else(|| {
            format!("the entry is from a log that is not trusted (log ID {})", hex::encode(&self.log_id))
        })?;
        let mut checked = Vec::new();
        if self.set.is_none() && self.proof.is_none() {
            return Err("the entry has neither a signed entry timestamp nor an inclusion proof".into());
        }
        if let Some(set) = &self.set {
            let payload = format!(
                r#"{{"body":{},"integratedTime":{},"logID":"{}","logIndex":{}}}"#,
                serde_json::to_string(&B64.encode(&self.body)).unwrap_or_default(),
                self.integrated_time,
                hex::encode(&self.log_id),
                self.log_index
            );
            log.key
                .verify_signature(Signature::Raw(set), payload.as_bytes())
                .map_err(|_| "tlog: the signed entry timestamp (SET) does not verify with the Rekor key")?;
            if !log.valid_at(self.integrated_time) {
                return Err("tlog: the Rekor key was not valid at the entry's integrated time".into());
            }
            checked.push("SET");
        }
        match &self.proof {
            Some(p) => {
                if p.log_index != self.log_index {
                    return Err("tlog: the inclusion proof is for another log index".into());
                }
                let mut leaf = Sha256::new();
                leaf.update([0u8]);
                leaf.update(&self.body);
                let leaf: Vec<u8> = leaf.finalize().to_vec();
                if !inclusion(p.log_index, p.tree_size, &leaf, &p.hashes, &p.root_hash) {
                    return Err("tlog: the inclusion proof does not lead to the root hash".into());
                }
                checked.push("inclusion proof");
                checkpoint(&p.checkpoint, log, p.tree_size, &p.root_hash)?;
                checked.push("checkpoint");
            }
            None if require_proof => return Err("tlog: the bundle's entry has no inclusion proof".into()),
            None => {}
        }
        if self.set.is_none() {
            // Without a promise the integrated time is not signed: it cannot be trusted.
            return Err("tlog: no signed entry timestamp, so the integrated time is not trusted".into());
        }
        Ok((self.integrated_time, checked))
    }

    /// Checks that the logged body is this signature: `signature` by `verifier` (certificate
    /// or public key, DER) over a payload whose SHA-256 is `payload_sha256`. `intoto` entries
    /// (what `cosign attest --rekor-entry-type intoto`, and cosign before 2.2, log for an
    /// attestation) hold the verifier and the statement's digest; v0.0.2 also the signature,
    /// base64 twice; v0.0.1 none.
    pub fn matches(&self, signature: &[u8], verifier_der: &[u8], payload_sha256: &[u8]) -> Result<(), Rejected> {
        let body: Value = serde_json::from_slice(&self.body).map_err(|_| "tlog: the logged body is not JSON")?;
        let b64 = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| B64.decode(s).ok());
        let (sig, verifier, digest) = match (body.get("kind").and_then(Value::as_str), body.get("apiVersion")) {
            (Some("hashedrekord"), _) => (
                Some(b64(body.pointer("/spec/signature/content"))),
                body.pointer("/spec/signature/publicKey/content"),
                body.pointer("/spec/data/hash/value"),
            ),
            (Some("dsse"), _) => (
                Some(b64(body.pointer("/spec/signatures/0/signature"))),
                body.pointer("/spec/signatures/0/verifier"),
                body.pointer("/spec/payloadHash/value"),
            ),
            (Some("intoto"), Some(v)) if v == "0.0.2" => {
                let twice = b64(body.pointer("/spec/content/envelope/signatures/0/sig"))
                    .and_then(|once| B64.decode(once.trim_ascii()).ok());
                (
                    Some(twice),
                    body.pointer("/spec/content/envelope/signatures/0/publicKey"),
                    body.pointer("/spec/content/payloadHash/value"),
                )
            }
            (Some("intoto"), Some(v)) if v == "0.0.1" => {
                (None, body.pointer("/spec/publicKey"), body.pointer("/spec/content/payloadHash/value"))
            }
            (other, _) => return Err(format!("tlog: unsupported entry kind {other:?}").into()),
        };
        if let Some(logged) = sig
            && logged.as_deref() != Some(signature)
        {
            return Err("tlog: the logged signature is not this signature".into());
        }
        let logged_verifier =
            b64(verifier).and_then(|pem| pem_der(&pem)).ok_or("tlog: the logged verifier is not PEM")?;
        if logged_verifier != verifier_der {
            return Err("tlog: the logged verifier is not this signature's certificate or key".into());
        }
        if digest.and_then(Value::as_str).and_then(|d| hex::decode(d).ok()).as_deref() != Some(payload_sha256) {
            return Err("tlog: the logged digest is not this payload's".into());
        }
        Ok(())
    }
}

fn b64_field(v: &Value, k: &str) -> Result<Vec<u8>, Rejected> {
    v.get(k).and_then(Value::as_str).and_then(|s| B64.decode(s).ok()).ok_or_else(|| format!("{k} is not base64").into())
}

/// The DER inside the first PEM block of a known kind (`CERTIFICATE`, `PUBLIC KEY`, …), read
/// by rustls-pki-types' PEM parser (RFC 7468: labels matched, base64 checked).
pub fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    <(SectionKind, Vec<u8>)>::from_pem_slice(pem).ok().map(|(_, der)| der)
}

fn node(l: &[u8], r: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().to_vec()
}

/// RFC 9162 §2.1.3.2: verifies an inclusion proof for `leaf` at `index` in a tree of `size`.
pub fn inclusion(index: i64, size: i64, leaf: &[u8], path: &[Vec<u8>], root: &[u8]) -> bool {
    if index < 0 || size <= 0 || index >= size {
        return false;
    }
    let (mut f, mut s) = (index as u64, (size - 1) as u64);
    let mut r = leaf.to_vec();
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == root
}

/// Checks a checkpoint (a signed note: origin, size, base64 root hash, then `— name sig`
/// lines) with the log's key, and that it commits to `size` and `root`.
fn checkpoint(text: &str, log: &super::trust::LogKey, size: i64, root: &[u8]) -> Result<(), Rejected> {
    let split = text.rfind("\n\n").ok_or("tlog: the checkpoint is not a signed note")?;
    let (note, signatures) = (&text[..split + 1], &text[split + 2..]);
    let lines: Vec<&str> = note.lines().collect();
    if lines.len() < 3 || lines[0].is_empty() {
        return Err("tlog: the checkpoint has no origin, size and root hash".into());
    }
    if lines[1].parse::<i64>().ok() != Some(size) || B64.decode(lines[2]).ok().as_deref() != Some(root) {
        return Err("tlog: the checkpoint is for another tree than the inclusion proof".into());
    }
    let hint = &log.spki_sha256()[..4];
    let signed = signatures.lines().filter_map(|l| l.strip_prefix("\u{2014} ")).any(|l| {
        let Some(sig) = l.split(' ').nth(1).and_then(|s| B64.decode(s).ok()) else { return false };
        sig.len() > 4
            && &sig[..4] == hint
            && log.key.verify_signature(Signature::Raw(&sig[4..]), note.as_bytes()).is_ok()
    });
    if signed { Ok(()) } else { Err("tlog: the checkpoint's signature does not verify with the Rekor key".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update([0u8, i]);
        h.finalize().to_vec()
    }

    /// The RFC 6962 definitions, recursively, to check the iterative verifier against.
    fn mth(l: &[Vec<u8>]) -> Vec<u8> {
        if l.len() == 1 {
            return l[0].clone();
        }
        let k = l.len().next_power_of_two() / 2;
        node(&mth(&l[..k]), &mth(&l[k..]))
    }

    fn path(m: usize, l: &[Vec<u8>]) -> Vec<Vec<u8>> {
        if l.len() <= 1 {
            return vec![];
        }
        let k = l.len().next_power_of_two() / 2;
        if m < k {
            let mut p = path(m, &l[..k]);
            p.push(mth(&l[k..]));
            p
        } else {
            let mut p = path(m - k, &l[k..]);
            p.push(mth(&l[..k]));
            p
        }
    }

    #[test]
    fn inclusion_proofs_verify_for_every_index_of_every_size_and_fail_when_changed() {
        for n in 1..=17usize {
            let leaves: Vec<Vec<u8>> = (0..n as u8).map(leaf).collect();
            let root = mth(&leaves);
            for m in 0..n {
                let p = path(m, &leaves);
                assert!(inclusion(m as i64, n as i64, &leaves[m], &p, &root), "n={n} m={m}");
                assert!(
                    n == 1 || !inclusion(m as i64, n as i64, &leaves[m], &p, &mth(&leaves[..n - 1])),
                    "root changed n={n} m={m}"
                );
                if n > 1 {
                    let other = (m + 1) % n;
                    assert!(!inclusion(other as i64, n as i64, &leaves[m], &p, &root), "index changed n={n} m={m}");
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!inclusion(m as i64, n as i64, &leaves[m], &bad, &root), "hash changed n={n} m={m}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Any tree and any leaf: the proof the RFC's definitions give verifies; whatever a log
        /// sends as a proof, entry or key, reading it ends without a panic.
        #[test]
        fn proofs_of_any_tree_verify_and_hostile_input_never_panics(
            n in 1usize..300,
            pick in proptest::num::usize::ANY,
            index in proptest::num::i64::ANY,
            size in proptest::num::i64::ANY,
            junk in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..20),
            text in "\\PC{0,300}",
        ) {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| leaf((i % 251) as u8).into_iter().chain([(i / 251) as u8]).collect()).collect();
            let m = pick % n;
            proptest::prop_assert!(inclusion(m as i64, n as i64, &leaves[m], &path(m, &leaves), &mth(&leaves)));
            let _ = inclusion(index, size, &leaves[m], &junk, &mth(&leaves));
            let _ = LogEntry::from_annotation(&text);
            let _ = pem_der(text.as_bytes());
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = LogEntry::from_bundle_entry(&v);
            }
        }
    }
}
