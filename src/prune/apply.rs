//! Deleting what `decide` said to delete, image by image, oldest first: its index children no
//! kept index shares, then the image, then its signatures and referrers; last, signatures left
//! by an interrupted prune. Killed at any point, every kept image is whole (nothing kept is
//! ever deleted) and what is left is deleted by the next prune: a doomed image is still tagged
//! until its own DELETE, and a signature without its image is an orphan the next survey finds.

use std::collections::BTreeSet;

use super::{Action, Kind, Survey, Verdict};
use crate::types::Digest;

/// What `apply` deleted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    pub deleted: usize,
    /// Deletes of manifests already gone (another prune, or the registry removing a child).
    pub already_gone: usize,
    /// Deletes the registry refused for a reason of its own, kept (GHCR: a package's last
    /// tagged version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(Digest, String)>,
}

/// What one delete did.
pub enum Deleted {
    Done,
    Gone,
    Refused(String),
}

/// Where manifests are deleted: the registry's API, or a service's own (GHCR's versions).
pub trait Deleter {
    fn delete(&self, digest: &Digest) -> impl std::future::Future<Output = anyhow::Result<Deleted>> + Send;
}

impl Deleter for crate::registry::Client {
    async fn delete(&self, digest: &Digest) -> anyhow::Result<Deleted> {
        Ok(if self.delete_manifest(digest).await? { Deleted::Done } else { Deleted::Gone })
    }
}

/// Deletes every manifest `verdicts` marks, in the order above. With `image_first` (a service
/// that may refuse a delete: GHCR, Docker Hub), the image goes before its children and
/// signatures, and an image it refuses keeps them.
pub async fn apply(
    client: &impl Deleter,
    survey: &Survey,
    verdicts: &[Verdict],
    image_first: bool,
) -> anyhow::Result<Applied> {
    // A manifest kept under any name is never deleted under another.
    let kept: BTreeSet<&Digest> = verdicts.iter().filter(|v| v.action == Action::Keep).map(|v| &v.digest).collect();
    let doomed: BTreeSet<&Digest> = verdicts
        .iter()
        .filter(|v| v.action == Action::Delete && !kept.contains(&v.digest))
        .map(|v| &v.digest)
        .collect();
    let mut done: BTreeSet<Digest> = BTreeSet::new();
    let mut refused: BTreeSet<Digest> = BTreeSet::new();
    let mut out = Applied::default();
    for image in survey.images.iter().rev().filter(|e| doomed.contains(&e.digest)) {
        let children: Vec<Digest> = image.children.iter().filter(|c| doomed.contains(c)).cloned().collect();
        let subjects: BTreeSet<&Digest> = image.children.iter().chain([&image.digest]).collect();
        let signatures: Vec<Digest> = verdicts
            .iter()
            .filter(|v| matches!(v.kind, Kind::Signature | Kind::Referrer) && doomed.contains(&v.digest))
            .filter(|v| v.subject.as_ref().is_some_and(|s| subjects.contains(s)))
            .map(|v| v.digest.clone())
            .collect();
        let mut order = if image_first { vec![image.digest.clone()] } else { children.clone() };
        order.extend(if image_first { children } else { vec![image.digest.clone()] });
        order.extend(signatures);
        for d in order {
            if refused.contains(&image.digest) {
                break;
            }
            if let Some((d, result)) = once(client, &mut done, d).await? {
                if matches!(result, Deleted::Refused(_)) && d == image.digest {
                    refused.insert(d.clone());
                }
                tally(&mut out, Some((d, result)));
            }
        }
    }
    // Orphans: signatures whose image an interrupted prune deleted, and anything else marked
    // (not what belongs to an image the service refused to delete).
    for v in verdicts.iter().filter(|v| doomed.contains(&v.digest)) {
        if v.subject.as_ref().is_some_and(|s| refused.contains(s)) {
            continue;
        }
        let r = once(client, &mut done, v.digest.clone()).await?;
        tally(&mut out, r);
    }
    Ok(out)
}

/// Deletes `d` unless it was already asked for.
async fn once(
    client: &impl Deleter,
    done: &mut BTreeSet<Digest>,
    d: Digest,
) -> anyhow::Result<Option<(Digest, Deleted)>> {
    if !done.insert(d.clone()) {
        return Ok(None);
    }
    let deleted = client.delete(&d).await?;
    if matches!(deleted, Deleted::Done) {
        tracing::info!("deleted {d}");
    }
    Ok(Some((d, deleted)))
}

fn tally(out: &mut Applied, r: Option<(Digest, Deleted)>) {
    match r {
        Some((_, Deleted::Done)) => out.deleted += 1,
        Some((_, Deleted::Gone)) => out.already_gone += 1,
        Some((d, Deleted::Refused(why))) => out.refused.push((d, why)),
        None => {}
    }
}
