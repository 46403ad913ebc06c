//! `publish runpod history|rollback TEMPLATE`: the images a template could point to, newest
//! first, and moving it (with its endpoints) back to one on purpose. Neither opens the image's
//! source: the repository is the one the template's current image is in (one of the image's
//! registries in the policy), its images are its tags (signature tags left out), their order
//! is `order`'s. A rollback target's signature is verified with the policy's signing settings.

use std::fmt::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ExitStatus, Output, PolicyArgs, UsageError, load};
use crate::credentials::Env;
use crate::order::{self, Git, Origin};
use crate::registry::Client;
use crate::types::Digest;

/// Tags read from the repository, at most; images whose origin is read (to order them); and
/// images listed.
const MAX_TAGS: usize = 1000;
const MAX_READ: usize = 200;
const MAX_IMAGES: usize = 30;

/// One image of the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub digest: Digest,
    pub tags: Vec<String>,
    /// What the template points at now.
    pub current: bool,
    pub origin: Origin,
}

/// Where the template is and what its repository holds.
struct History {
    template: crate::policy::ResolvedTemplate,
    /// `HOST/PATH`, and the template's current image reference.
    repository: String,
    current_ref: String,
    entries: Vec<Entry>,
    runpod: crate::runpod::Client,
    /// Whether the policy signs (so signatures were checked).
    signs: bool,
    /// The repository, and the policy's signatures, to read a target's provenance.
    client: Client,
    path: String,
    verifier: Option<crate::sign::Verifier>,
}

/// What `runpod rollback` moves to.
#[derive(Debug, Clone)]
pub enum To {
    Previous,
    Tag(String),
    Digest(Digest),
}

impl std::str::FromStr for To {
    type Err = String;
    fn from_str(s: &str) -> Result<To, String> {
        if s == "previous" {
            return Ok(To::Previous);
        }
        if s.starts_with("sha256:") {
            return s.parse::<Digest>().map(To::Digest).map_err(|e| format!("{s}: {e}"));
        }
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !s.starts_with(['.', '-']);
        if valid { Ok(To::Tag(s.to_string())) } else { Err(format!("{s:?} is not previous, a tag or sha256:…")) }
    }
}

/// `runpod history`.
pub async fn history(policy: &PolicyArgs, template: &str, env: &Env) -> anyhow::Result<ExitStatus> {
    let h = read_history(policy, template, env).await?;
    match policy.output {
        Output::Json => super::print_out(&format!("{}\n", crate::report::json(&h.entries))),
        Output::Text => super::print_out(&history_text(&h)),
    }
    Ok(ExitStatus::Success)
}

fn history_text(h: &History) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "template {}: images of {}, newest first (* the one it runs)", h.template.name, h.repository);
    for e in &h.entries {
        let mark = if e.current { '*' } else { ' ' };
        let tags = if e.tags.is_empty() { "(untagged)".to_string() } else { e.tags.join(", ") };
        let commit = match (&e.origin.commit, e.origin.commit_from) {
            (Some(c), Some(from)) => format!("commit {} ({from})", order::short(c)),
            _ => "commit unknown".into(),
        };
        let created = e.origin.created.as_deref().map(|c| format!(", created {c}")).unwrap_or_default();
        let signed = match (h.signs, e.origin.signed) {
            (false, _) => "signature not checked (no signing: in the policy)",
            (true, Some(true)) => "signed",
            (true, Some(false)) => "NOT SIGNED as the policy says",
            (true, None) => "signature could not be read (--debug says why)",
        };
        let _ = writeln!(s, "{mark} {}  {tags}\n    {commit}{created}; {signed}", e.digest);
    }
    s
}

