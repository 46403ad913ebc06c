//! Local stand-ins for keyless signing's services, speaking their documented requests and
//! refusing others, with real keys so that the real cosign can judge what `publish` signs:
//!
//! - GitHub's OIDC token endpoint.
//! - Fulcio v2 `signingCert`: checks the proof of possession over the token's `sub`, issues a
//!   certificate from its own CA (SAN `https://github.com/` + `job_workflow_ref`, issuer
//!   extension, code signing) with an **embedded SCT** signed by a CT log key, as Fulcio does.
//! - Rekor v1: `hashedrekord`, `dsse` and `intoto` (v0.0.1) entries whose signatures it checks (with
//!   openssl, not with the code under test), canonicalised bodies, a signed entry timestamp
//!   over the canonical JSON of the entry, an RFC 6962 Merkle tree with inclusion proofs and a
//!   signed checkpoint, 409 with `Location` for a duplicate, `GET entries/{uuid}` and
//!   `entries/retrieve`.
//!
//! `trusted_root.json` (Sigstore's format: Fulcio CA, Rekor key, CT log key) and the PEM files
//! cosign's environment variables take are written to the stand-in's directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SigningKey, SubjectPublicKeyInfo,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::http::{Response, Server};

pub const REQUEST_TOKEN: &str = "actions-request-token-9a8b7c";
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const WORKFLOW_REF: &str = "my-org/comfyui/.github/workflows/publish.yml@refs/heads/main";
const CHECKPOINT_ORIGIN: &str = "rekor.local - 2605736670972794746";

pub fn identity() -> String {
    format!("https://github.com/{WORKFLOW_REF}")
}

/// A GitHub-shaped token (its signature is not checked by the Fulcio stand-in).
pub fn token() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"test"}"#);
    let claims = json!({
        "iss": ISSUER, "aud": "sigstore", "sub": "repo:my-org/comfyui:ref:refs/heads/main",
        "repository": "my-org/comfyui", "ref": "refs/heads/main", "job_workflow_ref": WORKFLOW_REF,
        "exp": 4102444800u64, "iat": 1700000000u64
    });
    format!("{header}.{}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// What the next Rekor answers get wrong on purpose (for the refusal tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None = 0,
    /// The signed entry timestamp is over other data.
    Set = 1,
    /// One hash of the inclusion proof is flipped.
    Proof = 2,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Fulcio issues certificates that expired before today (valid in 2020).
    pub expired_certificates: bool,
}

pub struct Sigstore {
    pub oidc: Server,
    pub fulcio: Server,
    pub rekor: Server,
    /// Canonicalised bodies, in log order.
    pub rekor_entries: Arc<Mutex<Vec<Value>>>,
    /// While above 0, Rekor answers 503 (and counts down): faults for the fault run.
    pub rekor_faults: Arc<AtomicU32>,
    pub tamper: Arc<AtomicU32>,
    pub dir: tempfile::TempDir,
}

impl Sigstore {
    /// The Fulcio CA (PEM): `--certificate-roots`, cosign's `SIGSTORE_ROOT_FILE`.
    pub fn roots(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// Sigstore's trusted root: `--trusted-root` for cosign and `publish verify`.
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.path().join("trusted_root.json")
    }
    /// Rekor's public key (PEM): cosign's `SIGSTORE_REKOR_PUBLIC_KEY`.
    pub fn rekor_key(&self) -> PathBuf {
        self.dir.path().join("rekor.pub")
    }
    /// The CT log's public key (PEM): cosign's `SIGSTORE_CT_LOG_PUBLIC_KEY_FILE`.
    pub fn ctlog_key(&self) -> PathBuf {
        self.dir.path().join("ctlog.pub")
    }
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token?api-version=2.0", self.oidc.port)
    }
    pub fn fulcio_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.fulcio.port)
    }
    pub fn rekor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rekor.port)
    }
    pub fn set_tamper(&self, t: Tamper) {
        self.tamper.store(t as u32, Ordering::SeqCst);
    }
    /// The environment cosign's legacy keyless verification reads its roots from.
    pub fn cosign_env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("SIGSTORE_ROOT_FILE", self.roots()),
            ("SIGSTORE_REKOR_PUBLIC_KEY", self.rekor_key()),
            ("SIGSTORE_CT_LOG_PUBLIC_KEY_FILE", self.ctlog_key()),
        ]
    }
}

