//! Keyless signing from GitHub Actions: the job's OIDC token (audience `sigstore`) buys a
//! short-lived certificate from Fulcio (v2 `signingCert`, proof of possession over the token's
//! `sub`), each signature is logged in Rekor (`rekor.rs`), and verification checks the
//! certificate chain to a trusted Fulcio CA, its embedded SCTs, the workflow identity and the
//! OIDC issuer (`check_certificate`). Every URL is a setting.
//! The token is parsed here (the sigstore crate rejects GitHub's tokens; it wants an `email` claim and a string `aud`: https://github.com/sigstore/sigstore-rs).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, SigningScheme};
use x509_cert::der::{Decode, DecodePem, Encode};

use super::SignError;
use crate::types::Secret;

/// Fulcio's extension holding the OIDC issuer (v2, DER UTF8String) and its v1 form (raw).
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// id-kp-codeSigning, as DER content bytes.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Where keyless signing talks to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub fulcio: String,
    pub rekor: String,
}

/// Sigstore's public-good instances.
pub const FULCIO_URL: &str = "https://fulcio.sigstore.dev";
pub const REKOR_URL: &str = "https://rekor.sigstore.dev";

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints { fulcio: FULCIO_URL.into(), rekor: REKOR_URL.into() }
    }
}

fn err(e: impl std::fmt::Display) -> SignError {
    SignError::Key(e.to_string())
}

/// Where GitHub Actions hands out OIDC tokens: the request URL and its bearer token.
#[derive(Debug, Clone)]
pub struct Oidc {
    pub url: String,
    pub token: Secret,
}

/// Checks, before anything is pushed, that this job can get an OIDC token (from `env`, which
/// the command layer passes in): the workflow needs `permissions: id-token: write`, and pull
/// requests from forks never get one.
pub fn check_prerequisites(env: &crate::credentials::Env) -> Result<Oidc, SignError> {
    let var = |k: &str| env.get(k).cloned().unwrap_or_default();
    let (url, token) = (var("ACTIONS_ID_TOKEN_REQUEST_URL"), var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"));
    if let Some(path) = env.get("GITHUB_EVENT_PATH")
        && let Ok(event) = crate::http::read_file_limited(std::path::Path::new(path), 16 * 1024 * 1024)
            .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
        && let (Some(head), Some(base)) = (
            event.pointer("/pull_request/head/repo/full_name").and_then(Value::as_str),
            event.pointer("/pull_request/base/repo/full_name").and_then(Value::as_str),
        )
        && head != base
    {
        return Err(err(format!(
            "keyless signing: this pull request comes from the fork {head}, which gets no OIDC token; sign on the base repository (e.g. on push to main), or use signing.key"
        )));
    }
    if url.is_empty() || token.is_empty() {
        return Err(err(
            "keyless signing needs GitHub's OIDC token, and ACTIONS_ID_TOKEN_REQUEST_URL/ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: give the job `permissions: id-token: write` (and run in GitHub Actions)",
        ));
    }
    Ok(Oidc { url, token: Secret::new(token) })
}

/// The claims of a GitHub Actions token that matter here.
#[derive(Debug, Clone)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub job_workflow_ref: Option<String>,
}

/// Reads a JWT's claims (URL-safe base64, no padding), without checking its signature: Fulcio does.
pub fn claims(token: &Secret) -> Result<Claims, SignError> {
    let payload = token.expose().split('.').nth(1).ok_or_else(|| err("the OIDC token is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| err("the OIDC token's claims are not base64url"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| err("the OIDC token's claims are not JSON"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Claims {
        sub: s("sub").ok_or_else(|| err("the OIDC token has no sub claim"))?,
        iss: s("iss").ok_or_else(|| err("the OIDC token has no iss claim"))?,
        job_workflow_ref: s("job_workflow_ref"),
    })
}

/// A keyless signing session: an ephemeral key and Fulcio's certificate for it.
pub struct Session {
    signer: SigStoreSigner,
    /// PEM certificates, leaf first.
    pub chain: Vec<String>,
    pub identity: String,
    pub rekor: super::rekor::Rekor,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.identity)
    }
}

