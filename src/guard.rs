//! No accidental rollback: before a run moves a tag that already exists, or a RunPod template
//! (and the endpoints that follow it), the image it holds is compared with this run's
//! (`order`). A newer one stays where it is and the run is partial; one of the same commit
//! stays too (a re-run is a no-op); `--allow-rollback` moves anyway.

use crate::image::Image;
use crate::order::{self, Decision, Git, Held, Origin};
use crate::push::Destination;
use crate::registry::Client;
use crate::sign::Verifier;
use crate::types::Digest;

/// What the comparison needs: the policy's verifier (signatures are believed only when they
/// verify), the checkout, this run's provenance, and whether rolling back is allowed.
pub struct Guard<'a> {
    pub verifier: Option<&'a Verifier>,
    pub git: Git,
    pub provenance: &'a crate::sign::provenance::Annotations,
    pub allow_rollback: bool,
}

impl Guard<'_> {
    /// Whether a reference holding `held` in the client's repository may move to `image`.
    pub async fn decide(&self, client: &Client, path: &str, held: &Digest, new: &Origin) -> (Origin, Decision) {
        let origin = order::read(client, path, held, self.verifier).await;
        let decision = order::decide((held, &origin), new, &self.git, self.allow_rollback).await;
        (origin, decision)
    }
}

/// Before a push: each tag of `dest` that holds another image is compared with this run's;
/// those that must not move are taken out of `dest.tags` (the manifest still goes in). Returns
/// what was found, for the report. A registry that refuses to authenticate fails the target
/// here, as the push would (asking twice would double the wait on one that hangs).
pub async fn tags(
    guard: &Guard<'_>,
    image: &Image,
    dest: &mut Destination,
) -> Result<Vec<Held>, crate::registry::RegistryError> {
    let client = dest.access.client(&dest.path)?;
    client.authenticate().await?;
    let found = inspect(guard, image, (&client, &dest.path), &dest.tags).await;
    for (tag, moves) in found.iter().map(|(h, moves)| (&h.tag, *moves)) {
        if !moves {
            dest.tags.retain(|t| t != tag);
        }
    }
    Ok(found.into_iter().map(|(h, _)| h).collect())
}

/// What a run would do with each of `tags` in the client's repository that holds another
/// image than `image` (each with whether it moves).
pub async fn inspect(
    guard: &Guard<'_>,
    image: &Image,
    (client, path): (&Client, &str),
    tags: &[String],
) -> Vec<(Held, bool)> {
    // A docker source's digest is known once it is pushed: every existing tag is compared.
    let known = image.deferred.is_none().then(|| image.root.digest.clone());
    let mut new = None;
    let mut out = Vec::new();
    for tag in tags {
        if tag.starts_with("sha256:") {
            continue;
        }
        let held = match client.resolve(tag).await {
            Ok(Some(d)) => d.digest,
            _ => continue,
        };
        if known.as_ref() == Some(&held) {
            continue;
        }
        let new = match &new {
            Some(n) => n,
            None => new.insert(order::this_run(image, guard.provenance).await),
        };
        let (_, decision) = guard.decide(client, path, &held, new).await;
        // Only a plain move forward goes unrecorded.
        if let Some(h) = decision.record(tag, &held) {
            tracing::warn!("tag {tag}: {}", h.reason);
            out.push((h, decision.moves()));
        }
    }
    out
}

