//! The reference decision matrix (the research the project started from: GitHub, Docker Hub, ECR, GAR and self-hosted prices for RunPod images), reproduced from facts, and the edges.

use super::catalog::tier;
use super::*;
use crate::policy::LimitOverrides;

const GB: u64 = 1_000_000_000;
const MB: u64 = 1_000_000;

struct Reg {
    id: &'static str,
    kind: RegistryKind,
    tier: Option<&'static str>,
    overrides: LimitOverrides,
    billing: Billing,
    usage: Usage,
    /// RunPod has credentials for this registry.
    pull_credentials: bool,
}

fn reg(id: &'static str, kind: RegistryKind) -> Reg {
    Reg {
        id,
        kind,
        tier: None,
        overrides: LimitOverrides::default(),
        billing: Billing::Documented,
        usage: known(0, 0, 0),
        pull_credentials: false,
    }
}

fn known(storage: u64, transfer: u64, private_repos: u32) -> Usage {
    Usage {
        storage: Some(ByteSize(storage)),
        transfer: Some(ByteSize(transfer)),
        private_repositories: Some(private_repos),
        source: UsageSource::Policy,
        anonymous_pulls: None,
        ..Default::default()
    }
}

/// The usual candidates, in the order a policy would list them: GHCR (Free), ECR Public,
/// Docker Hub (Personal, its one private repository in use), a self-hosted registry on a
/// 500 GB disk with 100 GB used.
fn usual() -> Vec<Reg> {
    let mut hub = reg("hub", RegistryKind::Dockerhub);
    hub.usage = known(0, 0, 1);
    let mut home = reg("home", RegistryKind::Registry);
    home.overrides.storage = Some(ByteSize(500 * GB));
    home.usage = known(100 * GB, 0, 0);
    let mut ecr = reg("ecr", RegistryKind::EcrPublic);
    ecr.usage = known(10 * GB, 0, 0);
    vec![reg("ghcr", RegistryKind::Ghcr), ecr, hub, home]
}

/// An image pulled whole 10 times a month (a few pod starts a week).
fn image(visibility: Visibility, total: u64, largest: u64) -> ImageFacts {
    ImageFacts {
        total: ByteSize(total),
        largest_layer: ByteSize(largest),
        visibility,
        pulls_per_month: Some(10),
        region: None,
        pulls_assumed: false,
        sizes_bound: false,
    }
}

fn candidates<'a>(regs: &'a [Reg], img: &ImageFacts) -> Vec<Candidate<'a>> {
    regs.iter()
        .map(|r| Candidate {
            id: r.id,
            tier: tier(r.kind, r.tier).expect("tier"),
            overrides: &r.overrides,
            billing: r.billing,
            region: None,
            usage: r.usage.clone(),
            anonymous_pulls: img.visibility == Visibility::Public && !r.pull_credentials,
        })
        .collect()
}

fn run(img: &ImageFacts, regs: &[Reg], upload_rate: Option<u64>, publish_to: PublishTo) -> Vec<Verdict> {
    select(img, &candidates(regs, img), upload_rate.map(ByteSize), publish_to)
}

fn selected(v: &[Verdict]) -> Vec<&str> {
    v.iter().filter(|v| v.verdict == VerdictKind::Selected).map(|v| v.registry.as_str()).collect()
}

fn verdict<'a>(v: &'a [Verdict], id: &str) -> &'a Verdict {
    v.iter().find(|v| v.registry == id).unwrap()
}

fn reasons(v: &Verdict) -> String {
    v.reasons.join(" | ")
}

/// A typical CI runner's upload to a registry: 10 MB/s.
const RUNNER: Option<u64> = Some(10 * MB);