fn openssl_ok(args: &[&str], dir: &Path) -> bool {
    std::process::Command::new(super::require("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// RFC 6962 Merkle tree: the root of `leaves` and the audit path of `index`, computed by the
/// recursive definitions of the RFC (the client verifies with the iterative algorithm of RFC 9162).
fn node(l: &[u8], r: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(b""),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

fn leaf_hash(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

/// The CA, CT log and Rekor keys, and the certificates the Fulcio stand-in issues.
struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ct_key: KeyPair,
    options: Options,
}

fn validity(params: &mut CertificateParams, from: u64, to: u64) {
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from as i64).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to as i64).unwrap();
}

impl Pki {
    fn new(options: Options) -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::OrganizationName, "sigstore.local");
        ca_params.distinguished_name.push(DnType::CommonName, "test fulcio root");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca_params, 1_577_836_800, now() + 365 * 86_400);
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        let ct_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Pki { ca_key, ca_params, ca_der, ct_key, options }
    }

    /// A Fulcio certificate for `public_pem` with an embedded SCT: the SCT signs the
    /// certificate's TBS without the SCT extension (what RFC 6962 calls the precertificate).
    fn issue(&self, public_pem: &str, san: &str, issuer: &str, serial: u64) -> String {
        let key = SubjectPublicKeyInfo::from_pem(public_pem).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let (from, to) =
            if self.options.expired_certificates { (1_577_836_800, 1_577_837_400) } else { (now() - 60, now() + 600) };
        validity(&mut params, from, to);
        let mut utf8 = vec![0x0c, issuer.len() as u8];
        utf8.extend_from_slice(issuer.as_bytes());
        // Fulcio writes the issuer twice: v1 (raw bytes, what cosign's identity check reads)
        // and v2 (a DER UTF8String).
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 1], issuer.as_bytes().to_vec()),
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], utf8),
        ];
        let ca = Issuer::from_params(&self.ca_params, &self.ca_key);
        let pre = params.signed_by(&key, &ca).unwrap();
        let tbs = {
            use x509_cert::der::{Decode, Encode};
            let cert = x509_cert::Certificate::from_der(pre.der()).unwrap();
            cert.tbs_certificate().to_der().unwrap()
        };
        let issuer_spki = {
            use x509_cert::der::{Decode, Encode};
            let cert = x509_cert::Certificate::from_der(&self.ca_der).unwrap();
            cert.tbs_certificate().subject_public_key_info().to_der().unwrap()
        };
        let timestamp = now() * 1000;
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&timestamp.to_be_bytes());
        signed.extend_from_slice(&[0, 1]);
        signed.extend_from_slice(&sha256(&issuer_spki));
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&[0, 0]);
        let sig = self.ct_key.sign(&signed).unwrap();
        let mut sct = vec![0u8];
        sct.extend_from_slice(&sha256(&self.ct_key.subject_public_key_info()));
        sct.extend_from_slice(&timestamp.to_be_bytes());
        sct.extend_from_slice(&[0, 0, 4, 3]);
        sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(&sct);
        let mut octets = vec![0x04];
        if list.len() < 128 {
            octets.push(list.len() as u8);
        } else {
            octets.extend_from_slice(&[0x81, list.len() as u8]);
        }
        octets.extend_from_slice(&list);
        params.custom_extensions.push(CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2], octets));
        params.signed_by(&key, &ca).unwrap().pem()
    }
}

