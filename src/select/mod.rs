//! Registry selection: a pure function from an image's facts, its candidate registries (with
//! the catalog's facts and the policy's overrides) and the usage already spent, to a verdict
//! per candidate with every reason, quoting the numbers. No network, no clock.

pub mod catalog;

use serde::Serialize;

use crate::policy::{Billing, LimitOverrides, PublishTo, RegistryKind, Visibility};
use crate::types::ByteSize;
use catalog::{Limit, Overage, Tier};

/// What the engine knows about the image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub total: ByteSize,
    pub largest_layer: ByteSize,
    pub visibility: Visibility,
    pub pulls_per_month: Option<u64>,
    pub region: Option<String>,
    /// `pulls_per_month` is the documented default, not the policy's figure.
    pub pulls_assumed: bool,
}

/// Assumed when the policy does not say: one whole-image pull a day (a pod or serverless
/// worker cold-starting daily on Community Cloud, which does not cache images: docs/selection.md).
pub const DEFAULT_PULLS_PER_MONTH: u64 = 30;
/// Assumed when the policy does not say: 10 MB/s (80 Mbit/s) sustained upload, a conservative
/// figure for a shared CI runner or an office uplink; no reference document gives one.
pub const DEFAULT_UPLOAD_RATE: ByteSize = ByteSize(10_000_000);

/// One candidate registry as the engine sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub tier: &'a Tier,
    pub overrides: &'a LimitOverrides,
    pub billing: Billing,
    pub region: Option<&'a str>,
    pub usage: Usage,
    /// RunPod pulls the image from here without credentials (public image, no
    /// `pull_credentials` for this registry): anonymous pull limits then bite cold starts.
    pub anonymous_pulls: bool,
}

/// Usage already spent on a registry; `None` is unknown, never guessed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
    /// How the numbers were obtained: `measured`, `policy`, or `unknown`.
    pub source: &'static str,
    /// Anonymous pulls allowed per window (pulls, seconds), measured from the registry's
    /// `ratelimit-limit` header; overrides the catalog's figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_pulls: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Selected,
    Eligible,
    Rejected,
}

/// Room left on one free-tier limit after this image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Margin {
    pub limit: String,
    pub free: ByteSize,
    /// Free bytes left after this image; `None` when usage is unknown.
    pub left: Option<ByteSize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub registry: String,
    pub kind: RegistryKind,
    pub tier: &'static str,
    pub label: &'static str,
    pub verdict: VerdictKind,
    pub reasons: Vec<String>,
    /// Estimated USD a month for this image (absent when rejected).
    pub cost: Option<f64>,
    /// False when something unknown (usage already spent, pulls a month) could make this
    /// candidate cost more or stop fitting; such a candidate ranks after an exact one at
    /// equal cost.
    pub cost_exact: bool,
    pub margins: Vec<Margin>,
    /// What would make a rejected candidate fit.
    pub fixes: Vec<String>,
    /// The usage the verdict was made with.
    pub usage: Usage,
    /// The anonymous pull limit RunPod's cold starts would hit here (`100 per 6 h per IP`);
    /// such a candidate ranks after an equally cheap one without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_limit: Option<String>,
    /// Limits broken on an assumed figure (`pulls_per_month`, `upload_rate` not given): the
    /// verdict rests on the assumption, so it is also a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Limits this candidate breaks only under an assumed figure, each with the figure to set
    /// and where the verdict changes ("fits up to 3 pulls a month; set pulls_per_month"). Such a
    /// candidate is eligible, but ranks after every candidate that fits without assumptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumptions: Vec<String>,
}

struct Eval {
    reasons: Vec<String>,
    fixes: Vec<String>,
    rejected: bool,
    cost: f64,
    exact: bool,
    margins: Vec<Margin>,
    warnings: Vec<String>,
    assumptions: Vec<String>,
}

impl Eval {
    fn reject(&mut self, reason: String, fix: String) {
        self.rejected = true;
        self.reasons.push(reason);
        self.fixes.push(fix);
    }

