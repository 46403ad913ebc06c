//! What users read: the plan and the run's outcomes as text or one JSON document.
//! Formatting only; every value arrives computed.

use std::fmt::Write;

use serde::Serialize;

use crate::plan::Plan;
use crate::push::{Outcome, Status};
use crate::runpod::SyncOutcome;
use crate::select::{Verdict, VerdictKind};
use crate::types::{ByteSize, Digest};

crate::word_enum! {
    /// How a run ended, as a whole.
    pub enum RunStatus {
        Success => "success",
        /// Some targets, signatures or templates failed.
        Partial => "partial",
        Failed => "failed",
    }
}

crate::word_enum! {
    /// What happened to one RunPod template.
    pub enum TemplateStatus {
        Synced => "synced",
        /// Its image did not publish (or was not signed, or cannot be pulled): it kept its image.
        Skipped => "skipped",
        /// It holds a newer image than this run's: not moved (re-run of an older workflow?).
        Kept => "kept",
        /// It holds an image of the same commit: left as it is (a re-run).
        Current => "current",
        Failed => "failed",
    }
}

/// The result of `publish run` / `publish push`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub status: RunStatus,
    pub images: Vec<ImageOutcome>,
    /// RunPod templates: synced, skipped (their image did not publish) or failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runpod: Vec<TemplateReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateReport {
    pub name: String,
    pub image: String,
    pub status: TemplateStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageOutcome {
    pub name: String,
    pub digest: Digest,
    pub targets: Vec<Outcome>,
}

impl RunReport {
    pub fn new(images: Vec<ImageOutcome>) -> Self {
        let all: Vec<&Outcome> = images.iter().flat_map(|i| &i.targets).collect();
        // A tag left on a newer image is a partial result: the push is there, the tag is not.
        let kept = |o: &Outcome| o.moving_tags.iter().any(|h| h.action == crate::order::HeldAction::Kept);
        let done = all.iter().filter(|o| o.status == Status::Pushed && !kept(o)).count();
        let published = all.iter().filter(|o| o.status != Status::Failed).count();
        let status = if done == all.len() {
            RunStatus::Success
        } else if published == 0 {
            RunStatus::Failed
        } else {
            RunStatus::Partial
        };
        RunReport { status, images, runpod: Vec::new() }
    }

    /// Adds the templates' results; any template not synced makes a success partial.
    pub fn with_runpod(mut self, runpod: Vec<TemplateReport>) -> Self {
        if self.status == RunStatus::Success
            && runpod.iter().any(|t| !matches!(t.status, TemplateStatus::Synced | TemplateStatus::Current))
        {
            self.status = RunStatus::Partial;
        }
        self.runpod = runpod;
        self
    }
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"))
}

pub fn plan_text(plan: &Plan) -> String {
    let mut s = plan_images_text(plan);
    if let Some(sg) = &plan.signing {
        let format = match sg.format {
            crate::sign::Format::Legacy => "legacy (.sig tag)",
            crate::sign::Format::Bundle => "bundle (referrer)",
            crate::sign::Format::Both => "legacy (.sig tag) and bundle (referrer)",
        };
        let _ = writeln!(
            s,
            "\nsigning    every pushed image, {} ({format})",
            if sg.method == crate::plan::SignMethod::Key {
                "with the cosign key"
            } else {
                "keyless (GitHub OIDC, Fulcio, Rekor)"
            }
        );
    }
    for t in &plan.templates {
        let endpoints =
            if t.endpoints.is_empty() { String::new() } else { format!(", then endpoints {}", t.endpoints.join(", ")) };
        let _ = writeln!(s, "runpod     template {} follows image {} once it is published{endpoints}", t.name, t.image);
        for (i, step) in t.steps.iter().enumerate() {
            let _ = writeln!(s, "  step {}   {}", i + 1, step.describe());
        }
    }
    s
}

