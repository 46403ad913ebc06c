//! Which of two images is newer, so that a re-run of an older workflow does not move RunPod or a
//! moving tag back in time. An image's commit comes first from its signature (the `git.sha`
//! annotation `publish` signs, read only from a signature that verifies with the policy's key or
//! identity), else from its `org.opencontainers.image.revision` label or annotation; two commits
//! are ordered by git ancestry in the checkout (`git merge-base --is-ancestor`; a shallow
//! checkout is deepened first). Without a commit on both sides, the configs' `created` times
//! order them. When none of these tells, the order is unknown and said so, never guessed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::registry::Client;
use crate::sign::Verifier;
use crate::types::Digest;

/// The OCI label and annotation naming the source commit.
pub const REVISION: &str = "org.opencontainers.image.revision";

/// Bounds of the configs and manifests read to find an image's origin.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

/// Where an image came from, as far as can be known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The source commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Where the commit was read: `signature`, `revision label` or `this run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_from: Option<&'static str>,
    /// The config's `created` (RFC 3339), when it is a real time (not the epoch of a
    /// reproducible build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Whether a signature verifies with the policy's signing settings (`None`: not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
}

impl Origin {
    /// "from COMMIT" or "created TIME" or "of unknown origin", for messages.
    pub fn describe(&self) -> String {
        match (&self.commit, &self.created) {
            (Some(c), _) => format!("from {}", short(c)),
            (None, Some(t)) => format!("created {t}"),
            (None, None) => "of unknown origin".into(),
        }
    }
}

/// How image `a` relates to image `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    /// Built from the same commit.
    Same,
    /// `a` is older than `b`.
    Older,
    /// `a` is newer than `b`.
    Newer,
    /// Cannot tell, and why.
    Unknown(String),
}

/// The first 12 characters of a commit.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// How `a` relates to `b`: by their commits' ancestry in `git`'s checkout, else by their
/// configs' `created` times.
pub async fn relate(a: &Origin, b: &Origin, git: &Git) -> Relation {
    let mut why_not = None;
    if let (Some(x), Some(y)) = (&a.commit, &b.commit) {
        // A label may hold an abbreviated or upper-case commit.
        let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
        if x.starts_with(&y) || y.starts_with(&x) {
            return Relation::Same;
        }
        match git.relate(&x, &y).await {
            Ok(r) => return r,
            Err(why) => why_not = Some(why),
        }
    }
    let time = |o: &Origin| o.created.as_deref().and_then(crate::sign::trust::parse_rfc3339);
    match (time(a), time(b)) {
        (Some(x), Some(y)) if x < y => Relation::Older,
        (Some(x), Some(y)) if x > y => Relation::Newer,
        _ => Relation::Unknown(why_not.unwrap_or_else(|| {
            "no verified signature or revision label names both images' commits, and their configs' created times do not tell them apart".into()
        })),
    }
}

/// `items` newest first by their origins (`relate`): each goes before the first it is newer
/// than; one whose order is unknown goes after those it cannot be placed before.
pub async fn newest_first<T>(items: Vec<T>, origin: impl Fn(&T) -> &Origin, git: &Git) -> Vec<T> {
    let mut sorted: Vec<T> = Vec::new();
    for item in items {
        let mut at = sorted.len();
        for (i, other) in sorted.iter().enumerate() {
            if relate(origin(&item), origin(other), git).await == Relation::Newer {
                at = i;
                break;
            }
        }
        sorted.insert(at, item);
    }
    sorted
}

/// The origin of `digest` in the client's repository: its verified signature's `git.sha`
/// (with `verifier`), else its revision label; and its config's `created`. What cannot be read
/// is left unknown.
pub async fn read(client: &Client, path: &str, digest: &Digest, verifier: Option<&Verifier>) -> Origin {
    let manifest = client.manifest(path, digest.as_str()).await.ok().flatten().and_then(|b| json(&b));
    read_with(client, path, (digest, manifest.as_ref()), verifier).await
}

/// `read`, for a manifest the caller has read already (`None`: it could not be).
pub async fn read_with(
    client: &Client,
    path: &str,
    (digest, manifest): (&Digest, Option<&Value>),
    verifier: Option<&Verifier>,
) -> Origin {
    let mut out = Origin::default();
    if let Some(v) = verifier {
        match crate::sign::verify(client, path, digest, v, crate::sign::VerifyOptions::default()).await {
            Ok(found) => {
                out.signed = Some(!(found.legacy.is_empty() && found.bundle.is_empty()));
                let sha = found.signatures.iter().filter(|s| s.verified).find_map(|s| s.annotations.get("git.sha"));
                if let Some(sha) = sha.filter(|s| plausible_commit(s)) {
                    out.commit = Some(sha.clone());
                    out.commit_from = Some("signature");
                }
            }
            Err(e) => tracing::debug!(%digest, "its signatures could not be read: {e}"),
        }
    }
    let config = match manifest {
        Some(m) => config_of(client, path, m).await,
        None => (None, None),
    };
    out.with_image(config);
    out
}

