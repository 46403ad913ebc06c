//! What keyless verification trusts: Fulcio CAs, Rekor keys and CT log keys, from a Sigstore
//! `trusted_root.json` (what cosign's `--trusted-root` takes), from PEM files (cosign's
//! `SIGSTORE_ROOT_FILE`, `SIGSTORE_REKOR_PUBLIC_KEY`, `SIGSTORE_CT_LOG_PUBLIC_KEY_FILE`), or
//! from the public-good instance through TUF (the `sigstore` crate's embedded initial root).
//! Also the check of a certificate's embedded SCTs (RFC 6962 §3.2, precertificate form).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::Rejected;

/// A log's key (Rekor or CT), with its validity.
pub struct LogKey {
    pub key: CosignVerificationKey,
    pub spki: Vec<u8>,
    pub id: Vec<u8>,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", hex::encode(&self.id))
    }
}

impl LogKey {
    fn new(spki: Vec<u8>, start: Option<i64>, end: Option<i64>) -> Result<LogKey, String> {
        let key = CosignVerificationKey::try_from_der(&spki).map_err(|e| format!("a log key: {e}"))?;
        Ok(LogKey { key, id: Sha256::digest(&spki).to_vec(), spki, start, end })
    }

    pub fn spki_sha256(&self) -> Vec<u8> {
        Sha256::digest(&self.spki).to_vec()
    }

    pub fn valid_at(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// The trust roots of one verification.
#[derive(Debug, Default)]
pub struct TrustedRoot {
    /// Fulcio CA certificates (DER): roots and intermediates.
    pub fulcio: Vec<Vec<u8>>,
    pub tlogs: Vec<LogKey>,
    pub ctlogs: Vec<LogKey>,
    /// Where it came from, for the report.
    pub source: String,
}

/// An RFC 3339 time (`2020-01-01T00:00:00Z`, fractions ignored) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp())
}

fn validity(v: Option<&Value>) -> (Option<i64>, Option<i64>) {
    let t = |k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).and_then(parse_rfc3339);
    (t("start"), t("end"))
}

