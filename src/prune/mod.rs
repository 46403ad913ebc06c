//! Retention: what `publish prune` keeps and deletes in one repository. `survey` reads the
//! repository (its tags, their manifests, an index's children, the signature and attestation
//! tags cosign and `publish` write, the referrers fallback index), `decide` gives every manifest
//! its verdict and reason, `apply` deletes in an order that leaves every kept image whole at any
//! point it may be killed: an image's index children no kept index shares, then the image, then
//! its signatures; a signature left behind by an interrupted prune has no image and is deleted
//! by the next one.

mod apply;
pub mod services;
mod survey;

pub use apply::{Applied, Deleted, Deleter, apply};
pub use survey::{Listed, Survey, by_digest, survey, survey_versions};

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::order::Origin;
use crate::policy::ResolvedRetention;
use crate::policy::retention::glob_matches;
use crate::types::Digest;

crate::word_enum! {
    /// What a manifest is, to prune.
    pub enum Kind {
        Image => "image",
        /// An image manifest an index lists.
        Child => "child",
        /// A `.sig`, `.att` or `.sbom` tag, or the referrers fallback index, of an image.
        Signature => "signature",
        /// A manifest the referrers fallback index lists (a bundle, an attestation).
        Referrer => "referrer",
        /// A version nothing tagged refers to (GHCR).
        Untagged => "untagged",
    }
}

crate::word_enum! {
    pub enum Action {
        Keep => "keep",
        Delete => "delete",
    }
}

/// One manifest's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub digest: Digest,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub action: Action,
    pub reason: String,
    /// For an image or child to delete: the bytes of blobs no kept manifest shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frees: Option<u64>,
    /// The image this signature or referrer belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// Images something outside the registry still runs: digest → who (`RunPod template NAME`),
/// and the images this run pushed.
pub type InUse = HashMap<Digest, String>;

/// How old an image is: the younger of its config's `created` and when the registry says it
/// was pushed (a week-old build pushed a minute ago is a minute old); `None`: unknown.
fn age(origin: &Origin, pushed: Option<&str>, now: i64) -> Option<Duration> {
    let at = |t: Option<&str>| t.and_then(crate::sign::trust::parse_rfc3339);
    let newest = at(origin.created.as_deref()).max(at(pushed))?;
    Some(Duration::from_secs(now.saturating_sub(newest).max(0) as u64))
}

fn days(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{} d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{} min", s / 60)
    }
}

/// Why an image (the `rank`-th newest) is kept, or `None` to delete it.
fn keep_image(s: &survey::Entry, rank: usize, r: &ResolvedRetention, in_use: &InUse, now: i64) -> Option<String> {
    if let Some(tag) = s.tags.iter().find(|t| r.keep_tags.iter().any(|g| glob_matches(g, t))) {
        return Some(format!("tag {tag} (keep_tags)"));
    }
    if rank < r.keep_last as usize {
        return Some(format!("newest {} (keep_last)", r.keep_last));
    }
    if let Some(who) = in_use.get(&s.digest) {
        return Some(format!("{who} runs it"));
    }
    if s.broken {
        return None;
    }
    let age = age(&s.origin, s.pushed.as_deref(), now);
    if let (Some(within), Some(a)) = (r.keep_within, age)
        && a < within
    {
        return Some(format!("within {} (keep_within)", days(within)));
    }
    match age {
        None => Some("age unknown (its config has no created time): never deleted".into()),
        Some(a) if a < r.min_age => Some(format!("younger than {} (min_age)", days(r.min_age))),
        Some(_) => None,
    }
}