impl Origin {
    /// The commit from the image's revision (unless one is known already) and its `created`:
    /// from `(revision, config)`.
    fn with_image(&mut self, (revision, config): (Option<Value>, Option<Value>)) {
        let label = config.as_ref().and_then(|c| c.pointer("/config/Labels").and_then(|l| l.get(REVISION)).cloned());
        if self.commit.is_none()
            && let Some(rev) = clean(label.or(revision))
        {
            self.commit = Some(rev);
            self.commit_from = Some("revision label");
        }
        self.created = config.as_ref().and_then(created);
    }
}

fn json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// A manifest's (or index's) revision annotation.
fn annotated(m: &Value) -> Option<Value> {
    m.pointer(&format!("/annotations/{}", REVISION.replace('/', "~1"))).cloned()
}

/// The revision annotation of `manifest` (or of an index's first platform image) and the
/// config of that image.
async fn config_of(client: &Client, path: &str, manifest: &Value) -> (Option<Value>, Option<Value>) {
    let mut revision = annotated(manifest);
    let mut image = std::borrow::Cow::Borrowed(manifest);
    if let Some(children) = manifest.get("manifests").and_then(Value::as_array) {
        let first = children
            .iter()
            .find(|c| c.pointer("/platform/os").and_then(Value::as_str) != Some("unknown"))
            .and_then(|c| c.get("digest").and_then(Value::as_str));
        let Some(child) = first else { return (revision, None) };
        let Some(m) = client.manifest(path, child).await.ok().flatten().and_then(|b| json(&b)) else {
            return (revision, None);
        };
        revision = revision.or_else(|| annotated(&m));
        image = std::borrow::Cow::Owned(m);
    }
    let config = image.pointer("/config/digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok());
    let config = match config {
        Some(d) => client.get_blob(&d, MAX_CONFIG).await.ok().flatten().and_then(|b| json(&b)),
        None => None,
    };
    (revision, config)
}

/// The origin of this run's image: the commit this run is from (`git.sha` of its provenance),
/// else the image's revision label; and its config's `created`, read from the source.
pub async fn this_run(image: &crate::image::Image, provenance: &crate::sign::provenance::Annotations) -> Origin {
    let mut out = Origin::default();
    if let Some(sha) = provenance.get("git.sha").filter(|s| plausible_commit(s)) {
        out.commit = Some(sha.clone());
        out.commit_from = Some("this run");
    }
    let root = &image.root;
    let manifest = if root.is_index() {
        image.children.iter().find(|c| c.platform.as_ref().is_none_or(|p| p.os != "unknown"))
    } else {
        Some(root)
    };
    let revision = json(&root.bytes).and_then(|m| annotated(&m));
    let config = match manifest.and_then(|m| m.config.as_ref()) {
        Some(d) if d.size <= MAX_CONFIG => read_small(image, d).await,
        _ => None,
    };
    out.with_image((revision, config));
    out
}

/// A config's `created`, when it is a real time (not the epoch of a reproducible build).
fn created(config: &Value) -> Option<String> {
    config
        .get("created")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|t| crate::sign::trust::parse_rfc3339(t).is_some_and(|s| s > 0))
}