impl Session {
    /// Gets the OIDC token, a Fulcio certificate for a fresh key, and is ready to sign.
    pub async fn start(
        endpoints: &Endpoints,
        oidc: &Oidc,
        config: &crate::http::ClientConfig,
    ) -> Result<Session, SignError> {
        let http = config.http(None).map_err(err)?;
        let retry = config.retry();
        let sep = if oidc.url.contains('?') { '&' } else { '?' };
        let resp = crate::retry::send(&retry, "the OIDC token request", || {
            http.get(format!("{}{sep}audience=sigstore", oidc.url))
                .header(reqwest::header::AUTHORIZATION, format!("Bearer {}", oidc.token.expose()))
        })
        .await
        .map_err(|e| err(format!("requesting the OIDC token: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!("the OIDC token request answered {}", resp.status())));
        }
        let v: Value = crate::http::json_limited(resp, crate::http::MAX_SMALL_BODY)
            .await
            .map_err(|e| err(format!("the OIDC token answer: {e}")))?;
        let token = Secret::new(
            v.get("value").and_then(Value::as_str).ok_or_else(|| err("the OIDC token answer has no value"))?,
        );
        let claims = claims(&token)?;

        let pair = SigStoreKeyPair::ECDSA(ECDSAKeys::new(EllipticCurve::P256).map_err(err)?);
        let signer = pair.to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1).map_err(err)?;
        let public_pem = pair.public_key_to_pem().map_err(err)?;
        // GitHub tokens have no email: the proof of possession signs `sub`.
        let proof = B64.encode(signer.sign(claims.sub.as_bytes()).map_err(err)?);
        let request = json!({
            "credentials": {"oidcIdentityToken": token.expose()},
            "publicKeyRequest": {"publicKey": {"algorithm": "ECDSA", "content": public_pem}, "proofOfPossession": proof}
        });
        let url = format!("{}/api/v2/signingCert", endpoints.fulcio.trim_end_matches('/'));
        let resp = crate::retry::send(&retry, "Fulcio", || http.post(&url).json(&request))
            .await
            .map_err(|e| err(format!("Fulcio: {e}")))?;
        let status = resp.status();
        let v: Value = crate::http::json_limited(resp, crate::http::MAX_SMALL_BODY).await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(err(format!(
                "Fulcio refused the certificate request: {status} {}",
                v.get("message").and_then(Value::as_str).unwrap_or("")
            )));
        }
        let chain: Vec<String> =
            ["/signedCertificateEmbeddedSct/chain/certificates", "/signedCertificateDetachedSct/chain/certificates"]
                .iter()
                .find_map(|p| v.pointer(p).and_then(Value::as_array))
                .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
        let leaf = chain.first().ok_or_else(|| err("Fulcio answered without a certificate"))?;
        let identity = identity(leaf)?.0;
        Ok(Session { signer, chain, identity, rekor: super::rekor::Rekor::new(&endpoints.rekor, config)? })
    }

    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer.sign(msg).map_err(err)
    }

    pub fn leaf_pem(&self) -> &str {
        &self.chain[0]
    }

    /// Whether a signature found in the registry is this workflow's: its certificate (`cert`,
    /// PEM) names this session's identity and chains to the CA that issued this session's
    /// certificate (at its own start: Fulcio's certificates live minutes), and its key made
    /// `signature_b64` over `msg`. A copied certificate beside a signature it did not make, or
    /// a certificate of the same identity from anyone else, is not.
    pub fn made(&self, (cert, chain): (&str, &[String]), signature_b64: &str, msg: &[u8]) -> bool {
        let Ok((who, issuer)) = identity(cert) else { return false };
        let ours = identity(&self.chain[0]).ok().and_then(|(_, i)| i);
        let issuers = self.chain.get(1..).unwrap_or_default();
        if issuers.is_empty() {
            tracing::warn!(
                "Fulcio gave no issuer with the certificate: signatures already there are not recognised as this workflow's"
            );
            return false;
        }
        let Ok(trust) = super::trust::TrustedRoot::from_pem(issuers.join("\n").as_bytes(), None, None) else {
            return false;
        };
        let Ok(leaf) = x509_cert::Certificate::from_pem(cert.as_bytes()) else { return false };
        let start = leaf.tbs_certificate().validity().not_before.to_unix_duration().as_secs() as i64;
        // The issuer is compared below, as it is (a certificate may name none).
        let Ok(any) = Matcher::regex(".*") else { return false };
        let policy = Policy { identity: Matcher::Exact(self.identity.clone()), issuer: any };
        who == self.identity
            && issuer == ours
            && check_certificate(cert, chain, &policy, &trust, start + 1, true).is_ok()
            && certificate_key(cert).is_ok_and(|k| super::verifies(&k, signature_b64, msg))
    }

    pub fn leaf_der(&self) -> Result<Vec<u8>, SignError> {
        let cert = x509_cert::Certificate::from_pem(self.chain[0].as_bytes()).map_err(err)?;
        cert.to_der().map_err(err)
    }
}

/// The identity (SAN URI or email) and the OIDC issuer of a Fulcio certificate.
pub fn identity(pem: &str) -> Result<(String, Option<String>), SignError> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(err)?;
    identity_of(&cert)
}

fn identity_of(cert: &x509_cert::Certificate) -> Result<(String, Option<String>), SignError> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let mut san = None;
    let mut issuer = None;
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let oid = ext.extn_id.to_string();
        let bytes = ext.extn_value.as_bytes();
        if oid == "2.5.29.17" {
            let names = SubjectAltName::from_der(bytes).map_err(err)?;
            san = names.0.iter().find_map(|n| match n {
                GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                GeneralName::Rfc822Name(e) => Some(e.to_string()),
                _ => None,
            });
        } else if oid == OID_ISSUER_V2 {
            issuer = x509_cert::der::asn1::Utf8StringRef::from_der(bytes).ok().map(|s| s.as_str().to_string());
        } else if oid == OID_ISSUER_V1 && issuer.is_none() {
            issuer = std::str::from_utf8(bytes).ok().map(str::to_string);
        }
    }
    Ok((san.ok_or_else(|| err("the certificate has no identity (SAN)"))?, issuer))
}