#[test]
fn decision_matrix_rows_follow_from_facts() {
    use Visibility::{Private, Public};
    let rows: &[(&str, Visibility, u64, u64, u64, &str)] = &[
        ("public image under 5 GB", Public, 3 * GB, 1_500 * MB, 10, "ghcr"),
        // A 5-50 GB image has layers that no longer upload within GHCR's 10 minutes.
        ("public image 5-50 GB", Public, 20 * GB, 8 * GB, 10, "ecr"),
        // The reference's "private < 1 GB → GHCR" holds below GHCR Free's documented 500 MB
        // storage and 1 GB transfer a month: here 400 MB pulled twice.
        ("private image under the GHCR Free quota", Private, 400 * MB, 200 * MB, 2, "ghcr"),
        ("private image 1-10 GB", Private, 4 * GB, 2 * GB, 10, "home"),
        ("large AI image, models baked in, layers optimised", Public, 22 * GB, 9_500 * MB, 10, "ecr"),
        ("small image, models on a network volume", Public, 4 * GB, GB, 10, "ghcr"),
        ("full control, no limits (private, 30 GB)", Private, 30 * GB, 12 * GB, 10, "home"),
    ];
    for (row, vis, total, largest, pulls, want) in rows {
        let mut img = image(*vis, *total, *largest);
        img.pulls_per_month = Some(*pulls);
        let v = run(&img, &usual(), RUNNER, PublishTo::Best);
        assert_eq!(selected(&v), vec![*want], "{row}: {:#?}", v);
    }
}

#[test]
fn private_1_to_10_gb_explains_every_loser() {
    let v = run(&image(Visibility::Private, 4 * GB, 2 * GB), &usual(), RUNNER, PublishTo::Best);
    let ghcr = reasons(verdict(&v, "ghcr"));
    assert!(ghcr.contains("private storage: 4.0 GB needed but only 500.0 MB of 500.0 MB is left"), "{ghcr}");
    assert!(ghcr.contains("documented private quota is applied"), "{ghcr}");
    assert!(reasons(verdict(&v, "ecr")).contains("ECR Public hosts public images only; this image is private"));
    assert!(reasons(verdict(&v, "hub")).contains("allows 1 private repository; 1 already in use"));
    assert_eq!(verdict(&v, "home").cost, Some(0.0));
}

#[test]
fn layer_just_over_ghcrs_limit_is_rejected_with_the_numbers() {
    let v = run(&image(Visibility::Public, 12 * GB, 10 * GB + 1), &usual(), None, PublishTo::Best);
    let ghcr = verdict(&v, "ghcr");
    assert_eq!(ghcr.verdict, VerdictKind::Rejected);
    assert!(
        reasons(ghcr).contains("largest layer 10.0 GB exceeds GHCR, GitHub Free's 10.0 GB per-layer limit"),
        "{}",
        reasons(ghcr)
    );
    // ECR's limit is 10,000 MiB (10.49 GB): the same layer fits there.
    assert_eq!(selected(&v), vec!["ecr"]);
    let at_limit = run(&image(Visibility::Public, 12 * GB, 10 * GB), &usual(), None, PublishTo::Best);
    assert_eq!(selected(&at_limit), vec!["ghcr"]);
}

/// A docker source's layers count at their uncompressed size until the push: a limit that
/// only that upper bound breaks is an assumption with a warning, not a rejection.
#[test]
fn an_uncompressed_layer_over_the_limit_is_an_assumption_not_a_rejection() {
    let mut img = image(Visibility::Public, 12 * GB, 11 * GB);
    img.sizes_bound = true;
    let v = run(&img, &usual(), None, PublishTo::Best);
    let ghcr = verdict(&v, "ghcr");
    assert_ne!(ghcr.verdict, VerdictKind::Rejected, "{}", reasons(ghcr));
    assert!(
        reasons(ghcr).contains("11.0 GB uncompressed, over GHCR, GitHub Free's 10.0 GB per-layer limit"),
        "{}",
        reasons(ghcr)
    );
    assert!(ghcr.warnings.iter().any(|w| w.contains("fits if it compresses below that")), "{:?}", ghcr.warnings);
    img.sizes_bound = false;
    let v = run(&img, &usual(), None, PublishTo::Best);
    assert_eq!(verdict(&v, "ghcr").verdict, VerdictKind::Rejected);
}

