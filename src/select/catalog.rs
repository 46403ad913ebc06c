//! Facts about registries' free tiers and limits, each with its source and the date it was
//! checked against the providers' pages cited with each fact. The engine reasons from these;
//! a policy overrides any of them per registry (`limits:`, `tier:`). Data only.

use crate::policy::RegistryKind;
use crate::types::ByteSize;

/// A fact, with where it comes from and when it was checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fact<T> {
    pub value: T,
    pub source: &'static str,
    pub checked: &'static str,
    /// False where the source is a third party or a guess the domain notes mark unverified.
    pub verified: bool,
}

const fn doc<T>(value: T, source: &'static str, checked: &'static str) -> Fact<T> {
    Fact { value, source, checked, verified: true }
}

const fn unverified<T>(value: T, source: &'static str, checked: &'static str) -> Fact<T> {
    Fact { value, source, checked, verified: false }
}

/// A quota on storage or monthly transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Unlimited,
    /// `free` bytes at no cost; past them, `over` applies.
    Quota {
        free: ByteSize,
        over: Overage,
    },
}

/// What happens past a free quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overage {
    /// Refused: pushes or pulls fail.
    Blocked,
    /// Billed per GB (per GB-month for storage).
    Billed { usd_per_gb: f64 },
}

/// The facts of one registry service on one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub kind: RegistryKind,
    pub name: &'static str,
    pub label: &'static str,
    pub private_allowed: Fact<bool>,
    pub public_storage: Fact<Limit>,
    pub public_transfer: Fact<Limit>,
    pub private_storage: Fact<Limit>,
    pub private_transfer: Fact<Limit>,
    /// Private repositories the plan allows (`None`: no limit).
    pub private_repositories: Fact<Option<u32>>,
    pub max_layer: Fact<Option<ByteSize>>,
    /// An upload (one blob) must finish within this many seconds.
    pub upload_timeout_secs: Fact<Option<u64>>,
    /// Anonymous pulls allowed per window: (pulls, window seconds, per what).
    pub anonymous_pull_rate: Fact<Option<(u32, u32, &'static str)>>,
    /// Set where the provider documents a quota it does not bill today (GHCR).
    pub not_billed_today: Option<Fact<&'static str>>,
    pub regions: Fact<&'static str>,
    pub platforms: Fact<&'static str>,
}

const GHCR_DOCS: &str = "docs.github.com/en/billing/concepts/product-billing/github-packages";
const GHCR_LIMITS: &str =
    "docs.github.com/en/packages/working-with-a-github-packages-registry/working-with-the-container-registry";
const GHCR_PRICES: &str = "https://docs.github.com/en/billing/concepts/product-billing/github-packages (GitHub Packages prices: $0.25/GB-month storage, $0.50/GB transfer)";
const HUB_USAGE: &str = "docs.docker.com/docker-hub/usage/";
const HUB_PULLS: &str = "docs.docker.com/docker-hub/usage/pulls/";
const ECR_QUOTAS: &str = "docs.aws.amazon.com/AmazonECR/latest/public/public-service-quotas.html";
const ECR_PRICING: &str = "aws.amazon.com/ecr/pricing/ (quoted by third parties; page not retrieved)";
const GAR_PRICING: &str = "https://cloud.google.com/artifact-registry/pricing (as quoted by the reference research, 2025: 0.5 GB free per billing account, then $0.10/GB-month; egress to the internet at standard network prices, about $0.12/GB; page not retrieved here)";
const GAR_DOCS: &str = "https://cloud.google.com/artifact-registry/docs (REGION-docker.pkg.dev/PROJECT/REPOSITORY)";
const CHECKED: &str = "2026-11-24";
const PLATFORMS_ANY: &str = "any OCI platform; RunPod pulls linux/amd64 only";

const fn quota(gb_millis: u64, over: Overage) -> Limit {
    Limit::Quota { free: ByteSize(gb_millis * 1_000_000), over }
}

const GHCR_OVER_STORAGE: Overage = Overage::Billed { usd_per_gb: 0.25 };
const GHCR_OVER_TRANSFER: Overage = Overage::Billed { usd_per_gb: 0.50 };

