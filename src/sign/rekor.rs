//! Rekor v1's API, as cosign uses it: a `hashedrekord` entry for a legacy signature (the hash
//! of the signed payload, the signature, the verifier), a `dsse` v0.0.1 entry for a DSSE
//! envelope (the envelope and its verifier), each answered with the canonicalised body, the
//! signed entry timestamp (SET) and an inclusion proof with its signed checkpoint. An entry
//! that already exists (409) is fetched from the `Location` Rekor names, or through
//! `entries/retrieve`, never an error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::SignError;
use super::tlog::{InclusionProof, LogEntry};
use crate::retry::RetryPolicy;

fn err(e: impl std::fmt::Display) -> SignError {
    SignError::Key(e.to_string())
}

/// A Rekor instance (`rekor_url`).
#[derive(Debug, Clone)]
pub struct Rekor {
    http: reqwest::Client,
    url: String,
    retry: RetryPolicy,
}

impl Rekor {
    pub fn new(url: &str, config: &crate::http::ClientConfig) -> Result<Rekor, SignError> {
        Ok(Rekor {
            http: config.http(None).map_err(err)?,
            url: url.trim_end_matches('/').to_string(),
            retry: config.retry(),
        })
    }

    /// The log's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Logs a signature over `data` as a `hashedrekord` (v0.0.1); `verifier_pem` is the
    /// signer's certificate or public key.
    pub async fn hashedrekord(&self, data: &[u8], signature: &[u8], verifier_pem: &str) -> Result<LogEntry, SignError> {
        self.submit(json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(data))}},
                "signature": {"content": B64.encode(signature), "publicKey": {"content": B64.encode(verifier_pem)}}
            }
        }))
        .await
    }

    /// Logs a DSSE envelope (its JSON text) as a `dsse` (v0.0.1) entry.
    pub async fn dsse(&self, envelope: &str, verifier_pem: &str) -> Result<LogEntry, SignError> {
        self.submit(json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {"proposedContent": {"envelope": envelope, "verifiers": [B64.encode(verifier_pem)]}}
        }))
        .await
    }

    async fn submit(&self, proposed: Value) -> Result<LogEntry, SignError> {
        let retry = self.retry;
        let url = format!("{}/api/v1/log/entries", self.url);
        let resp = crate::retry::send(&retry, "Rekor", || self.http.post(&url).json(&proposed))
            .await
            .map_err(|e| err(format!("Rekor: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::CONFLICT {
            let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
            // Only a path on Rekor's own origin is followed.
            if let Some(path) = location.filter(|l| l.starts_with("/api/v1/log/entries/") && !l.contains("..")) {
                let url = format!("{}{path}", self.url);
                let resp = crate::retry::send(&retry, "Rekor", || self.http.get(&url))
                    .await
                    .map_err(|e| err(format!("Rekor: {e}")))?;
                if resp.status().is_success() {
                    return parse_answer(&read(resp).await?);
                }
            }
            let url = format!("{}/api/v1/log/entries/retrieve", self.url);
            let body = json!({"entries": [proposed]});
            let resp = crate::retry::send(&retry, "Rekor retrieve", || self.http.post(&url).json(&body))
                .await
                .map_err(|e| err(format!("Rekor: {e}")))?;
            let found = read(resp).await?;
            let first =
                found.get(0).cloned().ok_or_else(|| err("Rekor said the entry exists but did not return it"))?;
            return parse_answer(&first);
        }
        if !status.is_success() {
            let v = read(resp).await.unwrap_or(Value::Null);
            let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
            return Err(err(format!("Rekor refused the entry: {status} {message}")));
        }
        parse_answer(&read(resp).await?)
    }
}

async fn read(resp: reqwest::Response) -> Result<Value, SignError> {
    crate::http::json_limited::<Value>(resp, crate::http::MAX_SMALL_BODY).await.map_err(|e| err(format!("Rekor: {e}")))
}

/// Rekor's `{uuid: {body, integratedTime, logID, logIndex, verification}}` answer.
fn parse_answer(v: &Value) -> Result<LogEntry, SignError> {
    let (uuid, e) = v.as_object().and_then(|m| m.iter().next()).ok_or_else(|| err("Rekor answered no entry"))?;
    let proof = e.pointer("/verification/inclusionProof").map(|p| InclusionProof {
        log_index: p.get("logIndex").and_then(Value::as_i64).unwrap_or(-1),
        root_hash: p.get("rootHash").and_then(Value::as_str).and_then(|h| hex::decode(h).ok()).unwrap_or_default(),
        tree_size: p.get("treeSize").and_then(Value::as_i64).unwrap_or(-1),
        hashes: p
            .get("hashes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().and_then(|h| hex::decode(h).ok()))
            .collect(),
        checkpoint: p.get("checkpoint").and_then(Value::as_str).unwrap_or_default().to_string(),
    });
    let body = e.get("body").and_then(Value::as_str).ok_or_else(|| err("Rekor's entry has no body"))?;
    Ok(LogEntry {
        uuid: uuid.clone(),
        body: B64.decode(body).map_err(|_| err("Rekor's entry body is not base64"))?,
        integrated_time: e.get("integratedTime").and_then(Value::as_i64).unwrap_or_default(),
        log_index: e.get("logIndex").and_then(Value::as_i64).unwrap_or_default(),
        log_id: e.get("logID").and_then(Value::as_str).and_then(|h| hex::decode(h).ok()).unwrap_or_default(),
        set: e.pointer("/verification/signedEntryTimestamp").and_then(Value::as_str).and_then(|s| B64.decode(s).ok()),
        proof,
    })
}