    /// A limit broken only under an assumed figure: never a rejection, but a reason, a warning
    /// and a lower rank, each saying which figure to set.
    fn assume(&mut self, name: &str, note: String) {
        self.exact = false;
        self.reasons.push(format!("{note} (assumed figure)"));
        self.warnings.push(format!("{name}: {note}"));
        self.assumptions.push(note);
    }
}

fn mb_per_s(rate: ByteSize) -> String {
    format!("{:.1} MB/s", rate.0 as f64 / 1e6)
}

fn usd(x: f64) -> String {
    format!("${x:.2}")
}

/// Evaluates every candidate, then marks the winner(s): the cheapest eligible one, ties broken
/// by the order of preference (`publish_to: best`), or every eligible one (`all`).
pub fn select(
    image: &ImageFacts,
    candidates: &[Candidate],
    upload_rate: Option<ByteSize>,
    publish_to: PublishTo,
) -> Vec<Verdict> {
    select_with(image, candidates, upload_rate, false, publish_to)
}

/// `select`, with `upload_rate_assumed` when the rate is the documented default.
pub fn select_with(
    image: &ImageFacts,
    candidates: &[Candidate],
    upload_rate: Option<ByteSize>,
    upload_rate_assumed: bool,
    publish_to: PublishTo,
) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> =
        candidates.iter().map(|c| evaluate(image, c, upload_rate, upload_rate_assumed)).collect();
    let mut order: Vec<usize> = (0..verdicts.len()).filter(|&i| verdicts[i].verdict == VerdictKind::Eligible).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (&verdicts[a], &verdicts[b]);
        // A candidate that fits only if an assumed figure is wrong ranks after every one that
        // fits as things are.
        (!va.assumptions.is_empty())
            .cmp(&!vb.assumptions.is_empty())
            .then(va.cost.unwrap_or(f64::MAX).total_cmp(&vb.cost.unwrap_or(f64::MAX)))
            .then(va.pull_limit.is_some().cmp(&vb.pull_limit.is_some()))
            .then(vb.cost_exact.cmp(&va.cost_exact))
            .then(a.cmp(&b))
    });
    // Which equally cheap candidate without a pull limit a limited one lost to.
    let unlimited_peer = |i: usize| {
        order
            .iter()
            .copied()
            .find(|&j| j != i && verdicts[j].pull_limit.is_none() && verdicts[j].cost == verdicts[i].cost)
    };
    let demoted: Vec<(usize, String)> = order
        .iter()
        .filter(|&&i| verdicts[i].pull_limit.is_some())
        .filter_map(|&i| unlimited_peer(i).map(|j| (i, verdicts[j].registry.clone())))
        .collect();
    for (i, peer) in demoted {
        let limit = verdicts[i].pull_limit.clone().unwrap_or_default();
        verdicts[i].reasons.push(format!(
            "ranks after {peer}, which costs the same: RunPod pulls this image anonymously and cold starts would hit the limit of {limit}"
        ));
    }
    let winners: Vec<usize> = match publish_to {
        PublishTo::Best => order.first().copied().into_iter().collect(),
        PublishTo::All => order.clone(),
    };
    for (rank, &i) in order.iter().enumerate() {
        let v = &mut verdicts[i];
        let cost = v.cost.map(usd).unwrap_or_default();
        let est = if v.cost_exact { "" } else { "at least " };
        if winners.contains(&i) {
            v.verdict = VerdictKind::Selected;
            let why = match publish_to {
                PublishTo::Best if !v.assumptions.is_empty() => format!(
                    "selected: nothing fits with the assumed figures, and this fits if your own figures differ ({est}{cost}/month): {}",
                    v.assumptions.join("; ")
                ),
                PublishTo::All => format!(
                    "selected: eligible, and publish_to: all mirrors to every eligible registry ({est}{cost}/month)"
                ),
                PublishTo::Best if order.len() == 1 => {
                    format!("selected: the only eligible candidate ({est}{cost}/month)")
                }
                PublishTo::Best => format!(
                    "selected: cheapest eligible ({est}{cost}/month); ties go to the earlier candidate in the order of preference"
                ),
            };
            v.reasons.insert(0, why);
        } else {
            v.reasons.insert(
                0,
                format!("eligible but not chosen: rank {} of {} ({est}{cost}/month)", rank + 1, order.len()),
            );
        }
    }
    verdicts
}