const fn ghcr(
    name: &'static str,
    label: &'static str,
    storage_mb: u64,
    transfer_mb: u64,
    over_s: Overage,
    over_t: Overage,
    quota_source: &'static str,
) -> Tier {
    Tier {
        kind: RegistryKind::Ghcr,
        name,
        label,
        private_allowed: doc(true, GHCR_DOCS, CHECKED),
        public_storage: doc(Limit::Unlimited, GHCR_DOCS, CHECKED),
        public_transfer: doc(Limit::Unlimited, GHCR_DOCS, CHECKED),
        private_storage: doc(quota(storage_mb, over_s), quota_source, CHECKED),
        private_transfer: doc(quota(transfer_mb, over_t), quota_source, CHECKED),
        private_repositories: doc(None, GHCR_DOCS, CHECKED),
        max_layer: doc(Some(ByteSize(10_000_000_000)), GHCR_LIMITS, CHECKED),
        upload_timeout_secs: unverified(Some(600), GHCR_LIMITS, CHECKED),
        anonymous_pull_rate: doc(None, GHCR_DOCS, CHECKED),
        not_billed_today: Some(doc(
            "GitHub says Container registry storage and bandwidth are currently free, with a month's notice before billing starts",
            GHCR_DOCS,
            CHECKED,
        )),
        regions: unverified("global (GitHub's CDN)", GHCR_LIMITS, CHECKED),
        platforms: doc(PLATFORMS_ANY, GHCR_LIMITS, CHECKED),
    }
}