fn trusted_root(pki: &Pki, rekor_key: &KeyPair, rekor_url: &str, fulcio_url: &str) -> Value {
    let log = |key: &KeyPair, url: &str| {
        let spki = key.subject_public_key_info();
        json!({
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": B64.encode(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": B64.encode(sha256(&spki))}
        })
    };
    json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log(rekor_key, rekor_url)],
        "certificateAuthorities": [{
            "subject": {"organization": "sigstore.local", "commonName": "test fulcio root"},
            "uri": fulcio_url,
            "certChain": {"certificates": [{"rawBytes": B64.encode(&pki.ca_der)}]},
            "validFor": {"start": "2020-01-01T00:00:00Z"}
        }],
        "ctlogs": [log(&pki.ct_key, "http://ctlog.local")],
        "timestampAuthorities": []
    })
}

pub fn start() -> Sigstore {
    start_with(Options::default())
}

pub fn start_with(options: Options) -> Sigstore {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let pki = Arc::new(Pki::new(options));
    std::fs::write(d.join("ca.pem"), pem("CERTIFICATE", &pki.ca_der)).unwrap();
    std::fs::write(d.join("ctlog.pub"), pem("PUBLIC KEY", &pki.ct_key.subject_public_key_info())).unwrap();

    let oidc = Server::start(|req| {
        let ok = req.header("authorization") == Some(&format!("Bearer {REQUEST_TOKEN}"))
            && req.target.contains("audience=sigstore");
        if ok { Response::new(200).json(&json!({"value": token()})) } else { Response::new(401) }
    });

    let fd = d.clone();
    let counter = Arc::new(Mutex::new(0u64));
    let fulcio_pki = pki.clone();
    let fulcio = Server::start(move |req| {
        if req.method != "POST" || req.target != "/api/v2/signingCert" {
            return Response::new(404);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else { return Response::new(400) };
        let (Some(token), Some(alg), Some(public), Some(proof)) = (
            body.pointer("/credentials/oidcIdentityToken").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/publicKey/algorithm").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/publicKey/content").and_then(Value::as_str),
            body.pointer("/publicKeyRequest/proofOfPossession").and_then(Value::as_str),
        ) else {
            return Response::new(400).json(&json!({"code": 3, "message": "missing fields"}));
        };
        let claims: Value = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let (Some(sub), Some(wf), Some(iss)) =
            (claims["sub"].as_str(), claims["job_workflow_ref"].as_str(), claims["iss"].as_str())
        else {
            return Response::new(401).json(&json!({"code": 16, "message": "invalid token"}));
        };
        if alg != "ECDSA" {
            return Response::new(400).json(&json!({"code": 3, "message": "unsupported algorithm"}));
        }
        let n = {
            let mut c = counter.lock().unwrap();
            *c += 1;
            *c
        };
        let work = fd.join(format!("req{n}"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("pub.pem"), public).unwrap();
        std::fs::write(work.join("sub"), sub).unwrap();
        std::fs::write(work.join("proof"), B64.decode(proof).unwrap_or_default()).unwrap();
        if !openssl_ok(&["dgst", "-sha256", "-verify", "pub.pem", "-signature", "proof", "sub"], &work) {
            return Response::new(400).json(&json!({"code": 3, "message": "proof of possession does not verify"}));
        }
        let leaf = fulcio_pki.issue(public, &format!("https://github.com/{wf}"), iss, 1000 + n);
        let root = pem("CERTIFICATE", &fulcio_pki.ca_der);
        Response::new(201).json(&json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf, root]}}}))
    });

    let rekor_key = Arc::new(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap());
    std::fs::write(d.join("rekor.pub"), pem("PUBLIC KEY", &rekor_key.subject_public_key_info())).unwrap();
    let log_id = hex::encode(sha256(&rekor_key.subject_public_key_info()));
    let entries: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let times: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let store = entries.clone();
    let rd = d.clone();
    let rekor_faults = Arc::new(AtomicU32::new(0));
    let faults = rekor_faults.clone();
    let tamper = Arc::new(AtomicU32::new(0));
    let tampering = tamper.clone();
    let key = rekor_key.clone();
    let rekor = Server::start(move |req| {
        let take = |n: u32| (n > 0).then(|| n - 1);
        if faults.fetch_update(Ordering::SeqCst, Ordering::SeqCst, take).is_ok() {
            return Response::new(503);
        }
        let mut log = store.lock().unwrap();
        let mut times = times.lock().unwrap();
        let log_ref =
            Log { bodies: &log, times: &times, key: &key, log_id: &log_id, tamper: tampering.load(Ordering::SeqCst) };
        let uuid_path = "/api/v1/log/entries/";
        match (req.method.as_str(), req.target.as_str()) {
            ("POST", "/api/v1/log/entries") => {
                let Ok(proposed) = serde_json::from_slice::<Value>(&req.body) else { return Response::new(400) };
                let work = tempfile::tempdir_in(&rd).unwrap();
                let body = match canonical_entry(&proposed, work.path()) {
                    Ok(b) => b,
                    Err(message) => return Response::new(400).json(&json!({"code": 400, "message": message})),
                };
                if let Some(i) = log_ref.bodies.iter().position(|e| *e == body) {
                    return Response::new(409)
                        .header("Location", &format!("{uuid_path}{}", log_ref.uuid(i)))
                        .json(&json!({"code": 409, "message": "an equivalent entry already exists"}));
                }
                log.push(body);
                times.push(now());
                let log_ref = Log {
                    bodies: &log,
                    times: &times,
                    key: &key,
                    log_id: &log_id,
                    tamper: tampering.load(Ordering::SeqCst),
                };
                Response::new(201).json(&log_ref.answer(log.len() - 1))
            }
            ("GET", t) if t.starts_with(uuid_path) => {
                let uuid = &t[uuid_path.len()..];
                match (0..log_ref.bodies.len()).find(|i| log_ref.uuid(*i) == uuid) {
                    Some(i) => Response::new(200).json(&log_ref.answer(i)),
                    None => Response::new(404).json(&json!({"code": 404, "message": "no such entry"})),
                }
            }
            ("POST", "/api/v1/log/entries/retrieve") => {
                let Ok(q) = serde_json::from_slice::<Value>(&req.body) else { return Response::new(400) };
                let work = tempfile::tempdir_in(&rd).unwrap();
                let found: Vec<Value> = q["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| canonical_entry(e, work.path()).ok())
                    .filter_map(|b| log_ref.bodies.iter().position(|x| *x == b))
                    .map(|i| log_ref.answer(i))
                    .collect();
                Response::new(200).json(&Value::Array(found))
            }
            _ => Response::new(404),
        }
    });
    let root = trusted_root(
        &pki,
        &rekor_key,
        &format!("http://127.0.0.1:{}", rekor.port),
        &format!("http://127.0.0.1:{}", fulcio.port),
    );
    std::fs::write(d.join("trusted_root.json"), serde_json::to_vec_pretty(&root).unwrap()).unwrap();
    Sigstore { oidc, fulcio, rekor, rekor_entries: entries, rekor_faults, tamper, dir }
}