impl TrustedRoot {
    /// Parses Sigstore's `trusted_root.json` (protobuf-specs `TrustedRoot`, JSON form).
    pub fn from_json(bytes: &[u8]) -> Result<TrustedRoot, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let media = v.get("mediaType").and_then(Value::as_str).unwrap_or_default();
        if !media.starts_with("application/vnd.dev.sigstore.trustedroot") {
            return Err(format!("mediaType {media:?} is not a Sigstore trusted root"));
        }
        let logs = |k: &str| -> Result<Vec<LogKey>, String> {
            let mut out = Vec::new();
            for l in v.get(k).and_then(Value::as_array).into_iter().flatten() {
                let raw = l
                    .pointer("/publicKey/rawBytes")
                    .and_then(Value::as_str)
                    .ok_or(format!("{k}[]: no publicKey.rawBytes"))?;
                let spki = B64.decode(raw).map_err(|_| format!("{k}[]: publicKey.rawBytes is not base64"))?;
                let (start, end) = validity(l.pointer("/publicKey/validFor"));
                out.push(LogKey::new(spki, start, end)?);
            }
            Ok(out)
        };
        let mut fulcio = Vec::new();
        for ca in v.get("certificateAuthorities").and_then(Value::as_array).into_iter().flatten() {
            for c in ca.pointer("/certChain/certificates").and_then(Value::as_array).into_iter().flatten() {
                let raw = c.get("rawBytes").and_then(Value::as_str).ok_or("certificateAuthorities[]: no rawBytes")?;
                fulcio.push(B64.decode(raw).map_err(|_| "certificateAuthorities[]: rawBytes is not base64")?);
            }
        }
        Ok(TrustedRoot { fulcio, tlogs: logs("tlogs")?, ctlogs: logs("ctlogs")?, source: String::new() })
    }

    /// Roots from PEM: Fulcio certificates, and optionally Rekor and CT log public keys.
    pub fn from_pem(fulcio: &[u8], rekor: Option<&[u8]>, ctlog: Option<&[u8]>) -> Result<TrustedRoot, String> {
        let blocks = |pem: &[u8], label: &str| -> Vec<Vec<u8>> {
            let text = String::from_utf8_lossy(pem);
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            text.split(&begin)
                .skip(1)
                .filter_map(|b| b.split(&end).next())
                .filter_map(|b| B64.decode(b.chars().filter(|c| !c.is_whitespace()).collect::<String>()).ok())
                .collect()
        };
        let fulcio = blocks(fulcio, "CERTIFICATE");
        if fulcio.is_empty() {
            return Err("no PEM certificate in the roots file".into());
        }
        let keys = |pem: Option<&[u8]>, what: &str| -> Result<Vec<LogKey>, String> {
            let Some(pem) = pem else { return Ok(Vec::new()) };
            let keys = blocks(pem, "PUBLIC KEY");
            if keys.is_empty() {
                return Err(format!("no PEM public key in the {what} key file"));
            }
            keys.into_iter().map(|k| LogKey::new(k, None, None)).collect()
        };
        Ok(TrustedRoot { fulcio, tlogs: keys(rekor, "Rekor")?, ctlogs: keys(ctlog, "CT log")?, source: String::new() })
    }

    /// The public-good roots through TUF, cached under `cache`.
    pub async fn public_good(cache: Option<&std::path::Path>) -> Result<TrustedRoot, String> {
        use sigstore::trust::TrustRoot;
        let fetch = sigstore::trust::sigstore::SigstoreTrustRoot::new(cache);
        let root = tokio::time::timeout(std::time::Duration::from_secs(120), fetch)
            .await
            .map_err(|_| "the Sigstore TUF repository did not answer within 120 s".to_string())?
            .map_err(|e| format!("the Sigstore TUF repository: {e}"))?;
        let fulcio = root.fulcio_certs().map_err(|e| e.to_string())?.iter().map(|c| c.to_vec()).collect();
        let keys = |m: std::collections::BTreeMap<String, &[u8]>| -> Result<Vec<LogKey>, String> {
            m.values().map(|k| LogKey::new(k.to_vec(), None, None)).collect()
        };
        Ok(TrustedRoot {
            fulcio,
            tlogs: keys(root.rekor_keys().map_err(|e| e.to_string())?)?,
            ctlogs: keys(root.ctfe_keys().map_err(|e| e.to_string())?)?,
            source: "the Sigstore public-good instance (TUF)".into(),
        })
    }

    pub fn tlog(&self, id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|k| k.id == id)
    }

    /// Checks the certificate's embedded SCTs: at least one from a trusted CT log verifies
    /// over the precertificate (the TBS without the SCT list) and the issuer's key hash.
    pub fn verify_scts(&self, leaf_der: &[u8], issuer_spki: &[u8]) -> Result<(), Rejected> {
        let (tbs, list) = der::split_sct_list(leaf_der).ok_or("SCT: the certificate has no embedded SCT")?;
        let issuer_key_hash = Sha256::digest(issuer_spki);
        let scts = der::parse_sct_list(&list).ok_or("SCT: the embedded SCT list does not parse")?;
        let mut last = "SCT: no embedded SCT is from a trusted CT log".to_string();
        for sct in scts {
            let Some(log) = self.ctlogs.iter().find(|k| k.id == sct.log_id) else { continue };
            let mut signed = vec![0u8, 0u8];
            signed.extend_from_slice(&sct.timestamp.to_be_bytes());
            signed.extend_from_slice(&[0, 1]);
            signed.extend_from_slice(&issuer_key_hash);
            signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
            signed.extend_from_slice(&tbs);
            signed.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
            signed.extend_from_slice(&sct.extensions);
            if !log.valid_at((sct.timestamp / 1000) as i64) {
                last = "SCT: the CT log key was not valid at the SCT's time".into();
                continue;
            }
            if log.key.verify_signature(Signature::Raw(&sct.signature), &signed).is_ok() {
                return Ok(());
            }
            last = "SCT: the embedded SCT does not verify with the CT log's key".into();
        }
        Err(last.into())
    }
}