/// `publish plan`, when it measures: each target's tags that hold another image, and what a
/// run would do with them, as the run decides (read-only; targets whose credentials are not
/// there are left unsaid, unless `--measure`).
pub async fn look(
    plan: &mut crate::plan::Plan,
    images: &std::collections::HashMap<&str, &Image>,
    (env, scope, config): (&crate::credentials::Env, crate::plan::Measure, &crate::http::ClientConfig),
    guard: &Guard<'_>,
) {
    if scope == crate::plan::Measure::Nothing {
        return;
    }
    for img in &mut plan.images {
        let Some(image) = images.get(img.id.as_str()) else { continue };
        for t in &mut img.targets {
            let credential = t.credentials.resolve(env).ok().and_then(|c| c.credential());
            if scope.need_credentials() && credential.is_none() {
                continue;
            }
            let dest = crate::execute::destination(t, credential, *config);
            let Ok(client) = dest.access.client(&dest.path) else { continue };
            let client = client.with_scope(&format!("repository:{}:pull", dest.path));
            if let Err(e) = client.authenticate().await {
                tracing::warn!(target = %t.id, "the tags the repository holds were not compared: {e}");
                continue;
            }
            t.held = inspect(guard, image, (&client, &dest.path), &t.tags).await.into_iter().map(|(h, _)| h).collect();
        }
    }
}

/// A template's image reference split: `HOST/REPO[:TAG][@DIGEST]` → (`HOST/REPO`, tag, digest).
pub fn split_reference(image: &str) -> (String, Option<String>, Option<Digest>) {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, d.parse::<Digest>().ok()),
        None => (image, None),
    };
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].split_once(':') {
        Some((last, tag)) => (format!("{}{last}", &name[..slash]), Some(tag.to_string()), digest),
        None => (name.to_string(), None, digest),
    }
}

/// The digest a reference split by `split_reference` names in the client's repository: its
/// own, else what its tag (`latest` when it has none, as Docker reads it) points at.
pub async fn digest_of(
    client: &Client,
    (tag, digest): (Option<String>, Option<Digest>),
) -> Result<Option<Digest>, crate::registry::RegistryError> {
    match digest {
        Some(d) => Ok(Some(d)),
        None => Ok(client.resolve(tag.as_deref().unwrap_or("latest")).await?.map(|d| d.digest)),
    }
}

/// Whether RunPod template `name`, pinned to `target`'s repository (read with `client`), may
/// move to this run's `image`, pushed as `digest`.
pub async fn template_at(
    guard: &Guard<'_>,
    (rp, name): (&crate::runpod::Client, &str),
    (client, target): (&Client, &crate::plan::TargetPlan),
    (image, digest): (&Image, &Digest),
) -> Decision {
    let current = match rp.template_image(name).await {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!("template {name}: its current image could not be read ({e})");
            None
        }
    };
    if current.is_none() {
        return Decision::Move(None);
    }
    let new = order::this_run(image, guard.provenance).await;
    template(guard, (client, &target.path, &target.repository), current.as_deref(), (digest, &new)).await
}

/// What a template that holds `current` (its `image` field) may do when this run brings
/// `new_digest` to `repository` (`HOST/PATH`; `client` reads it).
pub async fn template(
    guard: &Guard<'_>,
    (client, path, repository): (&Client, &str, &str),
    current: Option<&str>,
    (new_digest, new): (&Digest, &Origin),
) -> Decision {
    let Some(current) = current.filter(|c| !c.is_empty()) else { return Decision::Move(None) };
    let (held_repository, tag, digest) = split_reference(current);
    if held_repository != repository {
        return Decision::Move(Some(format!(
            "holds {current}, from another repository than {repository}: cannot tell which is newer: moved"
        )));
    }
    let Ok(Some(held)) = digest_of(client, (tag, digest)).await else { return Decision::Move(None) };
    if &held == new_digest {
        return Decision::Move(None);
    }
    guard.decide(client, path, &held, new).await.1
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repository_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let (r, t, g) = split_reference(&format!("127.0.0.1:5000/ml/app:main@{d}"));
        assert_eq!(
            (r.as_str(), t.as_deref(), g.map(|g| g.to_string())),
            ("127.0.0.1:5000/ml/app", Some("main"), Some(d.clone()))
        );
        let (r, t, g) = split_reference("127.0.0.1:5000/ml/app");
        assert_eq!((r.as_str(), t, g), ("127.0.0.1:5000/ml/app", None, None));
        let (r, t, _) = split_reference("ghcr.io/o/app:v1");
        assert_eq!((r.as_str(), t.as_deref()), ("ghcr.io/o/app", Some("v1")));
    }
}