/// The log as Rekor answers for it.
struct Log<'a> {
    bodies: &'a [Value],
    times: &'a [u64],
    key: &'a KeyPair,
    log_id: &'a str,
    tamper: u32,
}

impl Log<'_> {
    fn leaves(&self) -> Vec<[u8; 32]> {
        self.bodies.iter().map(|b| leaf_hash(b.to_string().as_bytes())).collect()
    }

    fn uuid(&self, index: usize) -> String {
        hex::encode(leaf_hash(self.bodies[index].to_string().as_bytes()))
    }

    /// Rekor's answer for entry `index`: body, SET over the canonical JSON of the entry,
    /// inclusion proof in the current tree and a checkpoint signed as a note.
    fn answer(&self, index: usize) -> Value {
        let leaves = self.leaves();
        let (time, log_id) = (self.times[index], self.log_id);
        let body_b64 = B64.encode(self.bodies[index].to_string());
        let set_payload =
            format!(r#"{{"body":"{body_b64}","integratedTime":{time},"logID":"{log_id}","logIndex":{index}}}"#);
        let set_data = if self.tamper == Tamper::Set as u32 { format!("{set_payload} ") } else { set_payload };
        let set = self.key.sign(set_data.as_bytes()).unwrap();
        let root = mth(&leaves);
        let mut hashes: Vec<String> = path(index, &leaves).iter().map(hex::encode).collect();
        if self.tamper == Tamper::Proof as u32 {
            match hashes.first_mut() {
                Some(h) => *h = hex::encode(sha256(h.as_bytes())),
                None => hashes.push(hex::encode(sha256(b"not in the tree"))),
            }
        }
        let note = format!("{CHECKPOINT_ORIGIN}\n{}\n{}\n", leaves.len(), B64.encode(root));
        let mut signature = sha256(&self.key.subject_public_key_info())[..4].to_vec();
        signature.extend_from_slice(&self.key.sign(note.as_bytes()).unwrap());
        let checkpoint = format!("{note}\n\u{2014} rekor.local {}\n", B64.encode(signature));
        json!({self.uuid(index): {
            "body": body_b64, "integratedTime": time, "logID": log_id, "logIndex": index,
            "verification": {
                "signedEntryTimestamp": B64.encode(set),
                "inclusionProof": {
                    "checkpoint": checkpoint, "hashes": hashes, "logIndex": index,
                    "rootHash": hex::encode(root), "treeSize": leaves.len()
                }
            }
        }})
    }
}