/// `runpod rollback`.
pub async fn rollback(
    policy: &PolicyArgs,
    (template, to): (&str, &To),
    (allow_unsigned, dry_run): (bool, bool),
    env: &Env,
) -> anyhow::Result<ExitStatus> {
    let h = read_history(policy, template, env).await?;
    let git = Git::new(policy.policy.parent());
    let current = h.entries.iter().position(|e| e.current);
    let target = match to {
        To::Previous => previous(&h, current, &git).await.ok_or_else(|| {
            anyhow::anyhow!(
                "template {template}: {} holds no image known to be older than the one it runs ({}): nothing to roll back to (name one with --to TAG or --to sha256:…)",
                h.repository,
                h.current_ref
            )
        })?,
        To::Tag(tag) => h
            .entries
            .iter()
            .find(|e| e.tags.contains(tag))
            .ok_or_else(|| anyhow::anyhow!("template {template}: {} has no tag {tag}", h.repository))?,
        To::Digest(d) => h
            .entries
            .iter()
            .find(|e| &e.digest == d)
            .ok_or_else(|| anyhow::anyhow!("template {template}: {} has no tagged image {d}", h.repository))?,
    };
    let from = current.map(|i| &h.entries[i]);
    if target.current {
        eprintln!("template {template} already runs {}: nothing to do", target.digest);
        return Ok(ExitStatus::Success);
    }
    if target.origin.signed != Some(true) && !allow_unsigned {
        let why = if h.signs {
            "has no signature that verifies with the policy's signing settings"
        } else {
            "cannot be verified: the policy has no signing:"
        };
        anyhow::bail!(
            "template {template}: {}@{} {why}: not rolled back (--allow-unsigned moves to it anyway)",
            h.repository,
            target.digest
        );
    }
    let (_, tag, _) = crate::guard::split_reference(&h.current_ref);
    // The tag asked for, else the one the template names if the target has it, else its first.
    let asked = match to {
        To::Tag(t) => Some(t.clone()),
        _ => None,
    };
    let tag = asked.or(tag.filter(|t| target.tags.contains(t))).or_else(|| target.tags.first().cloned());
    let new_ref = match tag {
        Some(t) => format!("{}:{t}@{}", h.repository, target.digest),
        None => format!("{}@{}", h.repository, target.digest),
    };
    let moved = move_to(&h, &new_ref, dry_run).await?;
    let provenance = provenance_of(&h, &target.digest).await;
    if policy.output == Output::Json {
        let doc = serde_json::json!({
            "template": template, "dry_run": dry_run, "image": new_ref,
            "from": from, "to": target, "moved": moved, "provenance": provenance,
        });
        super::print_out(&format!("{}\n", crate::report::json(&doc)));
        return Ok(ExitStatus::Success);
    }
    let verb = if dry_run { "would roll back" } else { "rolled back" };
    let mut s = format!(
        "{verb} template {template} from {} to {} ({}{})\n",
        from.map_or_else(|| h.current_ref.clone(), |f| format!("{} {}", f.digest, f.origin.describe())),
        target.digest,
        target.origin.describe(),
        if target.origin.signed == Some(true) { ", signature verified" } else { ", NOT SIGNED (--allow-unsigned)" }
    );
    match provenance.as_ref().and_then(|p| Some((crate::attest::provenance::commit(p)?, p))) {
        Some((commit, p)) => {
            let builder = p.pointer("/runDetails/builder/id").and_then(Value::as_str).unwrap_or_default();
            let _ = writeln!(s, "  provenance: commit {commit}, built by {builder} (attestation verified)");
        }
        None if h.signs => {
            let _ = writeln!(s, "  provenance: none that verifies with the policy's signing settings");
        }
        None => {}
    }
    for m in moved {
        let _ = writeln!(s, "  {m}");
    }
    super::print_out(&s);
    Ok(ExitStatus::Success)
}

/// The predicate of `digest`'s SLSA provenance that verifies with the policy's signing
/// settings, if any (an error reading it is said, not fatal: the signature was checked).
async fn provenance_of(h: &History, digest: &Digest) -> Option<Value> {
    let verifier = h.verifier.as_ref()?;
    let wanted = crate::attest::provenance::PREDICATE_TYPE;
    let check = (verifier, crate::sign::VerifyOptions::default());
    match crate::sign::verify_attestations(&h.client, &h.path, digest, check, wanted).await {
        Ok(found) => found.verified().find_map(|a| a.predicate.clone()),
        Err(e) => {
            tracing::warn!("the provenance of {digest} could not be read: {e}");
            None
        }
    }
}

/// The newest image known to be older than the current one (`order`): not merely the next
/// in the list, whose order may be unknown (a build of another branch).
async fn previous<'a>(h: &'a History, current: Option<usize>, git: &Git) -> Option<&'a Entry> {
    let now = &h.entries[current?];
    for e in &h.entries[current? + 1..] {
        if order::relate(&e.origin, &now.origin, git).await == order::Relation::Older {
            return Some(e);
        }
    }
    None
}

/// Points the template and its endpoints at `new_ref` (only their `image`: the registry
/// credential stays, the repository is the same). What was (or would be) moved.
async fn move_to(h: &History, new_ref: &str, dry_run: bool) -> anyhow::Result<Vec<String>> {
    let mut patch = Map::new();
    patch.insert("image".into(), Value::String(new_ref.to_string()));
    let templates = h.runpod.list_templates().await?;
    let id = templates
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(h.template.name.as_str()))
        .and_then(|t| t.get("id").and_then(Value::as_str))
        .ok_or_else(|| anyhow::anyhow!("template {} has no id on RunPod", h.template.name))?
        .to_string();
    let mut out = Vec::new();
    if !dry_run {
        h.runpod.update_template(&id, &patch).await?;
    }
    out.push(format!("template {} ({id}): image {new_ref}", h.template.name));
    for e in &h.template.endpoints {
        let current = h.runpod.get_endpoint(e).await?;
        if current.get("image").and_then(Value::as_str) == Some(new_ref) {
            out.push(format!("endpoint {e}: unchanged"));
            continue;
        }
        if !dry_run {
            h.runpod.update_endpoint(e, &patch).await?;
        }
        out.push(format!("endpoint {e}: image {new_ref}"));
    }
    Ok(out)
}

