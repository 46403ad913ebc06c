//! Registry selection: a pure function from an image's facts, its candidate registries (with
//! the catalog's facts and the policy's overrides) and the usage already spent, to a verdict
//! per candidate with every reason, quoting the numbers. No network, no clock.

pub mod catalog;
mod checks;

use serde::Serialize;

use crate::policy::{Billing, LimitOverrides, PublishTo, RegistryKind, Visibility};
use crate::types::ByteSize;
use catalog::Tier;
use checks::{Eval, usd};

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
    /// `total` and `largest_layer` count layers Docker saved uncompressed at that size: upper
    /// bounds of what is sent (compressed in the push), so a per-layer limit or upload time
    /// they break is an assumption, not a rejection.
    pub sizes_bound: bool,
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

crate::word_enum! {
    /// How a registry's usage figures were obtained.
    #[derive(Default)]
    pub enum UsageSource {
        Measured => "measured",
        /// From the policy's `used:`.
        Policy => "policy",
        #[default]
        Unknown => "unknown",
    }
}

/// Usage already spent on a registry; `None` is unknown, never guessed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub storage: Option<ByteSize>,
    pub transfer: Option<ByteSize>,
    pub private_repositories: Option<u32>,
    pub source: UsageSource,
    /// Anonymous pulls allowed per window (pulls, seconds), measured from the registry's
    /// `ratelimit-limit` header; overrides the catalog's figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_pulls: Option<(u32, u32)>,
    /// The measured storage less what `retention:` would delete now (`publish prune`'s dry
    /// run), when the policy has retention for images on this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_after_retention: Option<ByteSize>,
    /// Selection counts `storage_after_retention` (`retention.on_run: true`: every run prunes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_retention: bool,
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
    /// Which of `reasons` only inform (a per-second pull rate): left out where a message says
    /// why a candidate does not fit.
    #[serde(skip)]
    pub notes: Vec<String>,
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
    let mut e = Eval { exact: true, ..Eval::default() };
    checks::privacy(&mut e, image, c);
    checks::layer_size(&mut e, image, c);
    checks::upload_time(&mut e, image, c, upload_rate, rate_assumed);
    checks::quotas(&mut e, image, c);
    let pull_limit = checks::pull_rate_region_cost(&mut e, image, c);
    let t = c.tier;
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
        notes: e.notes,
    }
}

#[cfg(test)]
mod tests;