fn evaluate(image: &ImageFacts, c: &Candidate, upload_rate: Option<ByteSize>, rate_assumed: bool) -> Verdict {
    let t = c.tier;
    let o = c.overrides;
    let name = t.label;
    let private = image.visibility == Visibility::Private;
    let mut e = Eval {
        reasons: Vec::new(),
        fixes: Vec::new(),
        rejected: false,
        cost: 0.0,
        exact: true,
        margins: Vec::new(),
        warnings: Vec::new(),
        assumptions: Vec::new(),
    };

    // Privacy.
    let private_allowed = o.private.unwrap_or(t.private_allowed.value);
    if private && !private_allowed {
        e.reject(
            format!("{name} hosts public images only; this image is private"),
            "make the image public (visibility: public), or list a registry that allows private images".into(),
        );
    }
    if private && private_allowed {
        let limit = o.private_repositories.or(t.private_repositories.value);
        match (limit, c.usage.private_repositories) {
            (Some(n), Some(used)) if used >= n => e.reject(
                format!(
                    "{name} allows {n} private repositor{}; {used} already in use",
                    if n == 1 { "y" } else { "ies" }
                ),
                "delete a private repository there, or set tier: pro".into(),
            ),
            (Some(n), Some(used)) => {
                e.reasons.push(format!("private repositories: {used} of {n} in use, this one makes {}", used + 1))
            }
            (Some(n), None) => {
                e.exact = false;
                e.reasons.push(format!(
                    "{name} allows {n} private repositor{}; how many are in use is unknown (set used.private_repositories)",
                    if n == 1 { "y" } else { "ies" }
                ));
            }
            (None, _) => {}
        }
    }

    // Layer size.
    if let Some(max) = o.max_layer.or(t.max_layer.value) {
        if image.largest_layer > max {
            e.reject(
                format!("largest layer {} exceeds {name}'s {max} per-layer limit", image.largest_layer),
                format!("split layers below {max} (model weights can live on a RunPod network volume)"),
            );
        } else {
            e.reasons.push(format!("largest layer {} is within the {max} per-layer limit", image.largest_layer));
        }
    }

    // Upload time.
    if let Some(secs) = t.upload_timeout_secs.value {
        match upload_rate {
            Some(rate) => {
                let needed = image.largest_layer.0 as f64 / rate.0 as f64;
                let max_layer = ByteSize(rate.0.saturating_mul(secs));
                let assumed = if rate_assumed { " (assumed: set upload_rate)" } else { "" };
                if needed > secs as f64 && rate_assumed {
                    let enough = ByteSize(image.largest_layer.0.div_ceil(secs.max(1)));
                    e.assume(
                        name,
                        format!(
                            "the largest layer {} would take {:.0} min at the assumed upload rate of {}, over the {}-minute upload limit; fits from {} up: set upload_rate",
                            image.largest_layer,
                            needed / 60.0,
                            mb_per_s(rate),
                            secs / 60,
                            mb_per_s(enough)
                        ),
                    );
                } else if needed > secs as f64 {
                    e.reject(
                        format!(
                            "largest layer {} takes {:.0} min at {}, over {name}'s {}-minute upload limit",
                            image.largest_layer,
                            needed / 60.0,
                            mb_per_s(rate),
                            secs / 60
                        ),
                        format!(
                            "keep layers under {max_layer} (what uploads in {} min at {})",
                            secs / 60,
                            mb_per_s(rate)
                        ),
                    );
                } else {
                    e.reasons.push(format!(
                        "largest layer uploads in {:.0} s at {}{assumed}, within the {}-minute limit",
                        needed,
                        mb_per_s(rate),
                        secs / 60
                    ));
                }
            }
            None => e.reasons.push(format!(
                "{name} ends uploads after {} minutes; upload_rate is not given, so this is not checked",
                secs / 60
            )),
        }
    }

    // Storage and transfer quotas.
    let ghcr_free_today = t.kind == RegistryKind::Ghcr && c.billing == Billing::CurrentlyFree;
    let (storage_fact, transfer_fact) =
        if private { (t.private_storage, t.private_transfer) } else { (t.public_storage, t.public_transfer) };
    let mut storage = o.storage.map_or(storage_fact.value, |free| Limit::Quota { free, over: Overage::Blocked });
    let mut transfer = o.transfer.map_or(transfer_fact.value, |free| Limit::Quota { free, over: Overage::Blocked });
    if private && let Some(note) = &t.not_billed_today {
        if ghcr_free_today && o.storage.is_none() && o.transfer.is_none() {
            storage = Limit::Unlimited;
            transfer = Limit::Unlimited;
            e.reasons.push(format!(
                "billing: currently-free: relying on this ({}): the documented private quota is not applied",
                note.value
            ));
        } else if matches!(storage, Limit::Quota { .. }) {
            e.reasons.push(format!(
                "the documented private quota is applied although {} (billing: currently-free opts out)",
                note.value.trim_start_matches("GitHub says ")
            ));
        }
    }
    let scope = if private { "private" } else { "public" };
    quota_check(&mut e, name, &format!("{scope} storage"), storage, image.total, c.usage.storage, "storage used");
    let monthly = image.pulls_per_month.map(|p| ByteSize(image.total.0.saturating_mul(p)));
    match (transfer, monthly) {
        (Limit::Unlimited, _) => {}
        (Limit::Quota { free, .. }, None) => {
            e.exact = false;
            e.reasons.push(format!(
                "{scope} transfer: {free} free a month; pulls_per_month is not given, so this is not checked"
            ));
        }
        (limit, Some(m)) => {
            let pulls = image.pulls_per_month.unwrap_or(0);
            let assumed = if image.pulls_assumed { ", assumed: set pulls_per_month" } else { "" };
            let label = format!("{scope} transfer ({pulls} pulls × {} a month{assumed})", image.total);
            let (was_rejected, reasons, fixes) = (e.rejected, e.reasons.len(), e.fixes.len());
            quota_check(&mut e, name, &label, limit, m, c.usage.transfer, "transfer used this month");
            let left = match limit {
                Limit::Quota { free, .. } => free.0.saturating_sub(c.usage.transfer.map_or(0, |u| u.0)),
                Limit::Unlimited => u64::MAX,
            };
            let fit = left / image.total.0.max(1);
            // Only the assumed figure breaks it (one pull a month would fit): say where the
            // verdict changes instead of rejecting.
            if image.pulls_assumed
                && e.rejected
                && !was_rejected
                && fit >= 1
                && let Limit::Quota { free, .. } = limit
            {
                e.rejected = false;
                e.reasons.truncate(reasons);
                e.fixes.truncate(fixes);
                e.assume(
                    name,
                    format!(
                        "{scope} transfer: {free} free a month fits up to {fit} pull{} of {} a month, {pulls} assumed ({m}); set pulls_per_month",
                        if fit == 1 { "" } else { "s" },
                        image.total
                    ),
                );
            }
        }
    }

    // Pull rate and region: not reasons to reject; a pull limit RunPod would hit ranks lower.
    let mut pull_limit = None;
    let measured_rate = c.usage.anonymous_pulls;
    let rate = match (measured_rate, t.anonymous_pull_rate.value) {
        (Some((n, w)), Some((_, _, per))) => Some((n, w, per)),
        (Some((n, w)), None) => Some((n, w, "IP")),
        (None, fact) => fact,
    };
    if let Some((n, window, per)) = rate {
        let window_secs = window;
        let window = if window % 3600 == 0 { format!("{} h", window / 3600) } else { format!("{window} s") };
        let measured = if measured_rate.is_some() { " (measured: ratelimit-limit)" } else { "" };
        let limit = format!("{n} anonymous pulls per {window} per {per}{measured}");
        // A quota over hours is what a burst of cold starts runs into; a per-second rate only
        // paces them.
        if c.anonymous_pulls && window_secs >= 3600 {
            e.reasons.push(format!(
                "{name} allows {limit}, and RunPod would pull this public image without credentials: cold starts can hit it (give this registry pull_credentials to lift it)"
            ));
            pull_limit = Some(limit);
        } else {
            e.reasons.push(format!(
                "anonymous pulls are limited to {n} per {window} per {per}: give RunPod credentials to pull past it"
            ));
        }
    }
    if let (Some(want), Some(have)) = (&image.region, c.region)
        && !want.eq_ignore_ascii_case(have)
    {
        e.reasons.push(format!("serves from {have}, the image runs in {want}"));
    }
    if let Some(fixed) = o.cost_per_month {
        e.cost += fixed;
        e.reasons.push(format!("fixed cost {}/month (limits.cost_per_month)", usd(fixed)));
    }

    Verdict {
        registry: c.id.to_string(),
        kind: t.kind,
        tier: t.name,
        label: t.label,
        verdict: if e.rejected { VerdictKind::Rejected } else { VerdictKind::Eligible },
        cost: (!e.rejected).then_some(e.cost),
        cost_exact: e.exact,
        reasons: e.reasons,
        margins: e.margins,
        fixes: e.fixes,
        usage: c.usage.clone(),
        pull_limit: if e.rejected { None } else { pull_limit },
        warnings: e.warnings,
        assumptions: e.assumptions,
    }
}