#[test]
fn free_storage_exactly_used_up() {
    let mut regs = vec![reg("ghcr", RegistryKind::Ghcr)];
    regs[0].usage = known(500 * MB, 0, 0);
    let mut img = image(Visibility::Private, 1, 1);
    img.pulls_per_month = Some(1);
    let v = run(&img, &regs, None, PublishTo::Best);
    assert_eq!(v[0].verdict, VerdictKind::Rejected, "{:#?}", v);
    assert!(reasons(&v[0]).contains("only 0 B of 500.0 MB is left (500.0 MB storage used)"), "{}", reasons(&v[0]));
    // An image that fills exactly what is left fits, with no margin after.
    regs[0].usage = known(300 * MB, 0, 0);
    let mut img = image(Visibility::Private, 200 * MB, 100 * MB);
    img.pulls_per_month = Some(1);
    let v = run(&img, &regs, None, PublishTo::Best);
    assert_eq!(v[0].verdict, VerdictKind::Selected);
    assert_eq!(v[0].margins[0].left, Some(ByteSize(0)));
}

#[test]
fn docker_hub_private_repository_limit() {
    let mut hub = reg("hub", RegistryKind::Dockerhub);
    hub.usage = known(0, 0, 0);
    let v = run(&image(Visibility::Private, 2 * GB, GB), std::slice::from_ref(&hub), None, PublishTo::Best);
    assert_eq!(selected(&v), vec!["hub"]);
    hub.usage = known(0, 0, 1);
    let v = run(&image(Visibility::Private, 2 * GB, GB), std::slice::from_ref(&hub), None, PublishTo::Best);
    assert_eq!(v[0].verdict, VerdictKind::Rejected);
    assert_eq!(v[0].fixes, vec!["delete a private repository there, or set tier: pro"]);
    hub.tier = Some("pro");
    let v = run(&image(Visibility::Private, 2 * GB, GB), std::slice::from_ref(&hub), None, PublishTo::Best);
    assert_eq!(selected(&v), vec!["hub"]);
}

#[test]
fn unknown_usage_is_reported_never_guessed() {
    let mut ghcr = reg("ghcr", RegistryKind::Ghcr);
    ghcr.usage = Usage { source: UsageSource::Unknown, ..Default::default() };
    let home = reg("home", RegistryKind::Registry);
    let mut img = image(Visibility::Private, 300 * MB, 100 * MB);
    img.pulls_per_month = Some(1);
    let v = run(&img, &[ghcr, home], None, PublishTo::Best);
    let g = verdict(&v, "ghcr");
    assert_eq!(g.verdict, VerdictKind::Eligible);
    assert!(!g.cost_exact);
    assert_eq!(g.margins[0].left, None);
    assert!(reasons(g).contains("usage is unknown"), "{}", reasons(g));
    assert!(reasons(g).contains("how many are in use is unknown") || g.kind == RegistryKind::Ghcr);
    // At equal cost, the candidate whose cost is known wins over the unknown one.
    assert_eq!(selected(&v), vec!["home"]);
}

#[test]
fn ghcr_currently_free_opt_in_lifts_the_documented_quota() {
    let mut ghcr = reg("ghcr", RegistryKind::Ghcr);
    ghcr.billing = Billing::CurrentlyFree;
    let v = run(&image(Visibility::Private, 4 * GB, GB), &[ghcr], None, PublishTo::Best);
    assert_eq!(selected(&v), vec!["ghcr"]);
    assert!(reasons(&v[0]).contains("billing: currently-free"), "{}", reasons(&v[0]));
}

#[test]
fn paid_ghcr_tier_bills_the_overage() {
    let mut ghcr = reg("ghcr", RegistryKind::Ghcr);
    ghcr.tier = Some("pro");
    let mut img = image(Visibility::Private, 4 * GB, GB);
    img.pulls_per_month = Some(2);
    let v = run(&img, &[ghcr], None, PublishTo::Best);
    assert_eq!(v[0].verdict, VerdictKind::Selected);
    let cost = v[0].cost.unwrap();
    assert!((cost - 0.5).abs() < 1e-9, "2 GB over at $0.25/GB: {cost}");
}

#[test]
fn ecr_anonymous_transfer_cap_rejects_heavy_pulls() {
    let mut img = image(Visibility::Public, 3 * GB, GB);
    img.pulls_per_month = Some(200);
    let v = run(&img, &[reg("ecr", RegistryKind::EcrPublic)], None, PublishTo::Best);
    assert_eq!(v[0].verdict, VerdictKind::Rejected);
    assert!(
        reasons(&v[0]).contains("public transfer (200 pulls × 3.0 GB a month): 600.0 GB needed but only 500.0 GB"),
        "{}",
        reasons(&v[0])
    );
}

