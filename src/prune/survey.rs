//! What one repository holds, as prune sees it: its tagged images (newest first, `order`),
//! their index children and blobs, and the signature, attestation and referrer manifests tagged
//! after an image (`sha256-<hex>.sig|.att|.sbom`, the referrers fallback `sha256-<hex>`).

use std::collections::HashMap;

use serde_json::Value;

use super::Kind;
use crate::order::{self, Git, Origin};
use crate::registry::{Client, RegistryError};
use crate::sign::Verifier;
use crate::types::Digest;

/// More tags than this and the repository is not pruned: a tag not read could point at an
/// image this prune would delete.
pub const MAX_TAGS: usize = 2000;

/// A tagged image.
#[derive(Debug, Clone)]
pub struct Entry {
    pub digest: Digest,
    pub tags: Vec<String>,
    /// An index's manifests.
    pub children: Vec<Digest>,
    /// An index some of whose manifests are gone (a prune interrupted between its children
    /// and itself): it cannot be pulled, whatever its age.
    pub broken: bool,
    pub origin: Origin,
    /// When the registry says it was pushed (GHCR, ECR Public, Docker Hub).
    pub pushed: Option<String>,
}

/// A manifest a service's own API lists (GHCR's package versions, ECR Public's images): its
/// digest, tags and when it was pushed (RFC 3339).
#[derive(Debug, Clone)]
pub struct Listed {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub created_at: Option<String>,
}

/// A signature, attestation or referrer of an image.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub digest: Digest,
    pub kind: Kind,
    pub tags: Vec<String>,
    pub subject: Digest,
    /// Whether the image it belongs to is in the repository.
    pub subject_present: bool,
    pub what: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Newest first.
    pub images: Vec<Entry>,
    pub artifacts: Vec<Artifact>,
    /// Each image and child manifest's blobs (config and layers) with their sizes.
    pub blobs: HashMap<Digest, Vec<(Digest, u64)>>,
    /// Manifests no tag, tagged index or signature tag refers to, with when they were pushed
    /// (listed by GHCR's and ECR's APIs; a registry's API cannot list them).
    pub untagged: Vec<(Digest, Option<String>)>,
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// A manifest's blobs: its config and layers.
fn blobs_of(m: &Value) -> Vec<(Digest, u64)> {
    let one = |d: &Value| Some((d.get("digest")?.as_str()?.parse::<Digest>().ok()?, d.get("size")?.as_u64()?));
    m.get("config")
        .and_then(one)
        .into_iter()
        .chain(m.get("layers").and_then(Value::as_array).into_iter().flatten().filter_map(one))
        .collect()
}

/// The subject and what an artifact tag is (`sha256-<hex>.sig` → signature).
fn artifact_tag(tag: &str) -> Option<(Digest, &'static str)> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, what) = match rest.split_once('.') {
        Some((hex, "sig")) => (hex, "signature"),
        Some((hex, "att")) => (hex, "attestation"),
        Some((hex, "sbom")) => (hex, "SBOM"),
        Some(_) => return None,
        None => (rest, "referrers index"),
    };
    Some((format!("sha256:{hex}").parse().ok()?, what))
}

/// Reads the repository `path` (the client's).
pub async fn survey(
    client: &Client,
    path: &str,
    verifier: Option<&Verifier>,
    git: &Git,
) -> Result<Survey, RegistryError> {
    let tags = client.tags(path).await?;
    if tags.len() > MAX_TAGS {
        return Err(RegistryError::Refused {
            registry: client.registry().to_string(),
            message: format!("{path} has {} tags, more than the {MAX_TAGS} a prune reads: not pruned", tags.len()),
        });
    }
    let mut out = Survey::default();
    let (artifact, image): (Vec<String>, Vec<String>) = tags.into_iter().partition(|t| artifact_tag(t).is_some());
    let artifact_tags = artifact.into_iter().filter_map(|t| Some((t.clone(), artifact_tag(&t)?))).collect();
    let images = by_digest(client, path, image).await?;
    let mut entries = Vec::new();
    for (digest, tags, m) in images {
        entries.push(entry(client, path, (digest, tags, m), verifier, &mut out).await?);
    }
    out.images = order::newest_first(entries, |e| &e.origin, git).await;
    artifacts(client, path, artifact_tags, (&mut out, false)).await?;
    Ok(out)
}

/// `tags` of the client's repository grouped by the manifest each points at (read once): its
/// digest, its tags, the manifest as JSON. A tag gone meanwhile is left out.
pub async fn by_digest(
    client: &Client,
    path: &str,
    tags: Vec<String>,
) -> Result<Vec<(Digest, Vec<String>, Value)>, RegistryError> {
    let mut out: Vec<(Digest, Vec<String>, Value)> = Vec::new();
    for tag in tags {
        let Some(bytes) = client.manifest(path, &tag).await? else { continue };
        let digest = Digest::of(&bytes);
        match out.iter_mut().find(|(d, _, _)| d == &digest) {
            Some((_, t, _)) => t.push(tag),
            None => out.push((digest, vec![tag], json(&bytes))),
        }
    }
    Ok(out)
}