const fn hub(
    name: &'static str,
    label: &'static str,
    private_repos: Option<u32>,
    pull_rate: Option<(u32, u32, &'static str)>,
) -> Tier {
    Tier {
        kind: RegistryKind::Dockerhub,
        name,
        label,
        private_allowed: doc(true, HUB_USAGE, CHECKED),
        // Storage and pull consumption charges were delayed indefinitely / cancelled.
        public_storage: unverified(
            Limit::Unlimited,
            "https://www.docker.com/blog/november-2024-updated-plans-announcement/ (Docker's Nov 2024 plan update)",
            CHECKED,
        ),
        public_transfer: doc(Limit::Unlimited, HUB_PULLS, CHECKED),
        private_storage: unverified(
            Limit::Unlimited,
            "https://www.docker.com/blog/november-2024-updated-plans-announcement/ (Docker's Nov 2024 plan update)",
            CHECKED,
        ),
        private_transfer: doc(Limit::Unlimited, HUB_PULLS, CHECKED),
        private_repositories: doc(private_repos, HUB_USAGE, CHECKED),
        max_layer: unverified(None, HUB_USAGE, CHECKED),
        upload_timeout_secs: unverified(None, HUB_USAGE, CHECKED),
        anonymous_pull_rate: doc(pull_rate, HUB_PULLS, CHECKED),
        not_billed_today: None,
        regions: unverified("global (Docker's CDN)", HUB_USAGE, CHECKED),
        platforms: doc(PLATFORMS_ANY, HUB_USAGE, CHECKED),
    }
}

/// Every known (kind, tier). The first tier of a kind is its default.
pub const TIERS: &[Tier] = &[
    // Free: spending on Packages defaults to $0, so usage past the quota is refused.
    ghcr("free", "GHCR, GitHub Free", 500, 1_000, Overage::Blocked, Overage::Blocked, GHCR_DOCS),
    ghcr("pro", "GHCR, GitHub Pro", 2_000, 10_000, GHCR_OVER_STORAGE, GHCR_OVER_TRANSFER, GHCR_PRICES),
    ghcr("team", "GHCR, GitHub Team", 2_000, 10_000, GHCR_OVER_STORAGE, GHCR_OVER_TRANSFER, GHCR_PRICES),
    ghcr(
        "enterprise",
        "GHCR, GitHub Enterprise Cloud",
        50_000,
        100_000,
        GHCR_OVER_STORAGE,
        GHCR_OVER_TRANSFER,
        GHCR_PRICES,
    ),
    Tier {
        kind: RegistryKind::EcrPublic,
        name: "free",
        label: "ECR Public",
        private_allowed: doc(false, ECR_QUOTAS, CHECKED),
        public_storage: unverified(quota(50_000, Overage::Billed { usd_per_gb: 0.10 }), ECR_PRICING, CHECKED),
        // Anonymous egress is capped, not billed: past it, RunPod's anonymous pulls fail.
        public_transfer: doc(quota(500_000, Overage::Blocked), ECR_QUOTAS, CHECKED),
        private_storage: doc(Limit::Unlimited, ECR_QUOTAS, CHECKED),
        private_transfer: doc(Limit::Unlimited, ECR_QUOTAS, CHECKED),
        private_repositories: doc(Some(0), ECR_QUOTAS, CHECKED),
        max_layer: doc(Some(ByteSize(10_000 * 1024 * 1024)), ECR_QUOTAS, CHECKED),
        upload_timeout_secs: unverified(None, ECR_QUOTAS, CHECKED),
        anonymous_pull_rate: doc(Some((1, 1, "source IP")), ECR_QUOTAS, CHECKED),
        not_billed_today: None,
        regions: doc("global (CloudFront); API in us-east-1", ECR_QUOTAS, CHECKED),
        platforms: doc(PLATFORMS_ANY, ECR_QUOTAS, CHECKED),
    },
    hub("personal", "Docker Hub, Personal (free)", Some(1), Some((100, 21_600, "IPv4 address or IPv6 /64"))),
    hub("pro", "Docker Hub, Pro", None, None),
    hub("team", "Docker Hub, Team", None, None),
    hub("business", "Docker Hub, Business", None, None),
    // Google Artifact Registry: tiny free storage, then billed storage and billed egress to
    // anything outside Google Cloud — RunPod included.
    Tier {
        kind: RegistryKind::Gar,
        name: "standard",
        label: "Google Artifact Registry",
        private_allowed: doc(true, GAR_DOCS, "2026-11-29"),
        public_storage: unverified(quota(500, Overage::Billed { usd_per_gb: 0.10 }), GAR_PRICING, "2026-11-29"),
        public_transfer: unverified(quota(0, Overage::Billed { usd_per_gb: 0.12 }), GAR_PRICING, "2026-11-29"),
        private_storage: unverified(quota(500, Overage::Billed { usd_per_gb: 0.10 }), GAR_PRICING, "2026-11-29"),
        private_transfer: unverified(quota(0, Overage::Billed { usd_per_gb: 0.12 }), GAR_PRICING, "2026-11-29"),
        private_repositories: doc(None, GAR_DOCS, "2026-11-29"),
        max_layer: unverified(None, GAR_DOCS, "2026-11-29"),
        upload_timeout_secs: unverified(None, GAR_DOCS, "2026-11-29"),
        anonymous_pull_rate: unverified(None, GAR_DOCS, "2026-11-29"),
        not_billed_today: None,
        regions: doc("the repository's region or multi-region (us, europe, asia)", GAR_DOCS, "2026-11-29"),
        platforms: doc(PLATFORMS_ANY, GAR_DOCS, "2026-11-29"),
    },
    Tier {
        kind: RegistryKind::Registry,
        name: "self-hosted",
        label: "self-hosted registry",
        private_allowed: doc(true, "distribution/distribution docs/configuration.md", CHECKED),
        public_storage: doc(Limit::Unlimited, "your disk: set limits.storage", CHECKED),
        public_transfer: doc(Limit::Unlimited, "your network plan: set limits.transfer", CHECKED),
        private_storage: doc(Limit::Unlimited, "your disk: set limits.storage", CHECKED),
        private_transfer: doc(Limit::Unlimited, "your network plan: set limits.transfer", CHECKED),
        private_repositories: doc(None, "distribution/distribution", CHECKED),
        max_layer: doc(None, "distribution/distribution (nginx: client_max_body_size 0)", CHECKED),
        upload_timeout_secs: doc(
            None,
            "https://www.freecodecamp.org/news/how-to-self-host-a-container-registry/ (nginx proxy_read_timeout)",
            CHECKED,
        ),
        anonymous_pull_rate: doc(None, "distribution/distribution", CHECKED),
        not_billed_today: None,
        regions: doc("where you host it: set region", CHECKED, CHECKED),
        platforms: doc(PLATFORMS_ANY, "distribution/distribution", CHECKED),
    },
];

/// The tiers of a kind, default first.
pub fn tiers(kind: RegistryKind) -> impl Iterator<Item = &'static Tier> {
    TIERS.iter().filter(move |t| t.kind == kind)
}

/// The named tier of a kind (`None`: the kind's default).
pub fn tier(kind: RegistryKind, name: Option<&str>) -> Option<&'static Tier> {
    match name {
        None => tiers(kind).next(),
        Some(n) => tiers(kind).find(|t| t.name == n),
    }
}