/// The template, its repository and the repository's images, newest first.
async fn read_history(policy: &PolicyArgs, name: &str, env: &Env) -> anyhow::Result<History> {
    let resolved = load::policy(&policy.policy, env)?;
    let config = resolved.transfer;
    let Some(rp) = resolved.runpod.as_ref() else {
        return Err(UsageError::Message(format!("{}: no runpod: templates", resolved.file)).into());
    };
    let Some(template) = rp.templates.iter().find(|t| t.name == name).cloned() else {
        let names: Vec<&str> = rp.templates.iter().map(|t| t.name.as_str()).collect();
        return Err(UsageError::Message(format!(
            "no template named {name:?} in {} (there: {})",
            resolved.file,
            names.join(", ")
        ))
        .into());
    };
    let runpod = super::runpod::runpod_client(rp, env, &config)?;
    let current_ref = runpod.template_image(name).await?.filter(|i| !i.is_empty()).ok_or_else(|| {
        anyhow::anyhow!("template {name} is not on RunPod yet, or has no image: publish run creates it")
    })?;
    let (repository, tag, pinned) = crate::guard::split_reference(&current_ref);
    let spec = resolved.images.iter().find(|i| i.name == template.image);
    let registry = spec
        .and_then(|s| s.candidates.iter().find(|r| format!("{}/{}", r.host, r.repository_for(&s.name)) == repository));
    let (Some(spec), Some(registry)) = (spec, registry) else {
        return Err(UsageError::Message(format!(
            "template {name} runs {current_ref}, which is in none of image {}'s registries in {}",
            template.image, resolved.file
        ))
        .into());
    };
    let path = registry.repository_for(&spec.name);
    let client = super::runpod::registry_client(registry, &path, env, &config).await?;
    client.authenticate().await?;
    let signing = resolved.signing.as_ref().map(crate::plan::signing_plan);
    let verifier = super::runpod::signature_verifier(signing.as_ref(), env, true).await?;
    let current = crate::guard::digest_of(&client, (tag, pinned)).await?;
    let git = Git::new(policy.policy.parent());
    let entries = images(&client, &path, (current.as_ref(), verifier.as_ref()), &git).await?;
    let signs = verifier.is_some();
    Ok(History { template, repository, current_ref, entries, runpod, signs, client, path, verifier })
}

/// The repository's tagged images (and `current`), with their origins, newest first.
async fn images(
    client: &Client,
    path: &str,
    (current, verifier): (Option<&Digest>, Option<&crate::sign::Verifier>),
    git: &Git,
) -> anyhow::Result<Vec<Entry>> {
    let mut tags = client.tags(path).await?;
    // Signatures, attestations and the referrers fallback are tags too: not images.
    tags.retain(|t| !t.starts_with("sha256-"));
    tags.sort();
    tags.truncate(MAX_TAGS);
    let mut by_digest: Vec<(Digest, Vec<String>, Option<serde_json::Value>)> =
        crate::prune::by_digest(client, path, tags).await?.into_iter().map(|(d, t, m)| (d, t, Some(m))).collect();
    // The image the template runs first, so that it is always among those read.
    if let Some(c) = current {
        match by_digest.iter().position(|(d, _, _)| d == c) {
            Some(i) => {
                let e = by_digest.remove(i);
                by_digest.insert(0, e);
            }
            None => by_digest.insert(0, (c.clone(), Vec::new(), None)),
        }
    }
    let mut entries = Vec::new();
    for (digest, tags, manifest) in by_digest.into_iter().take(MAX_READ) {
        // A manifest read with its tags is not read again.
        let origin = match &manifest {
            Some(m) => order::read_with(client, path, (&digest, Some(m)), verifier).await,
            None => order::read(client, path, &digest, verifier).await,
        };
        entries.push(Entry { current: current == Some(&digest), digest, tags, origin });
    }
    let mut sorted = order::newest_first(entries, |e| &e.origin, git).await;
    // The newest, and the one it runs wherever it stands.
    let mut i = 0;
    sorted.retain(|e| {
        i += 1;
        i <= MAX_IMAGES || e.current
    });
    Ok(sorted)
}
