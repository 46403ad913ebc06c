//! One function per check `evaluate` makes of a candidate: privacy, layer size, upload time,
//! storage and transfer quotas, pull rate, region and fixed cost. Each adds its reasons (with
//! the numbers), rejections with their fixes, margins and assumptions to one `Eval`.

use super::catalog::{Limit, Overage};
use super::{Candidate, ImageFacts, Margin};
use crate::policy::{Billing, RegistryKind, Visibility};
use crate::types::ByteSize;

#[derive(Default)]
pub(super) struct Eval {
    pub reasons: Vec<String>,
    pub fixes: Vec<String>,
    pub rejected: bool,
    pub cost: f64,
    pub exact: bool,
    pub margins: Vec<Margin>,
    pub warnings: Vec<String>,
    pub assumptions: Vec<String>,
    /// Reasons that only inform (a limit that paces pulls): not why a candidate fails.
    pub notes: Vec<String>,
}

impl Eval {
    /// A reason that informs but decides nothing.
    fn note(&mut self, reason: String) {
        self.notes.push(reason.clone());
        self.reasons.push(reason);
    }

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

pub(super) fn mb_per_s(rate: ByteSize) -> String {
    format!("{:.1} MB/s", rate.0 as f64 / 1e6)
}

pub(super) fn usd(x: f64) -> String {
    format!("${x:.2}")
}

pub(super) fn privacy(e: &mut Eval, image: &ImageFacts, c: &Candidate) {
    let (t, o, name) = (c.tier, c.overrides, c.tier.label);
    let private = image.visibility == Visibility::Private;
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
}

pub(super) fn layer_size(e: &mut Eval, image: &ImageFacts, c: &Candidate) {
    let (t, o, name) = (c.tier, c.overrides, c.tier.label);
    if let Some(max) = o.max_layer.or(t.max_layer.value) {
        if image.largest_layer > max && image.sizes_bound {
            e.assume(
                name,
                format!(
                    "the largest layer is {} uncompressed, over {name}'s {max} per-layer limit: it fits if it compresses below that (the registry refuses it in the push otherwise)",
                    image.largest_layer
                ),
            );
        } else if image.largest_layer > max {
            e.reject(
                format!("largest layer {} exceeds {name}'s {max} per-layer limit", image.largest_layer),
                format!("split layers below {max} (model weights can live on a RunPod network volume)"),
            );
        } else {
            e.reasons.push(format!("largest layer {} is within the {max} per-layer limit", image.largest_layer));
        }
    }
}

pub(super) fn upload_time(
    e: &mut Eval,
    image: &ImageFacts,
    c: &Candidate,
    upload_rate: Option<ByteSize>,
    rate_assumed: bool,
) {
    let (t, name) = (c.tier, c.tier.label);
    if let Some(secs) = t.upload_timeout_secs.value {
        match upload_rate {
            Some(rate) => {
                let needed = image.largest_layer.0 as f64 / rate.0 as f64;
                let max_layer = ByteSize(rate.0.saturating_mul(secs));
                let assumed = if rate_assumed { " (assumed: set upload_rate)" } else { "" };
                if needed > secs as f64 && image.sizes_bound && !rate_assumed {
                    e.assume(
                        name,
                        format!(
                            "the largest layer, {} uncompressed, would take {:.0} min at {}, over the {}-minute upload limit: it fits if it compresses to {} or less",
                            image.largest_layer,
                            needed / 60.0,
                            mb_per_s(rate),
                            secs / 60,
                            ByteSize(rate.0.saturating_mul(secs))
                        ),
                    );
                } else if needed > secs as f64 && rate_assumed {
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
}

pub(super) fn quotas(e: &mut Eval, image: &ImageFacts, c: &Candidate) {
    let (t, o, name) = (c.tier, c.overrides, c.tier.label);
    let private = image.visibility == Visibility::Private;
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
    // With retention.on_run, every run prunes: what is left after it is what counts.
    let used = match (c.usage.storage, c.usage.storage_after_retention) {
        (Some(now), Some(after)) => {
            let counted = if c.usage.counts_retention {
                "counted (retention.on_run)"
            } else {
                "not counted (retention.on_run is off)"
            };
            e.reasons.push(format!("storage used: {now} measured, {after} after retention: {counted}"));
            Some(if c.usage.counts_retention { after } else { now })
        }
        (now, _) => now,
    };
    quota_check(e, name, &format!("{scope} storage"), storage, image.total, used, Quota::Storage);
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
            quota_check(e, name, &label, limit, m, c.usage.transfer, Quota::Transfer);
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
}

/// Pull rate, region and fixed cost: not reasons to reject; a pull limit RunPod would hit
/// ranks lower, and is returned.
pub(super) fn pull_rate_region_cost(e: &mut Eval, image: &ImageFacts, c: &Candidate) -> Option<String> {
    let (t, o, name) = (c.tier, c.overrides, c.tier.label);
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
            e.note(format!(
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
    pull_limit
}

/// Checks `need` against a quota, given what is already used (`None`: unknown).
/// Which free-tier quota a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quota {
    Storage,
    Transfer,
}

impl Quota {
    /// Its key under the policy's `used:`.
    fn policy_key(self) -> &'static str {
        match self {
            Quota::Storage => "storage",
            Quota::Transfer => "transfer",
        }
    }

    /// What is already used of it, as a reason says.
    fn used_words(self) -> &'static str {
        match self {
            Quota::Storage => "storage used",
            Quota::Transfer => "transfer used this month",
        }
    }
}

pub(super) fn quota_check(
    e: &mut Eval,
    name: &str,
    what: &str,
    limit: Limit,
    need: ByteSize,
    used: Option<ByteSize>,
    quota: Quota,
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
                quota.policy_key()
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
            format!(
                "{what}: {need} needed but only {left} of {free} is left ({used} {}); {name} refuses usage past it",
                quota.used_words()
            ),
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
