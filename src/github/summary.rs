//! Markdown for the job summary and the pull-request comment: the plan's candidates table,
//! what was pushed where, and template changes. Formatting only.

use std::fmt::Write;

use crate::plan::Plan;
use crate::push::Status;
use crate::report::RunReport;
use crate::select::VerdictKind;
use crate::types::ByteSize;

/// Marks the one comment `publish` keeps up to date on a pull request.
pub const COMMENT_MARKER: &str = "<!-- publish-action:plan -->";

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn plan_markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### publish plan\n");
    for img in &plan.images {
        let platforms: Vec<String> = img.platforms.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "**{}** `{}` — {}, largest layer {}, {}\n",
            img.name,
            img.manifest_digest.as_ref().map_or_else(|| "digest once pushed".to_string(), |d| d.short().to_string()),
            img.total_size,
            img.largest_layer,
            platforms.join(", ")
        );
        let _ = writeln!(s, "| registry | verdict | cost/month | why |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &img.candidates {
            let verdict = match c.verdict {
                VerdictKind::Selected => "✅ selected",
                VerdictKind::Eligible => "eligible",
                VerdictKind::Rejected => "❌ rejected",
            };
            let cost = match c.cost {
                Some(v) if c.cost_exact => format!("${v:.2}"),
                Some(v) => format!("≥ ${v:.2}"),
                None => "–".into(),
            };
            let why = c.reasons.iter().take(3).map(|r| cell(r)).collect::<Vec<_>>().join("<br>");
            let _ = writeln!(s, "| {} ({}) | {verdict} | {cost} | {why} |", c.registry, cell(c.label));
        }
        for a in &img.assumptions {
            let _ = writeln!(s, "\n_Assumed:_ {}", cell(a));
        }
        for w in &img.warnings {
            let _ = writeln!(s, "\n> [!WARNING]\n> {}", cell(w));
        }
        if !img.attestations.is_empty() {
            let list: Vec<String> = img.attestations.iter().map(|a| cell(&a.describe())).collect();
            let _ = writeln!(s, "\n_Attestations:_ {}", list.join("; "));
        }
        for t in &img.targets {
            let _ = writeln!(
                s,
                "\n→ `{}` tags {}",
                t.repository,
                t.tags.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            );
            for h in &t.held {
                let _ = writeln!(s, "\n> [!WARNING]\n> tag `{}` {} ({})", h.tag, cell(&h.reason), h.action);
            }
        }
        let _ = writeln!(s);
    }
    s
}

pub fn run_markdown(report: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### publish: {}\n", report.status);
    let _ = writeln!(s, "| image | registry | references | digest | blobs sent / skipped | sent | status |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for img in &report.images {
        for t in &img.targets {
            let status = match t.status {
                Status::Pushed => "✅ pushed".to_string(),
                Status::PushedUnsigned => format!("⚠️ pushed, not signed: {}", cell(t.error.as_deref().unwrap_or(""))),
                Status::PushedUnattested => {
                    format!("⚠️ pushed and signed, not attested: {}", cell(t.error.as_deref().unwrap_or("")))
                }
                Status::PushedExposed => {
                    format!("⚠️ pushed, private but pullable by anyone: {}", cell(t.error.as_deref().unwrap_or("")))
                }
                Status::Failed => format!("❌ {}", cell(t.error.as_deref().unwrap_or("failed"))),
            };
            // Tags left on a newer image, or moved though the order was unknown, are said.
            let held: String = t
                .moving_tags
                .iter()
                .map(|h| format!("<br>⚠️ tag `{}` {}: {}", h.tag, h.action, cell(&h.reason)))
                .collect();
            let status = format!("{status}{held}");
            let refs = t.references.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join("<br>");
            let _ = writeln!(
                s,
                "| {} | {} | {refs} | `{}` | {} / {} | {} | {status} |",
                img.name,
                t.registry,
                t.digest.short(),
                t.blobs_sent,
                t.blobs_skipped,
                ByteSize(t.bytes_sent)
            );
        }
    }
    let attested: Vec<_> =
        report.images.iter().flat_map(|i| &i.targets).filter(|t| !t.attestations.is_empty()).collect();
    if !attested.is_empty() {
        let _ = writeln!(s, "\n| attested | predicate type | from | written |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in attested {
            for a in &t.attestations {
                let mut written: Vec<String> = a.legacy.iter().map(|l| format!("`{l}`")).collect();
                written.extend(a.bundle.iter().map(|b| format!("referrer `{}`", b.short())));
                let _ = writeln!(
                    s,
                    "| `{}@{}` | `{}` | {} | {} |",
                    t.repository,
                    t.digest.short(),
                    a.predicate_type,
                    cell(&a.source),
                    written.join("<br>")
                );
            }
        }
    }
    if !report.runpod.is_empty() {
        let _ = writeln!(s, "\n| RunPod template | image | result | changes |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in &report.runpod {
            let (result, changes) = match &t.sync {
                Some(sync) => (
                    // A move on an unknown order, a move back, or a same-commit re-run says so.
                    match &t.reason {
                        Some(r) => format!("{}: {}", sync.action, cell(r)),
                        None => sync.action.to_string(),
                    },
                    sync.changes.iter().map(|c| format!("`{}`", c.field)).collect::<Vec<_>>().join(", "),
                ),
                None => (t.status.to_string(), cell(t.reason.as_deref().unwrap_or(""))),
            };
            let _ = writeln!(s, "| {} | {} | {result} | {changes} |", t.name, t.image);
        }
    }
    s
}