/// The precertificate's TBS for SCT checks, and the SCT list read by x509-cert. The TBS is
/// rebuilt at the DER level here because x509-cert 0.3 keeps a certificate's fields private
/// (no way to drop one extension and re-encode); a proptest below feeds it hostile bytes.
mod der {
    /// SCT list extension, 1.3.6.1.4.1.11129.2.4.2, as OID content bytes.
    const SCT_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];

    /// (tag, whole element, content) of a DER element.
    type Tlv<'a> = (u8, &'a [u8], &'a [u8]);

    /// The element at the start of `b`.
    fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        let (len, hdr) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let end = hdr.checked_add(len)?;
        Some((tag, b.get(..end)?, b.get(hdr..end)?))
    }

    fn elements(mut b: &[u8]) -> Option<Vec<Tlv<'_>>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let e = tlv(b)?;
            b = &b[e.1.len()..];
            out.push(e);
        }
        Some(out)
    }

    fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// The certificate's TBS without the SCT list extension, and the SCT list (TLS bytes).
    pub fn split_sct_list(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let (_, _, cert) = tlv(cert)?;
        let (tag, _, tbs) = tlv(cert)?;
        if tag != 0x30 {
            return None;
        }
        let mut list = None;
        let mut parts = Vec::new();
        for (tag, whole, content) in elements(tbs)? {
            if tag != 0xa3 {
                parts.extend_from_slice(whole);
                continue;
            }
            let (_, _, exts) = tlv(content)?;
            let mut kept = Vec::new();
            for (_, ext, ext_content) in elements(exts)? {
                let fields = elements(ext_content)?;
                if fields.first().map(|f| f.2) == Some(SCT_OID) {
                    let value = fields.last()?.2;
                    list = Some(tlv(value)?.2.to_vec());
                } else {
                    kept.extend_from_slice(ext);
                }
            }
            parts.extend(encode(0xa3, &encode(0x30, &kept)));
        }
        Some((encode(0x30, &parts), list?))
    }

    pub struct Sct {
        pub log_id: Vec<u8>,
        pub timestamp: u64,
        pub extensions: Vec<u8>,
        pub signature: Vec<u8>,
    }

    /// A TLS `SignedCertificateTimestampList` (the extension's content), read by x509-cert's
    /// RFC 6962 types; only v1 SCTs are kept.
    pub fn parse_sct_list(b: &[u8]) -> Option<Vec<Sct>> {
        use x509_cert::der::asn1::OctetString;
        use x509_cert::ext::pkix::sct::{SignedCertificateTimestampList, Version};
        let list = SignedCertificateTimestampList::from(OctetString::new(b).ok()?);
        let mut out = Vec::new();
        for serialized in list.parse_timestamps().ok()? {
            // An SCT of another version or shape is skipped, as before: another may verify.
            let Ok(sct) = serialized.parse_timestamp() else { continue };
            if sct.version != Version::V1 {
                continue;
            }
            out.push(Sct {
                log_id: sct.log_id.key_id.to_vec(),
                timestamp: sct.timestamp,
                extensions: sct.extensions.as_slice().to_vec(),
                signature: sct.signature.signature.as_slice().to_vec(),
            });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2020-01-01T00:00:00Z"), Some(1_577_836_800));
        assert_eq!(parse_rfc3339("2022-04-13T20:06:15.000Z"), Some(1_649_880_375));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("2020-01-01 00:00:00"), None);
    }

    proptest::proptest! {
        /// Whatever a certificate or a trusted root holds, reading it ends without a panic.
        #[test]
        fn hostile_certificates_and_times_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            text in "\\PC{0,60}",
        ) {
            let _ = der::split_sct_list(&bytes);
            let _ = der::parse_sct_list(&bytes);
            let _ = parse_rfc3339(&text);
        }
    }
}
