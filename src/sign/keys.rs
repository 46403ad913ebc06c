//! cosign key pairs: load an encrypted `cosign.key` (`ENCRYPTED SIGSTORE PRIVATE KEY`, from a
//! path or `env://VAR`, password from `COSIGN_PASSWORD`) and generate new ones, with the
//! `sigstore` crate's implementation of cosign's format (scrypt + NaCl secretbox).

use std::path::Path;

use base64::Engine;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, SigningScheme};

use super::SignError;
use crate::types::Secret;

/// A signer from a cosign private key.
pub struct KeySigner {
    signer: SigStoreSigner,
    public_der: Vec<u8>,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySigner(***)")
    }
}

/// The variable cosign reads a key's password from, and `publish`'s default too.
pub const COSIGN_PASSWORD: &str = "COSIGN_PASSWORD";

impl KeySigner {
    /// Loads `key_ref`: a path, or `env://VAR` holding the PEM (looked up in `env`).
    pub fn load(key_ref: &str, password: &Secret, env: &crate::credentials::Env) -> Result<KeySigner, SignError> {
        let pem =
            match key_ref.strip_prefix("env://") {
                Some(var) => Secret::new(env.get(var).cloned().ok_or_else(|| {
                    SignError::Key(format!("environment variable {var} (the signing key) is not set"))
                })?),
                None => Secret::new(
                    String::from_utf8(
                        crate::http::read_file_limited(std::path::Path::new(key_ref), 64 * 1024)
                            .map_err(|e| SignError::Key(format!("cannot read the signing key: {e}")))?,
                    )
                    .map_err(|_| SignError::Key(format!("the signing key {key_ref} is not PEM text")))?,
                ),
            };
        let pair = SigStoreKeyPair::from_encrypted_pem(pem.expose().as_bytes(), password.expose().as_bytes()).map_err(
            |_| {
                SignError::Key(format!(
                    "cannot decrypt the signing key {key_ref}: wrong COSIGN_PASSWORD, or not a cosign key"
                ))
            },
        )?;
        Self::from_pair(&pair)
    }

    fn from_pair(pair: &SigStoreKeyPair) -> Result<KeySigner, SignError> {
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| SignError::Key(format!("the key cannot sign with ECDSA P-256: {e}")))?;
        let public_der = pair.public_key_to_der().map_err(|e| SignError::Key(e.to_string()))?;
        Ok(KeySigner { signer, public_der })
    }

    /// An ASN.1 DER ECDSA P-256 signature over SHA-256 of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer.sign(msg).map_err(|e| SignError::Key(format!("signing failed: {e}")))
    }

    pub fn verification_key(&self) -> Result<CosignVerificationKey, SignError> {
        CosignVerificationKey::from_der(&self.public_der, &SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| SignError::Key(e.to_string()))
    }

    /// The public key, PEM (what `cosign public-key` prints).
    pub fn public_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.public_der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    /// The bundle's key hint: base64 of SHA-256 of the DER public key.
    pub fn hint(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&self.public_der))
    }
}

/// Loads a public key (`cosign.pub`, PEM).
pub fn load_public(path: &Path) -> Result<CosignVerificationKey, SignError> {
    let pem = crate::http::read_file_limited(path, 64 * 1024)
        .map_err(|e| SignError::Key(format!("cannot read the public key: {e}")))?;
    CosignVerificationKey::try_from_pem(&pem)
        .map_err(|e| SignError::Key(format!("{} is not a public key PEM: {e}", path.display())))
}

/// Writes `cosign.key` (encrypted with `password`, mode 0600) and `cosign.pub` in `dir`,
/// refusing to overwrite either.
pub fn generate(
    dir: &Path,
    password: &Secret,
    force: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf), SignError> {
    let key_path = dir.join("cosign.key");
    let pub_path = dir.join("cosign.pub");
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            return Err(SignError::Key(format!("{} exists: not overwriting it (--force replaces it)", p.display())));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| SignError::Key(format!("cannot create {}: {e}", dir.display())))?;
    let keys = ECDSAKeys::new(EllipticCurve::P256).map_err(|e| SignError::Key(e.to_string()))?;
    let pair = SigStoreKeyPair::ECDSA(keys);
    let private =
        pair.private_key_to_encrypted_pem(password.expose().as_bytes()).map_err(|e| SignError::Key(e.to_string()))?;
    let public = pair.public_key_to_pem().map_err(|e| SignError::Key(e.to_string()))?;
    if force {
        // Only once the new pair exists: a failure above leaves the old one in place.
        for p in [&key_path, &pub_path] {
            let _ = std::fs::remove_file(p);
        }
    }
    write_private(&key_path, private.as_bytes())?;
    std::fs::write(&pub_path, public)
        .map_err(|e| SignError::Key(format!("cannot write {}: {e}", pub_path.display())))?;
    Ok((key_path, pub_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SignError::Key(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes).map_err(|e| SignError::Key(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_in_the_sigstore_loader_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = generate(dir.path(), &Secret::new("pw"), false).unwrap();
        let pem = std::fs::read(&key).unwrap();
        assert!(String::from_utf8_lossy(&pem).starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        // The sigstore crate's cosign loader reads what we wrote, and vice versa.
        let pair = SigStoreKeyPair::from_encrypted_pem(&pem, b"pw").unwrap();
        assert!(SigStoreKeyPair::from_encrypted_pem(&pem, b"wrong").is_err());
        let signer = KeySigner::load(key.to_str().unwrap(), &Secret::new("pw"), &Default::default()).unwrap();
        let sig = signer.sign(b"payload").unwrap();
        let verifier = load_public(&public).unwrap();
        verifier.verify_signature(sigstore::crypto::Signature::Raw(&sig), b"payload").unwrap();
        assert!(verifier.verify_signature(sigstore::crypto::Signature::Raw(&sig), b"other").is_err());
        assert_eq!(pair.public_key_to_pem().unwrap(), std::fs::read_to_string(&public).unwrap());
        assert_eq!(
            std::fs::metadata(&key).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap(),
            0o600
        );
        assert!(generate(dir.path(), &Secret::new("pw"), false).is_err(), "never overwrites");
    }
}