/// A tagged image: its children (an index's), their blobs and its own, its origin.
async fn entry(
    client: &Client,
    path: &str,
    (digest, tags, m): (Digest, Vec<String>, Value),
    verifier: Option<&Verifier>,
    out: &mut Survey,
) -> Result<Entry, RegistryError> {
    let (mut children, mut broken) = (Vec::new(), false);
    for c in m.get("manifests").and_then(Value::as_array).into_iter().flatten() {
        let Some(d) = c.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else { continue };
        match client.manifest(path, d.as_str()).await? {
            Some(bytes) => {
                out.blobs.insert(d.clone(), blobs_of(&json(&bytes)));
            }
            None => broken = true,
        }
        children.push(d);
    }
    out.blobs.insert(digest.clone(), blobs_of(&m));
    // The manifest read above, not read again.
    let origin = order::read_with(client, path, (&digest, Some(&m)), verifier).await;
    Ok(Entry { digest, tags, children, broken, origin, pushed: None })
}

/// A GHCR package's versions or an ECR Public repository's images (from the service's API,
/// with their tags and creation times) as the survey of a registry's tags; the manifests are read from the registry. Versions with no
/// tag that no tagged index lists and no signature names are `untagged`.
pub async fn survey_versions(
    client: &Client,
    path: &str,
    versions: &[Listed],
    verifier: Option<&Verifier>,
    git: &Git,
) -> Result<Survey, RegistryError> {
    let mut out = Survey::default();
    let mut entries = Vec::new();
    let mut artifact_tags = Vec::new();
    for v in versions {
        let (artifact, image): (Vec<&String>, Vec<&String>) = v.tags.iter().partition(|t| artifact_tag(t).is_some());
        artifact_tags.extend(artifact.into_iter().filter_map(|t| Some((t.clone(), artifact_tag(t)?))));
        if image.is_empty() {
            continue;
        }
        // A tagged version that cannot be read would hide its children and referrers, which
        // would then look untagged: not pruned.
        let Some(bytes) = client.manifest(path, v.digest.as_str()).await? else {
            return Err(RegistryError::Refused {
                registry: client.registry().to_string(),
                message: format!("{path}: the listed version {} cannot be read: not pruned", v.digest),
            });
        };
        let tags = image.into_iter().cloned().collect();
        let mut e = entry(client, path, (v.digest.clone(), tags, json(&bytes)), verifier, &mut out).await?;
        // The registry's own creation time when the config has none; and when it was pushed.
        if e.origin.created.is_none() {
            e.origin.created = v.created_at.clone();
        }
        e.pushed = v.created_at.clone();
        entries.push(e);
    }
    out.images = order::newest_first(entries, |e| &e.origin, git).await;
    artifacts(client, path, artifact_tags, (&mut out, true)).await?;
    let listed: std::collections::HashSet<&Digest> = out
        .images
        .iter()
        .flat_map(|e| e.children.iter().chain([&e.digest]))
        .chain(out.artifacts.iter().map(|a| &a.digest))
        .collect();
    out.untagged = versions
        .iter()
        .filter(|v| v.tags.is_empty() && !listed.contains(&v.digest))
        .map(|v| (v.digest.clone(), v.created_at.clone()))
        .collect();
    Ok(out)
}

/// The artifact tags' manifests, and the referrers a fallback index lists.
async fn artifacts(
    client: &Client,
    path: &str,
    tags: Vec<(String, (Digest, &'static str))>,
    (out, strict): (&mut Survey, bool),
) -> Result<(), RegistryError> {
    let mut present: HashMap<Digest, bool> = HashMap::new();
    for (tag, (subject, what)) in tags {
        // Listed by a service's API but unreadable: its referrers would look untagged.
        let Some(bytes) = client.manifest(path, &tag).await? else {
            if strict {
                return Err(RegistryError::Refused {
                    registry: client.registry().to_string(),
                    message: format!("{path}: the listed tag {tag} cannot be read: not pruned"),
                });
            }
            continue;
        };
        let digest = Digest::of(&bytes);
        let known = out.images.iter().any(|e| e.digest == subject || e.children.contains(&subject));
        let subject_present = match present.get(&subject) {
            Some(p) => *p,
            None => {
                let p = known || client.has_manifest(&subject).await?;
                present.insert(subject.clone(), p);
                p
            }
        };
        if what == "referrers index" {
            for r in json(&bytes).get("manifests").and_then(Value::as_array).into_iter().flatten() {
                let Some(d) = r.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
                    continue;
                };
                out.artifacts.push(Artifact {
                    digest: d,
                    kind: Kind::Referrer,
                    tags: Vec::new(),
                    subject: subject.clone(),
                    subject_present,
                    what: "referrer",
                });
            }
        }
        out.artifacts.push(Artifact { digest, kind: Kind::Signature, tags: vec![tag], subject, subject_present, what });
    }
    Ok(())
}