/// An identity or issuer requirement: exact, or a regular expression (cosign's `-regexp` flags,
/// matched against the whole value).
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Regex(regex::Regex),
}

impl Matcher {
    pub fn regex(pattern: &str) -> Result<Matcher, String> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(Matcher::Regex).map_err(|e| format!("{pattern:?}: {e}"))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s}"),
            Matcher::Regex(r) => write!(f, "/{}/", r.as_str().trim_start_matches("^(?:").trim_end_matches(")$")),
        }
    }
}

/// What a keyless verification requires.
#[derive(Debug, Clone)]
pub struct Policy {
    pub identity: Matcher,
    pub issuer: Matcher,
}

/// Checks a certificate (PEM, with optional intermediates) at `time` (the verified integrated
/// time): chain to a trusted Fulcio CA, embedded SCT (unless `ignore_sct`), identity, issuer.
/// Returns the checks that passed.
pub fn check_certificate(
    leaf_pem: &str,
    chain_pem: &[String],
    policy: &Policy,
    trust: &super::trust::TrustedRoot,
    time: i64,
    ignore_sct: bool,
) -> Result<Vec<&'static str>, super::Rejected> {
    let leaf = x509_cert::Certificate::from_pem(leaf_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let leaf_der = leaf.to_der().map_err(|e| e.to_string())?;
    let mut others: Vec<Vec<u8>> = chain_pem
        .iter()
        .filter_map(|p| x509_cert::Certificate::from_pem(p.as_bytes()).ok())
        .filter_map(|c| c.to_der().ok())
        .collect();
    // The trusted root's own intermediates count as intermediates too.
    others.extend(trust.fulcio.iter().cloned());
    let anchors_der: Vec<rustls_pki_types::CertificateDer> =
        trust.fulcio.iter().map(|r| rustls_pki_types::CertificateDer::from(r.clone())).collect();
    let anchors: Vec<_> = anchors_der.iter().filter_map(|c| webpki::anchor_from_trusted_cert(c).ok()).collect();
    let inter: Vec<rustls_pki_types::CertificateDer> =
        others.iter().cloned().map(rustls_pki_types::CertificateDer::from).collect();
    let leaf_cert = rustls_pki_types::CertificateDer::from(leaf_der.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_cert).map_err(|e| format!("the certificate: {e}"))?;
    let when = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(time.max(0) as u64));
    ee.verify_for_usage(
        &[
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            webpki::aws_lc_rs::ECDSA_P384_SHA384,
            webpki::aws_lc_rs::ECDSA_P384_SHA256,
            webpki::aws_lc_rs::ECDSA_P256_SHA384,
        ],
        &anchors,
        &inter,
        when,
        webpki::KeyUsage::required(CODE_SIGNING),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            format!("certificate: not valid at the logged time ({}): {e}", time)
        }
        _ => format!("certificate: does not chain to a trusted Fulcio root at the logged time: {e}"),
    })?;
    let mut checked = vec!["certificate chain"];
    if !ignore_sct {
        let issuer = leaf.tbs_certificate().issuer().to_der().map_err(|e| e.to_string())?;
        let issuer_spki = others
            .iter()
            .filter_map(|d| x509_cert::Certificate::from_der(d).ok())
            .find(|c| c.tbs_certificate().subject().to_der().ok().as_deref() == Some(issuer.as_slice()))
            .and_then(|c| c.tbs_certificate().subject_public_key_info().to_der().ok())
            .ok_or("SCT: the certificate's issuer is not among the trusted certificates")?;
        trust.verify_scts(&leaf_der, &issuer_spki)?;
        checked.push("SCT");
    }
    let (identity, issuer) = identity_of(&leaf).map_err(|e| e.to_string())?;
    if !policy.identity.matches(&identity) {
        return Err(format!("identity: signed by {identity}, not {}", policy.identity).into());
    }
    checked.push("identity");
    let issuer = issuer.unwrap_or_else(|| "an unknown issuer".into());
    if !policy.issuer.matches(&issuer) {
        return Err(format!("issuer: issued for {issuer}, not {}", policy.issuer).into());
    }
    checked.push("issuer");
    Ok(checked)
}

/// The public key a certificate (PEM) certifies.
pub fn certificate_key(pem: &str) -> Result<CosignVerificationKey, super::Rejected> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("certificate: not PEM: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(|e| e.to_string())?;
    Ok(CosignVerificationKey::try_from_der(&spki).map_err(|e| format!("certificate: its key: {e}"))?)
}