/// The public key (PEM) in a verifier that is a certificate or a key, written to `dir`.
fn public_key(verifier_pem: &[u8], dir: &Path) -> Result<PathBuf, String> {
    let file = dir.join("verifier.pem");
    std::fs::write(&file, verifier_pem).unwrap();
    let out = dir.join("pub.pem");
    if verifier_pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
        if !openssl_ok(&["x509", "-in", "verifier.pem", "-pubkey", "-noout", "-out", "pub.pem"], dir) {
            return Err("the verifier is not a certificate".into());
        }
    } else if verifier_pem.starts_with(b"-----BEGIN PUBLIC KEY-----") {
        std::fs::copy(&file, &out).unwrap();
    } else {
        return Err("the verifier is neither a PEM certificate nor a PEM public key".into());
    }
    Ok(out)
}

/// Checks a proposed `hashedrekord` or `dsse` entry (signatures verified with openssl) and
/// returns the body Rekor would log for it.
fn canonical_entry(proposed: &Value, dir: &Path) -> Result<Value, String> {
    let text = |p: &str| proposed.pointer(p).and_then(Value::as_str).ok_or_else(|| format!("missing {p}"));
    if proposed["apiVersion"] != "0.0.1" {
        return Err("unsupported apiVersion".into());
    }
    match proposed["kind"].as_str() {
        Some("hashedrekord") => {
            if proposed.pointer("/spec/data/hash/algorithm") != Some(&json!("sha256")) {
                return Err("hash algorithm must be sha256".into());
            }
            let hash = text("/spec/data/hash/value")?;
            let sig = text("/spec/signature/content")?;
            let verifier = text("/spec/signature/publicKey/content")?;
            let key = public_key(&B64.decode(verifier).map_err(|_| "verifier is not base64")?, dir)?;
            std::fs::write(dir.join("sig"), B64.decode(sig).map_err(|_| "signature is not base64")?).unwrap();
            std::fs::write(dir.join("hash"), hex::decode(hash).map_err(|_| "hash is not hex")?).unwrap();
            let key = key.display().to_string();
            if !openssl_ok(&["pkeyutl", "-verify", "-pubin", "-inkey", &key, "-sigfile", "sig", "-in", "hash"], dir) {
                return Err("signature does not verify".into());
            }
            Ok(json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hash}},
                "signature": {"content": sig, "publicKey": {"content": verifier}}
            }}))
        }
        Some("dsse") => {
            let envelope_text = text("/spec/proposedContent/envelope")?;
            let envelope: Value = serde_json::from_str(envelope_text).map_err(|_| "the envelope is not JSON")?;
            let verifiers = proposed
                .pointer("/spec/proposedContent/verifiers")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .ok_or("no verifiers")?;
            let payload = B64.decode(envelope["payload"].as_str().ok_or("no payload")?).map_err(|_| "payload")?;
            let payload_type = envelope["payloadType"].as_str().ok_or("no payloadType")?;
            let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
            pae.extend_from_slice(&payload);
            std::fs::write(dir.join("pae"), &pae).unwrap();
            let mut signatures = Vec::new();
            for s in envelope["signatures"].as_array().into_iter().flatten() {
                let sig_b64 = s["sig"].as_str().ok_or("a signature without sig")?;
                std::fs::write(dir.join("sig"), B64.decode(sig_b64).map_err(|_| "sig is not base64")?).unwrap();
                let by = verifiers.iter().filter_map(Value::as_str).find(|v| {
                    let Ok(pem) = B64.decode(v) else { return false };
                    let Ok(key) = public_key(&pem, dir) else { return false };
                    let key = key.display().to_string();
                    openssl_ok(&["dgst", "-sha256", "-verify", &key, "-signature", "sig", "pae"], dir)
                });
                let by = by.ok_or("a signature in the envelope does not verify with any verifier")?;
                signatures.push(json!({"signature": sig_b64, "verifier": by}));
            }
            if signatures.is_empty() {
                return Err("the envelope has no signatures".into());
            }
            signatures.sort_by(|a, b| a["signature"].as_str().cmp(&b["signature"].as_str()));
            Ok(json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hex::encode(sha256(envelope_text.as_bytes()))},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(sha256(&payload))},
                "signatures": signatures
            }}))
        }
        // What `cosign attest --rekor-entry-type intoto` logs: the envelope, and the key that
        // signed it (Rekor checks the signature and keeps the digests).
        Some("intoto") => {
            let envelope_text = text("/spec/content/envelope")?;
            let verifier = text("/spec/publicKey")?;
            let envelope: Value = serde_json::from_str(envelope_text).map_err(|_| "the envelope is not JSON")?;
            let payload = B64.decode(envelope["payload"].as_str().ok_or("no payload")?).map_err(|_| "payload")?;
            let payload_type = envelope["payloadType"].as_str().ok_or("no payloadType")?;
            let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
            pae.extend_from_slice(&payload);
            std::fs::write(dir.join("pae"), &pae).unwrap();
            let sig = envelope.pointer("/signatures/0/sig").and_then(Value::as_str).ok_or("no signature")?;
            std::fs::write(dir.join("sig"), B64.decode(sig).map_err(|_| "sig is not base64")?).unwrap();
            let key = public_key(&B64.decode(verifier).map_err(|_| "publicKey is not base64")?, dir)?;
            let key = key.display().to_string();
            if !openssl_ok(&["dgst", "-sha256", "-verify", &key, "-signature", "sig", "pae"], dir) {
                return Err("the envelope's signature does not verify".into());
            }
            Ok(json!({"apiVersion": "0.0.1", "kind": "intoto", "spec": {
                "content": {
                    "hash": {"algorithm": "sha256", "value": hex::encode(sha256(envelope_text.as_bytes()))},
                    "payloadHash": {"algorithm": "sha256", "value": hex::encode(sha256(&payload))}
                },
                "publicKey": verifier
            }}))
        }
        _ => Err("unsupported kind".into()),
    }
}
