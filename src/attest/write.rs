//! A run's attestations of one pushed target: the statements (over the pushed manifest and,
//! for an index, its platform manifests) for what the plan lists, signed and written by
//! `sign::attest` right after the signature.

use std::path::PathBuf;

use serde_json::Value;

use super::{Attestation, Subject, Written, provenance, sbom};
use crate::credentials::Env;
use crate::plan::ImagePlan;
use crate::registry::Client;
use crate::sign::{self, Signer};
use crate::types::Digest;

/// What a provenance predicate is made from besides the signer.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// The environment the run started with (GitHub's variables).
    pub env: Env,
    /// The policy's checkout (for the local provenance).
    pub git_dir: Option<PathBuf>,
    /// When the run started, seconds since the epoch.
    pub started: i64,
    /// Each image's SBOM as read and checked before anything was pushed, by image id.
    pub sboms: std::collections::HashMap<String, sbom::Sbom>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The subjects: the pushed manifest, and for an index its platform manifests (not BuildKit's
/// attestation manifests).
async fn subjects(client: &Client, path: &str, repository: &str, digest: &Digest) -> Result<Vec<Subject>, String> {
    let mut out = vec![Subject { name: repository.to_string(), digest: digest.clone() }];
    let bytes = client.manifest(path, digest.as_str()).await.map_err(|e| e.to_string())?;
    let doc: Value = bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    for e in doc.get("manifests").and_then(Value::as_array).into_iter().flatten() {
        if e.pointer("/annotations/vnd.docker.reference.type").is_some() {
            continue;
        }
        if let Some(d) = e.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) {
            out.push(Subject { name: repository.to_string(), digest: d });
        }
    }
    Ok(out)
}

/// The attestations the plan lists for `img`, made now: the provenance of this run, each SBOM
/// as planned (one changed since the plan is refused), with the digests an SBOM names.
type Made = (Attestation, Option<Vec<Digest>>);

fn made(img: &ImagePlan, signer: Signer<'_>, facts: &RunFacts) -> Result<Vec<Made>, String> {
    let mut out = Vec::new();
    for p in &img.attestations {
        match p.kind.as_str() {
            "provenance" => {
                let builder = match signer {
                    Signer::Keyless(session) => Some(session.identity.as_str()),
                    Signer::Key(..) => None,
                };
                let times = provenance::Times { started: facts.started, finished: now() };
                let a = Attestation {
                    predicate_type: p.predicate_type.clone(),
                    predicate: provenance::predicate(&facts.env, builder, facts.git_dir.as_deref(), times),
                    source: "provenance".into(),
                };
                out.push((a, None));
            }
            "sbom" => {
                let file = p.file.clone().unwrap_or_default();
                let s = match facts.sboms.get(&img.id) {
                    Some(s) => s.clone(),
                    None => sbom::load(std::path::Path::new(&file)).map_err(|e| format!("SBOM {file}: {e}"))?,
                };
                if p.file_digest.as_ref().is_some_and(|d| d != &s.digest) {
                    return Err(format!("SBOM {file} changed since the plan was made: make the plan again"));
                }
                let names = s.names.iter().map(|(d, _)| d.clone()).collect();
                let a = Attestation {
                    predicate_type: s.predicate_type.to_string(),
                    predicate: s.document,
                    source: format!("sbom {file}"),
                };
                out.push((a, Some(names)));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Signs and writes the attestations `img` gets, of `subject` as pushed to `path`.
pub async fn write(
    client: &Client,
    path: &str,
    subject: &sign::Subject,
    (signer, format): (Signer<'_>, sign::Format),
    img: &ImagePlan,
    facts: &RunFacts,
) -> Result<Vec<Written>, (Vec<Written>, String)> {
    let list = made(img, signer, facts).map_err(|e| (Vec::new(), e))?;
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let all = subjects(client, path, &subject.repository, &subject.digest).await.map_err(|e| (Vec::new(), e))?;
    let statements: Vec<(Attestation, Vec<u8>)> = list
        .into_iter()
        .map(|(a, names)| {
            let s = super::statement(&about(&all, names.as_deref()), &a);
            (a, s)
        })
        .collect();
    sign::attest::attest(client, path, subject, (signer, format), &statements)
        .await
        .map_err(|(written, e)| (written, e.to_string()))
}

/// The subjects of one attestation: all of them (the provenance: the run pushed them all), or
/// for an SBOM the pushed manifest and the platform manifests it names (syft describes one
/// platform's image; an SBOM naming none is about the pushed manifest only).
fn about(all: &[Subject], names: Option<&[Digest]>) -> Vec<Subject> {
    match names {
        None => all.to_vec(),
        Some(names) => all
            .iter()
            .enumerate()
            .filter(|(i, s)| *i == 0 || names.contains(&s.digest))
            .map(|(_, s)| s.clone())
            .collect(),
    }
}