#[test]
fn publish_to_all_mirrors_to_every_eligible_candidate() {
    let v = run(&image(Visibility::Public, 3 * GB, GB), &usual(), RUNNER, PublishTo::All);
    assert_eq!(selected(&v), vec!["ghcr", "ecr", "hub", "home"]);
}

#[test]
fn no_eligible_candidate_leaves_every_verdict_rejected_with_fixes() {
    let v = run(&image(Visibility::Private, 20 * GB, 11 * GB), &usual()[..3], RUNNER, PublishTo::Best);
    assert!(v.iter().all(|v| v.verdict == VerdictKind::Rejected));
    assert!(v.iter().all(|v| !v.fixes.is_empty()));
}

#[test]
fn cheapest_wins_over_order_of_preference() {
    let mut vps = reg("vps", RegistryKind::Registry);
    vps.overrides.cost_per_month = Some(5.0);
    let v =
        run(&image(Visibility::Public, GB, GB / 2), &[vps, reg("ghcr", RegistryKind::Ghcr)], RUNNER, PublishTo::Best);
    assert_eq!(selected(&v), vec!["ghcr"]);
}

#[test]
fn cold_starts_rank_an_anonymous_pull_limit_after_an_equally_cheap_registry_without() {
    // Docker Hub listed first, ECR Public second, both free for a public 3 GB image.
    let mut hub = reg("hub", RegistryKind::Dockerhub);
    hub.usage = known(0, 0, 0);
    let regs = vec![hub, reg("ecr", RegistryKind::EcrPublic)];
    let v = run(&image(Visibility::Public, 3 * GB, GB), &regs, RUNNER, PublishTo::Best);
    assert_eq!(selected(&v), vec!["ecr"], "{v:#?}");
    let hub = reasons(verdict(&v, "hub"));
    assert!(hub.contains("ranks after ecr, which costs the same: RunPod pulls this image anonymously and cold starts would hit the limit of 100 anonymous pulls per 6 h per IPv4 address or IPv6 /64"), "{hub}");
    assert_eq!(
        verdict(&v, "hub").pull_limit.as_deref(),
        Some("100 anonymous pulls per 6 h per IPv4 address or IPv6 /64")
    );

    // With RunPod credentials for Docker Hub, the limit does not apply: order of preference.
    let mut regs = regs;
    regs[0].pull_credentials = true;
    let v = run(&image(Visibility::Public, 3 * GB, GB), &regs, RUNNER, PublishTo::Best);
    assert_eq!(selected(&v), vec!["hub"], "{v:#?}");
    // A private image is pulled with credentials anyway.
    assert!(
        verdict(&run(&image(Visibility::Private, 300 * MB, MB), &regs, RUNNER, PublishTo::Best), "hub")
            .pull_limit
            .is_none()
    );
}

#[test]
fn artifact_registry_bills_storage_past_half_a_gigabyte_and_every_pull_to_runpod() {
    let gar = reg("gar", RegistryKind::Gar);
    let mut home = reg("home", RegistryKind::Registry);
    home.overrides.storage = Some(ByteSize(500 * GB));
    let v = run(&image(Visibility::Private, 3 * GB, GB), &[gar, home], RUNNER, PublishTo::Best);
    let gar = verdict(&v, "gar");
    // 2.5 GB over the 0.5 GB free at $0.10, plus 10 pulls × 3 GB of egress at $0.12.
    let cost = gar.cost.unwrap();
    assert!((cost - (2.5 * 0.10 + 30.0 * 0.12)).abs() < 1e-9, "{cost}");
    assert!(
        reasons(gar)
            .contains("private transfer (10 pulls × 3.0 GB a month): 30.0 GB over the 0 B free, billed at $0.12/GB"),
        "{}",
        reasons(gar)
    );
    assert_eq!(selected(&v), vec!["home"]);
}