/// A small blob of the source as JSON, bounded.
async fn read_small(image: &crate::image::Image, d: &crate::image::oci::Descriptor) -> Option<Value> {
    use tokio::io::AsyncReadExt;
    let reader = image.blob(d, 0).await.ok()?;
    let mut bytes = Vec::new();
    reader.take(MAX_CONFIG).read_to_end(&mut bytes).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A revision value that is a commit (hex, 7 to 64 characters); anything else is no commit.
fn clean(v: Option<Value>) -> Option<String> {
    v.and_then(|v| v.as_str().map(str::to_string)).filter(|s| plausible_commit(s))
}

fn plausible_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Git in the checkout the policy is in.
#[derive(Debug, Clone, Default)]
pub struct Git {
    pub dir: Option<PathBuf>,
    /// Whether a shallow checkout may be deepened (`git fetch --unshallow`); `publish plan`
    /// changes nothing, so it says it cannot tell instead.
    pub may_fetch: bool,
    /// The deepening's outcome, once tried: it is tried once per run.
    deepened: std::sync::Arc<tokio::sync::Mutex<Option<bool>>>,
}

impl Git {
    pub fn new(dir: Option<&Path>) -> Git {
        Git {
            dir: dir.filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf),
            may_fetch: true,
            deepened: Default::default(),
        }
    }

    /// The same checkout, never fetched into.
    pub fn read_only(self) -> Git {
        Git { may_fetch: false, ..self }
    }

    /// Deepens a shallow checkout, once: whether it is whole now.
    async fn deepen(&self) -> bool {
        let mut done = self.deepened.lock().await;
        if let Some(ok) = *done {
            return ok;
        }
        tracing::info!("the checkout at {} is shallow: fetching its history to order two commits", self.shown());
        let ok = self.may_fetch
            && matches!(self.run(&["fetch", "--quiet", "--unshallow"], Duration::from_secs(300)).await, Some((0, _)));
        *done = Some(ok);
        ok
    }

    fn shown(&self) -> String {
        self.dir.as_ref().map_or_else(|| "the working directory".into(), |d| d.display().to_string())
    }

    /// Runs git; `None` when it could not run or timed out, else its exit code and stdout.
    async fn run(&self, args: &[&str], limit: Duration) -> Option<(i32, String)> {
        let mut cmd = tokio::process::Command::new("git");
        if let Some(d) = &self.dir {
            cmd.arg("-C").arg(d);
        }
        // Never a prompt for credentials: a fetch that needs them fails at once.
        cmd.env("GIT_TERMINAL_PROMPT", "0").env("GCM_INTERACTIVE", "never");
        cmd.args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(limit, cmd.output()).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]).trim().to_string();
        Some((out.status.code().unwrap_or(-1), text))
    }

    async fn has(&self, commit: &str) -> bool {
        let spec = format!("{commit}^{{commit}}");
        self.run(&["cat-file", "-e", &spec], Duration::from_secs(30)).await.is_some_and(|(c, _)| c == 0)
    }

    /// Whether `a` is an ancestor of `b` (`None`: git could not tell).
    async fn is_ancestor(&self, a: &str, b: &str) -> Option<bool> {
        match self.run(&["merge-base", "--is-ancestor", a, b], Duration::from_secs(60)).await? {
            (0, _) => Some(true),
            (1, _) => Some(false),
            _ => None,
        }
    }

    /// How commit `a` relates to commit `b`, or why it cannot be told.
    pub async fn relate(&self, a: &str, b: &str) -> Result<Relation, String> {
        if !plausible_commit(a) || !plausible_commit(b) {
            return Err(format!("{a:?} or {b:?} is not a commit"));
        }
        let Some((0, inside)) = self.run(&["rev-parse", "--is-shallow-repository"], Duration::from_secs(30)).await
        else {
            return Err(format!("no git checkout at {} to order {} and {}", self.shown(), short(a), short(b)));
        };
        // A shallow checkout (actions/checkout's default) cannot answer ancestry: deepened
        // first, as far as its remote allows.
        if inside == "true" && !self.deepen().await {
            let why = if self.may_fetch { "`git fetch --unshallow` failed" } else { "the plan fetches nothing" };
            return Err(format!(
                "the checkout at {} is shallow and {why}, so {} and {} cannot be ordered: check out with fetch-depth: 0",
                self.shown(),
                short(a),
                short(b)
            ));
        }
        for c in [a, b] {
            if !self.has(c).await {
                return Err(format!("commit {} is not in the checkout at {} (git fetch it)", short(c), self.shown()));
            }
        }
        match (self.is_ancestor(a, b).await, self.is_ancestor(b, a).await) {
            (Some(true), _) => Ok(Relation::Older),
            (_, Some(true)) => Ok(Relation::Newer),
            (Some(false), Some(false)) => {
                Err(format!("commits {} and {} are on diverged histories", short(a), short(b)))
            }
            _ => Err(format!("git could not order commits {} and {} in {}", short(a), short(b), self.shown())),
        }
    }
}

crate::word_enum! {
    /// What became of a moving reference that held another image.
    pub enum HeldAction {
        /// It holds a newer image: not moved (the run is partial).
        Kept => "kept",
        /// It holds an image of the same commit: left as it is.
        Unchanged => "unchanged",
        /// Moved, though which image is newer could not be told (the reason says why).
        Moved => "moved",
        /// Moved back to this run's older image, as `--allow-rollback` asked.
        MovedBack => "moved-back",
    }
}