/// Every manifest of the survey with its verdict, images newest first.
pub fn decide(s: &Survey, r: &ResolvedRetention, in_use: &InUse, now: i64) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut kept: BTreeSet<Digest> = BTreeSet::new();
    let mut deleted: BTreeSet<Digest> = BTreeSet::new();
    for (rank, e) in s.images.iter().enumerate() {
        let why = keep_image(e, rank, r, in_use, now);
        let action = if why.is_some() { Action::Keep } else { Action::Delete };
        let reason = why.unwrap_or_else(|| {
            if e.broken {
                return "an index whose manifests are gone (left by an interrupted prune)".into();
            }
            let within = r.keep_within.map(|w| format!(", not within {}", days(w))).unwrap_or_default();
            format!("older than the newest {}{within}, no kept tag, nothing runs it", r.keep_last)
        });
        if action == Action::Keep {
            kept.insert(e.digest.clone())
        } else {
            deleted.insert(e.digest.clone())
        };
        out.push(verdict(e.digest.clone(), Kind::Image, e.tags.clone(), action, reason));
    }
    // Children: kept with any kept index; with only deleted ones, deleted if `untagged: delete`.
    let mut parents: std::collections::BTreeMap<&Digest, Vec<&Digest>> = std::collections::BTreeMap::new();
    for e in &s.images {
        for c in &e.children {
            parents.entry(c).or_default().push(&e.digest);
        }
    }
    // A platform image tagged on its own that a kept index lists is kept with the index.
    for v in out.iter_mut().filter(|v| v.action == Action::Delete) {
        if let Some(p) = parents.get(&v.digest).and_then(|of| of.iter().find(|p| kept.contains(**p))) {
            v.action = Action::Keep;
            v.reason = format!("child of kept index {}", p.short());
            deleted.remove(&v.digest);
            kept.insert(v.digest.clone());
        }
    }
    for (child, of) in parents {
        // A child that is tagged itself has its own verdict above.
        if s.images.iter().any(|e| &e.digest == child) {
            continue;
        }
        let (action, reason) = match of.iter().find(|p| kept.contains(**p)) {
            Some(p) => (Action::Keep, format!("child of kept index {}", p.short())),
            None if let Some(who) = in_use.get(child) => (Action::Keep, format!("{who} runs it")),
            None if r.delete_untagged => (Action::Delete, "child of deleted indexes only (untagged: delete)".into()),
            None => (Action::Keep, "child of deleted indexes only; untagged: keep".into()),
        };
        if action == Action::Keep {
            kept.insert(child.clone())
        } else {
            deleted.insert(child.clone())
        };
        out.push(verdict(child.clone(), Kind::Child, Vec::new(), action, reason));
    }
    for a in &s.artifacts {
        let (action, reason) = if kept.contains(&a.subject) {
            (Action::Keep, format!("{} of kept image {}", a.what, a.subject.short()))
        } else if deleted.contains(&a.subject) {
            (Action::Delete, format!("{} of deleted image {}", a.what, a.subject.short()))
        } else if !a.subject_present {
            (
                Action::Delete,
                format!("{} of {}, which is gone (left by an interrupted prune)", a.what, a.subject.short()),
            )
        } else {
            (Action::Keep, format!("{} of untagged image {}, still there", a.what, a.subject.short()))
        };
        let mut v = verdict(a.digest.clone(), a.kind, a.tags.clone(), action, reason.clone());
        v.subject = Some(a.subject.clone());
        out.push(v);
    }
    for (d, pushed) in &s.untagged {
        let young = age(&Origin::default(), pushed.as_deref(), now).is_none_or(|a| a < r.min_age);
        let (action, reason) = match in_use.get(d) {
            Some(who) => (Action::Keep, format!("{who} runs it")),
            None if !r.delete_untagged => (Action::Keep, "untagged (untagged: keep)".into()),
            // Untagged and young: a push in flight (its index not tagged yet).
            None if young => {
                (Action::Keep, format!("untagged, younger than {} or of unknown age (min_age)", days(r.min_age)))
            }
            None => {
                (Action::Delete, "untagged: no kept tag, index or signature refers to it (untagged: delete)".into())
            }
        };
        out.push(verdict(d.clone(), Kind::Untagged, Vec::new(), action, reason));
    }
    // A manifest that is kept under one name is never deleted under another (an SBOM shared by
    // two images, identical fallback indexes).
    let keep: BTreeSet<Digest> = out.iter().filter(|v| v.action == Action::Keep).map(|v| v.digest.clone()).collect();
    for v in out.iter_mut().filter(|v| v.action == Action::Delete && keep.contains(&v.digest)) {
        v.action = Action::Keep;
        v.reason = format!("{}; but the same manifest is kept elsewhere here", v.reason);
    }
    frees(s, &mut out);
    out
}