fn plan_images_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Plan for {} (dry run: nothing is written)", plan.policy);
    for img in &plan.images {
        let layers = img.blobs.len();
        let to_send: u64 = img.blobs.iter().map(|b| b.size.0).sum();
        let platforms: Vec<String> = img.platforms.iter().map(ToString::to_string).collect();
        let _ = writeln!(s);
        let _ = writeln!(s, "image {}", img.name);
        let _ = writeln!(s, "  source     {}", img.source);
        let _ = writeln!(s, "  manifest   {} ({})", img.digest_text(), img.media_type);
        if let Some(config) = &img.config_digest {
            let _ = writeln!(s, "  config     {config}");
        }
        for b in img.blobs.iter().filter(|b| b.compress.is_some()) {
            let how = match b.compress {
                Some(crate::types::LayerCompression::Zstd) => "zstd",
                _ => "gzip",
            };
            let _ =
                writeln!(s, "  layer      {} ({} uncompressed): compressed ({how}) as it is sent", b.digest, b.size);
        }
        let _ = writeln!(s, "  platforms  {}", platforms.join(", "));
        let _ = writeln!(s, "  size       {} in {layers} blobs, largest layer {}", img.total_size, img.largest_layer);
        let _ = writeln!(
            s,
            "  visibility {}",
            if img.visibility == crate::policy::Visibility::Public { "public" } else { "private" }
        );
        let _ = writeln!(s, "  candidates");
        let width = img.candidates.iter().map(|c| c.registry.len()).max().unwrap_or(0).max(8);
        let _ = writeln!(s, "    {:<width$}  {:<9}  {:<11}  free-tier margin", "registry", "verdict", "cost/month");
        for c in &img.candidates {
            let _ = writeln!(
                s,
                "    {:<width$}  {:<9}  {:<11}  {}",
                c.registry,
                verdict_word(c.verdict),
                cost(c),
                margins(c)
            );
            let _ = writeln!(s, "    {:<width$}  {}", "", c.label);
            for r in &c.reasons {
                let _ = writeln!(s, "    {:<width$}    - {r}", "");
            }
            for f in &c.fixes {
                let _ = writeln!(s, "    {:<width$}    to fit: {f}", "");
            }
        }
        for a in &img.assumptions {
            let _ = writeln!(s, "  assumed    {a}");
        }
        for w in &img.warnings {
            let _ = writeln!(s, "  WARNING    {w}");
        }
        for a in &img.attestations {
            let _ = writeln!(s, "  attest     {}", a.describe());
        }
        for t in &img.targets {
            let _ = writeln!(s, "  target     {} ({}) → {}", t.id, t.kind.as_str(), t.repository);
            let _ = writeln!(s, "    tags     {}", t.tags.join(", "));
            let _ = writeln!(s, "    endpoint {}://{}", t.endpoint.scheme, t.endpoint.host);
            let upload = match t.upload {
                crate::plan::UploadPlan::Streamed => "streamed, one PUT per blob".to_string(),
                crate::plan::UploadPlan::Chunked { chunk_size, max_parts: None } => format!("chunks of {chunk_size}"),
                crate::plan::UploadPlan::Chunked { chunk_size, max_parts: Some(n) } => {
                    format!("chunks of {chunk_size}, larger for a blob that would need more than {n} parts")
                }
            };
            let _ = writeln!(s, "    upload   {upload}");
            if let Some(from) = &t.mount_from {
                let _ = writeln!(s, "    mount    blobs from {from}");
            }
            let _ = writeln!(s, "    login    {}", t.credentials.describe());
            let _ = writeln!(
                s,
                "    blobs    up to {layers} to send, {} (blobs the registry already has are skipped)",
                ByteSize(to_send)
            );
            for l in &t.layers {
                let _ = writeln!(s, "    layer    {}", l.describe());
            }
            for h in &t.held {
                let _ = writeln!(s, "    tag      {} {} ({})", h.tag, h.reason, h.action);
            }
            for (i, step) in t.steps.iter().enumerate() {
                let _ = writeln!(s, "    step {}   {}", i + 1, step.describe());
            }
        }
    }
    s
}

fn verdict_word(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::Selected => "selected",
        VerdictKind::Eligible => "eligible",
        VerdictKind::Rejected => "rejected",
    }
}