#[test]
fn a_limit_broken_only_on_an_assumed_figure_never_rejects_it_ranks_last_and_says_which_figure() {
    // A public 22 GB image with 9.5 GB layers, no pulls_per_month, no upload_rate.
    let mut img = image(Visibility::Public, 22 * GB, 9_500 * MB);
    img.pulls_per_month = Some(DEFAULT_PULLS_PER_MONTH);
    img.pulls_assumed = true;
    let v = select_with(&img, &candidates(&usual(), &img), Some(DEFAULT_UPLOAD_RATE), true, PublishTo::Best);
    let ghcr = verdict(&v, "ghcr");
    assert_ne!(ghcr.verdict, VerdictKind::Rejected, "{}", reasons(ghcr));
    assert!(
        ghcr.assumptions[0].contains("at the assumed upload rate of 10.0 MB/s")
            && ghcr.assumptions[0].contains("set upload_rate"),
        "{:?}",
        ghcr.assumptions
    );
    assert!(ghcr.warnings[0].contains("set upload_rate"), "{:?}", ghcr.warnings);
    // ECR Public: 30 × 22 GB = 660 GB of anonymous transfer, over the 500 GB cap.
    let ecr = verdict(&v, "ecr");
    assert_ne!(ecr.verdict, VerdictKind::Rejected, "{}", reasons(ecr));
    assert!(
        ecr.assumptions.iter().any(|a| a.contains("fits up to 22 pulls") && a.contains("set pulls_per_month")),
        "{:?}",
        ecr.assumptions
    );
    // Given figures: no warning, and the same limits reject.
    img.pulls_per_month = Some(10);
    img.pulls_assumed = false;
    let v = select_with(&img, &candidates(&usual(), &img), Some(ByteSize(50 * MB)), false, PublishTo::Best);
    assert!(v.iter().all(|x| x.warnings.is_empty() && x.assumptions.is_empty()), "{v:#?}");
    img.pulls_per_month = Some(30);
    let v = select_with(&img, &candidates(&usual(), &img), Some(ByteSize(MB)), false, PublishTo::Best);
    assert_eq!(verdict(&v, "ecr").verdict, VerdictKind::Rejected, "the user's own 30 pulls reject");
    assert_eq!(verdict(&v, "ghcr").verdict, VerdictKind::Rejected, "the user's own 1 MB/s rejects");
}

/// The reference decision matrix: a private image under 1 GB goes to GHCR. With no
/// pulls_per_month, GHCR Free's 1 GB transfer is broken only by the 30 assumed pulls: GHCR is
/// still selected, and says at what figure the verdict changes.
#[test]
fn a_private_300_mb_image_without_pulls_per_month_goes_to_ghcr() {
    let mut img = image(Visibility::Private, 314 * MB, 200 * MB);
    img.pulls_per_month = Some(DEFAULT_PULLS_PER_MONTH);
    img.pulls_assumed = true;
    let regs: Vec<Reg> = usual().into_iter().filter(|r| r.id == "ecr" || r.id == "ghcr").collect();
    let v = select_with(&img, &candidates(&regs, &img), Some(DEFAULT_UPLOAD_RATE), true, PublishTo::Best);
    assert_eq!(selected(&v), vec!["ghcr"], "{v:#?}");
    let ghcr = verdict(&v, "ghcr");
    assert!(
        ghcr.assumptions.iter().any(|a| a.contains("fits up to 3 pulls") && a.contains("set pulls_per_month")),
        "{:?}",
        ghcr.assumptions
    );
    assert!(reasons(ghcr).contains("selected: nothing fits with the assumed figures"), "{}", reasons(ghcr));
}

/// A candidate that fits as things are wins over one listed earlier that fits only if an
/// assumption is wrong.
#[test]
fn a_candidate_that_fits_without_assumptions_ranks_first() {
    let mut img = image(Visibility::Private, 314 * MB, 200 * MB);
    img.pulls_per_month = Some(DEFAULT_PULLS_PER_MONTH);
    img.pulls_assumed = true;
    let regs: Vec<Reg> = usual().into_iter().filter(|r| r.id == "ghcr" || r.id == "home").collect();
    let v = select_with(&img, &candidates(&regs, &img), Some(DEFAULT_UPLOAD_RATE), true, PublishTo::Best);
    assert_eq!(selected(&v), vec!["home"], "{v:#?}");
    let ghcr = verdict(&v, "ghcr");
    assert_eq!(ghcr.verdict, VerdictKind::Eligible, "{}", reasons(ghcr));
    assert!(ghcr.assumptions.iter().any(|a| a.contains("fits up to 3 pulls")), "{:?}", ghcr.assumptions);
}