/// Checks `need` against a quota, given what is already used (`None`: unknown).
fn quota_check(
    e: &mut Eval,
    name: &str,
    what: &str,
    limit: Limit,
    need: ByteSize,
    used: Option<ByteSize>,
    used_key: &str,
) {
    let Limit::Quota { free, over } = limit else {
        return;
    };
    let Some(used) = used else {
        e.exact = false;
        e.margins.push(Margin { limit: margin_label(what), free, left: None });
        if need > free {
            match over {
                Overage::Blocked => e.reject(
                    format!("{what}: {need} needed exceeds the {free} {name} allows, whatever is already used"),
                    format!("make the image smaller than {free}, raise limits, or choose a paid tier"),
                ),
                Overage::Billed { usd_per_gb } => {
                    e.cost += (need.gb() - free.gb()) * usd_per_gb;
                    e.reasons.push(format!(
                        "{what}: {need} needed, over the {free} free at {}/GB; usage is unknown",
                        usd(usd_per_gb)
                    ));
                }
            }
        } else {
            e.reasons.push(format!(
                "{what}: {need} needed of {free} free; usage is unknown, so the margin is too (set used.{})",
                used_key.split(' ').next().unwrap_or("storage")
            ));
        }
        return;
    };
    let left = ByteSize(free.0.saturating_sub(used.0));
    if need <= left {
        let after = ByteSize(left.0 - need.0);
        e.margins.push(Margin { limit: margin_label(what), free, left: Some(after) });
        e.reasons.push(format!("{what}: {need} fits the {left} left of {free} free ({after} left after)"));
        return;
    }
    e.margins.push(Margin { limit: margin_label(what), free, left: Some(ByteSize(0)) });
    let over_by = ByteSize(need.0 - left.0);
    match over {
        Overage::Blocked => e.reject(
            format!("{what}: {need} needed but only {left} of {free} is left ({used} {used_key}); {name} refuses usage past it"),
            format!("free {over_by} there, raise limits, or choose a paid tier"),
        ),
        Overage::Billed { usd_per_gb } => {
            e.cost += over_by.gb() * usd_per_gb;
            e.reasons.push(format!("{what}: {over_by} over the {free} free, billed at {}/GB", usd(usd_per_gb)));
        }
    }
}

/// `private transfer (3 pulls × 1 GB a month)` → `private transfer`.
fn margin_label(what: &str) -> String {
    what.split(" (").next().unwrap_or(what).to_string()
}

#[cfg(test)]
mod tests;
