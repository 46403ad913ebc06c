//! What users read: the plan and the run's outcomes as text or one JSON document.
//! Formatting only; every value arrives computed.

use std::fmt::Write;

use serde::Serialize;

use crate::plan::Plan;
use crate::push::{Outcome, Status};
use crate::types::{ByteSize, Digest};

/// The result of `publish run` / `publish push`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `success`, `partial` or `failed`.
    pub status: &'static str,
    pub images: Vec<ImageOutcome>,
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
        let ok = all.iter().filter(|o| o.status == Status::Pushed).count();
        let status = if ok == all.len() {
            "success"
        } else if ok == 0 {
            "failed"
        } else {
            "partial"
        };
        RunReport { status, images }
    }
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"))
}

pub fn plan_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Plan for {} (dry run: nothing is written)", plan.policy);
    for img in &plan.images {
        let layers = img.blobs.len();
        let to_send: u64 = img.blobs.iter().map(|b| b.size.0).sum();
        let platforms: Vec<String> = img.platforms.iter().map(ToString::to_string).collect();
        let _ = writeln!(s);
        let _ = writeln!(s, "image {}", img.name);
        let _ = writeln!(s, "  source     {}", img.source);
        let _ = writeln!(
            s,
            "  manifest   {} ({})",
            img.manifest_digest, img.media_type
        );
        let _ = writeln!(s, "  platforms  {}", platforms.join(", "));
        let _ = writeln!(
            s,
            "  size       {} in {layers} blobs, largest layer {}",
            img.total_size, img.largest_layer
        );
        let _ = writeln!(
            s,
            "  visibility {}",
            if img.visibility == crate::policy::Visibility::Public {
                "public"
            } else {
                "private"
            }
        );
        for t in &img.targets {
            let _ = writeln!(
                s,
                "  target     {} ({}) → {}",
                t.registry,
                t.kind.as_str(),
                t.repository
            );
            let _ = writeln!(s, "    tags     {}", t.tags.join(", "));
            let _ = writeln!(s, "    why      {}", t.reason);
            let _ = writeln!(
                s,
                "    blobs    up to {layers} to send, {} (blobs the registry already has are skipped)",
                ByteSize(to_send)
            );
        }
    }
    s
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
                        let _ = writeln!(
                            s,
                            "  every blob was already on {}: no blob bytes sent",
                            t.registry
                        );
                    }
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
    let _ = writeln!(s, "{}", report.status);
    s
}