fn cost(v: &Verdict) -> String {
    match v.cost {
        Some(c) if v.cost_exact => format!("${c:.2}"),
        Some(c) => format!(">= ${c:.2}"),
        None => "-".into(),
    }
}

fn margins(v: &Verdict) -> String {
    if v.verdict == VerdictKind::Rejected {
        return "-".into();
    }
    if v.margins.is_empty() {
        return "no free-tier limit applies".into();
    }
    v.margins
        .iter()
        .map(|m| match m.left {
            Some(left) => format!("{}: {left} of {} left", m.limit, m.free),
            None => format!("{}: unknown of {}", m.limit, m.free),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn run_text(report: &RunReport) -> String {
    let mut s = String::new();
    for img in &report.images {
        for t in &img.targets {
            match t.status {
                Status::Pushed => {
                    let _ = writeln!(
                        s,
                        "pushed {} to {}@{} ({} blobs sent, {} skipped, {} sent)",
                        img.name,
                        t.references.join(", "),
                        t.digest,
                        t.blobs_sent,
                        t.blobs_skipped,
                        ByteSize(t.bytes_sent)
                    );
                    if t.bytes_sent == 0 {
                        let _ = writeln!(s, "  every blob was already on {}: no blob bytes sent", t.registry);
                    }
                    for h in &t.moving_tags {
                        let _ = writeln!(s, "  tag {} {}", h.tag, h.reason);
                    }
                    for a in &t.attestations {
                        let mut at: Vec<String> = a.legacy.iter().cloned().collect();
                        at.extend(a.bundle.iter().map(|b| format!("referrer {b}")));
                        let _ = writeln!(s, "  attested {} ({}): {}", a.predicate_type, a.source, at.join(", "));
                    }
                }
                Status::PushedUnsigned | Status::PushedExposed | Status::PushedUnattested => {
                    let what = match t.status {
                        Status::PushedUnsigned => "UNSIGNED",
                        Status::PushedUnattested => "SIGNED, NOT ATTESTED",
                        _ => "PULLABLE BY ANYONE",
                    };
                    let _ = writeln!(
                        s,
                        "PUBLISHED BUT {what} {} at {}@{}: {}",
                        img.name,
                        t.references.join(", "),
                        t.digest,
                        t.error.as_deref().unwrap_or("")
                    );
                }
                Status::Failed => {
                    let _ = writeln!(
                        s,
                        "FAILED {} to {}: {}",
                        img.name,
                        t.repository,
                        t.error.as_deref().unwrap_or("unknown error")
                    );
                }
            }
        }
    }
    for t in &report.runpod {
        match &t.sync {
            Some(sync) => {
                s.push_str(&sync_text(sync));
                if let Some(r) = &t.reason {
                    let _ = writeln!(s, "  {r}");
                }
            }
            None => {
                let _ = writeln!(s, "template {}: {} ({})", t.name, t.status, t.reason.as_deref().unwrap_or(""));
            }
        }
    }
    let _ = writeln!(s, "{}", report.status);
    s
}

/// One template's sync, with a field-by-field diff.
pub fn sync_text(sync: &SyncOutcome) -> String {
    let mut s = String::new();
    let id = sync.id.as_deref().map(|i| format!(" ({i})")).unwrap_or_default();
    let _ = writeln!(s, "template {}{id}: {}", sync.name, sync.action);
    if let Some(c) = &sync.registry_credential {
        let _ = writeln!(s, "  registry credential {c}");
    }
    for c in &sync.changes {
        match &c.old {
            Some(old) => {
                let _ = writeln!(s, "  ~ {}: {old} -> {}", c.field, c.new);
            }
            None => {
                let _ = writeln!(s, "  + {}: {}", c.field, c.new);
            }
        }
    }
    for e in &sync.endpoints {
        let _ = writeln!(s, "  endpoint {}: {}", e.id, e.action);
    }
    for c in &sync.replaced_credentials {
        let why = c.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let _ = writeln!(s, "  replaced credential {}: {}{why}", c.name, c.action);
    }
    s
}