fn verdict(digest: Digest, kind: Kind, tags: Vec<String>, action: Action, reason: String) -> Verdict {
    Verdict { digest, kind, tags, action, reason, frees: None, subject: None }
}

/// The bytes each deleted image or child frees: its blobs no kept manifest refers to (each
/// blob counted once).
fn frees(s: &Survey, out: &mut [Verdict]) {
    let keeps: BTreeSet<&Digest> = out.iter().filter(|v| v.action == Action::Keep).map(|v| &v.digest).collect();
    let shared: BTreeSet<&Digest> =
        s.blobs.iter().filter(|(m, _)| keeps.contains(m)).flat_map(|(_, b)| b.iter().map(|(d, _)| d)).collect();
    let mut counted: BTreeSet<Digest> = BTreeSet::new();
    for v in out.iter_mut().filter(|v| v.action == Action::Delete && matches!(v.kind, Kind::Image | Kind::Child)) {
        let mut n = 0;
        for (d, size) in s.blobs.get(&v.digest).into_iter().flatten() {
            if !shared.contains(d) && counted.insert(d.clone()) {
                n += size;
            }
        }
        v.frees = Some(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use survey::{Artifact, Entry};

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn image(c: char, tags: &[&str], children: &[char], created: &str) -> Entry {
        Entry {
            digest: d(c),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            children: children.iter().map(|&x| d(x)).collect(),
            broken: false,
            origin: Origin { created: Some(created.into()), ..Default::default() },
            pushed: None,
        }
    }

    fn retention() -> ResolvedRetention {
        ResolvedRetention {
            keep_last: 1,
            keep_within: None,
            keep_tags: vec!["latest".into()],
            delete_untagged: true,
            min_age: Duration::from_secs(3600),
            on_run: false,
        }
    }

    fn action(v: &[Verdict], c: char) -> (Action, String) {
        let found: Vec<_> = v.iter().filter(|x| x.digest == d(c)).collect();
        assert!(!found.is_empty(), "{c}: {v:?}");
        // Every verdict of one digest agrees.
        assert!(found.iter().all(|x| x.action == found[0].action), "{c}: {found:?}");
        (found[0].action, found[0].reason.clone())
    }

    #[test]
    fn a_kept_index_keeps_its_tagged_platform_image_and_a_shared_manifest_stays() {
        let old = "2020-01-01T00:00:00Z";
        let s = Survey {
            // newest first: b (newest 1), the kept index `latest` listing a and c, a tagged alone.
            images: vec![
                image('b', &["v9"], &[], "2020-02-01T00:00:00Z"),
                image('e', &["latest"], &['a', 'c'], old),
                image('a', &["v3-amd64"], &[], old),
            ],
            artifacts: vec![
                Artifact {
                    digest: d('f'),
                    kind: Kind::Signature,
                    tags: vec!["x.sbom".into()],
                    subject: d('b'),
                    subject_present: true,
                    what: "SBOM",
                },
                Artifact {
                    digest: d('f'),
                    kind: Kind::Signature,
                    tags: vec!["y.sbom".into()],
                    subject: d('9'),
                    subject_present: false,
                    what: "SBOM",
                },
            ],
            untagged: vec![(d('7'), Some(old.into())), (d('8'), None), (d('6'), Some(old.into()))],
            ..Default::default()
        };
        let mut in_use = InUse::new();
        in_use.insert(d('6'), "RunPod template t".into());
        let v = decide(&s, &retention(), &in_use, 1_700_000_000);
        assert_eq!(action(&v, 'a'), (Action::Keep, format!("child of kept index {}", d('e').short())));
        assert_eq!(action(&v, 'c').0, Action::Keep);
        assert_eq!(action(&v, 'f').0, Action::Keep, "an SBOM shared with a kept image stays");
        assert_eq!(action(&v, '7').0, Action::Delete);
        assert!(action(&v, '8').1.contains("min_age"), "an untagged manifest of unknown age stays");
        assert_eq!(action(&v, '6'), (Action::Keep, "RunPod template t runs it".into()));
    }
}