/// A tag that held another image when this run came to move it.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub tag: String,
    pub held: Digest,
    pub action: HeldAction,
    pub reason: String,
}

impl Decision {
    /// The record of this decision for `tag` holding `held` (`None`: moved forward, nothing to say).
    pub fn record(&self, tag: &str, held: &Digest) -> Option<Held> {
        let (action, reason) = match self {
            Decision::Move(None) => return None,
            Decision::Move(Some(r)) => (HeldAction::Moved, r),
            Decision::Same(r) => (HeldAction::Unchanged, r),
            Decision::Keep(r) => (HeldAction::Kept, r),
            Decision::MoveBack(r) => (HeldAction::MovedBack, r),
        };
        Some(Held { tag: tag.to_string(), held: held.clone(), action, reason: reason.clone() })
    }

    /// Whether the reference moves to this run's image.
    pub fn moves(&self) -> bool {
        matches!(self, Decision::Move(_) | Decision::MoveBack(_))
    }
}

/// What to do with a reference (a tag, a template) that holds `held` when this run brings
/// `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Move it (the new image is newer, or the order is unknown: the note says so).
    Move(Option<String>),
    /// Leave it: it holds an image of the same commit.
    Same(String),
    /// Leave it: it holds a newer image (the message names it).
    Keep(String),
    /// Move it back, as asked (`--allow-rollback`): the note says from what.
    MoveBack(String),
}

/// Whether a reference that holds `held` (`held_digest`) may move to this run's `new` image.
pub async fn decide(
    (held_digest, held): (&Digest, &Origin),
    new: &Origin,
    git: &Git,
    allow_rollback: bool,
) -> Decision {
    match relate(held, new, git).await {
        Relation::Older => Decision::Move(None),
        Relation::Unknown(why) => Decision::Move(Some(format!(
            "holds {held_digest} {}: cannot tell which is newer ({why}): moved",
            held.describe()
        ))),
        Relation::Same if allow_rollback => Decision::MoveBack(format!(
            "held {held_digest} of the same commit {}: moved (--allow-rollback)",
            new.commit.as_deref().map(short).unwrap_or_default()
        )),
        Relation::Same => Decision::Same(format!(
            "holds {held_digest} of the same commit {}: unchanged (a re-run; --allow-rollback moves it)",
            new.commit.as_deref().map(short).unwrap_or_default()
        )),
        Relation::Newer if allow_rollback => Decision::MoveBack(format!(
            "held {held_digest} {}, newer than this run's {}: moved back (--allow-rollback)",
            held.describe(),
            new.describe().trim_start_matches("from ")
        )),
        Relation::Newer => Decision::Keep(format!(
            "holds {held_digest} {}, newer than this run's {}: not moved (re-run of an older workflow?); --allow-rollback or runpod.allow_rollback: true moves it",
            held.describe(),
            new.describe().trim_start_matches("from ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(commit: Option<&str>, created: Option<&str>) -> Origin {
        Origin { commit: commit.map(str::to_string), created: created.map(str::to_string), ..Default::default() }
    }

    #[tokio::test]
    async fn created_times_order_images_without_commits_and_equal_ones_cannot() {
        let git = Git::default();
        let old = at(None, Some("2026-01-01T00:00:00Z"));
        let new = at(None, Some("2026-02-01T00:00:00.5Z"));
        assert_eq!(relate(&old, &new, &git).await, Relation::Older);
        assert_eq!(relate(&new, &old, &git).await, Relation::Newer);
        assert!(matches!(relate(&old, &old, &git).await, Relation::Unknown(_)));
        assert!(matches!(relate(&at(None, None), &new, &git).await, Relation::Unknown(_)));
        let same = "a".repeat(40);
        assert_eq!(relate(&at(Some(&same), None), &at(Some(&same), None), &git).await, Relation::Same);
    }

    #[tokio::test]
    async fn the_message_names_both_commits_and_the_fix() {
        let git = Git::new(Some(&std::env::temp_dir().join("no-such-checkout-here")));
        let d: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let held = at(None, Some("2026-02-01T00:00:00Z"));
        let new = at(None, Some("2026-01-01T00:00:00Z"));
        let Decision::Keep(m) = decide((&d, &held), &new, &git, false).await else { panic!() };
        assert!(m.contains("newer than this run's created 2026-01-01T00:00:00Z: not moved"), "{m}");
        assert!(matches!(decide((&d, &held), &new, &git, true).await, Decision::MoveBack(_)));
        assert!(matches!(decide((&d, &new), &held, &git, false).await, Decision::Move(None)));
    }
}
