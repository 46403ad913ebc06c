use super::*;

fn lower(args: &[&str]) -> Result<Request, clap::Error> {
    Cli::try_parse_from(std::iter::once("publish").chain(args.iter().copied())).map(Cli::into_request)
}

#[test]
fn bare_dry_run_is_the_plan_and_bare_is_run() {
    assert!(matches!(lower(&["--dry-run"]).unwrap(), Request::Plan(_)));
    assert!(matches!(lower(&[]).unwrap(), Request::Run(RunArgs { dry_run: false, .. })));
}

/// Whether a lowered request is a dry run of its writing command.
fn is_dry_run(r: &Request) -> bool {
    match r {
        Request::Run(a) => a.dry_run,
        Request::Push(p) => p.dry_run,
        Request::Sign(s) => s.dry_run,
        Request::RunPod(RunPodArgs { command: RunPodCommand::Sync { dry_run, .. }, .. }) => *dry_run,
        Request::RunPod(RunPodArgs { command: RunPodCommand::Rollback { dry_run, .. }, .. }) => *dry_run,
        Request::Prune(p) => p.dry_run,
        _ => false,
    }
}

#[test]
fn every_writing_command_takes_dry_run_before_or_after_it() {
    let commands: [&[&str]; 6] = [
        &["prune"],
        &["run"],
        &["push", "oci:x", "docker://h/r"],
        &["sign", "h/r@sha256:00", "--key", "k"],
        &["runpod", "sync"],
        &["runpod", "rollback", "t", "--to", "previous"],
    ];
    for command in commands {
        let before = [&["--dry-run"], command].concat();
        let after = [command, &["--dry-run"]].concat();
        assert!(is_dry_run(&lower(&before).unwrap()), "{before:?}");
        assert!(is_dry_run(&lower(&after).unwrap()), "{after:?}");
        assert!(!is_dry_run(&lower(command).unwrap()), "{command:?}");
    }
    assert!(matches!(lower(&["--dry-run", "generate-key-pair"]).unwrap(), Request::Refused(_)));
    assert!(matches!(lower(&["--dry-run", "init"]).unwrap(), Request::Refused(_)));
    // The top-level -o reaches push as it does sign and verify.
    assert!(matches!(
        lower(&["-o", "json", "push", "oci:x", "docker://h/r"]).unwrap(),
        Request::Push(p) if matches!(p.output, Output::Json)
    ));
}

#[test]
fn flags_that_mean_nothing_to_a_command_are_refused() {
    assert!(lower(&["verify", "h/r:v1", "--key", "k", "--dry-run"]).is_err());
    assert!(lower(&["verify", "h/r:v1", "--key", "k", "--fulcio-url", "https://f"]).is_err());
    assert!(lower(&["sign", "h/r@sha256:00", "--key", "k", "--certificate-identity", "x"]).is_err());
    assert!(lower(&["generate-key-pair", "--policy", "p.yaml"]).is_err());
    assert!(lower(&["schema", "--dry-run"]).is_err());
}

#[test]
fn policy_and_output_may_come_before_or_after_the_command() {
    let Request::Plan(p) = lower(&["--policy", "a.yaml", "plan", "-o", "json"]).unwrap() else { panic!() };
    assert_eq!((p.policy.policy, p.policy.output), (PathBuf::from("a.yaml"), Output::Json));
    let Request::Run(r) = lower(&["run", "--plan", "plan.json", "--only", "app@home"]).unwrap() else { panic!() };
    assert_eq!((r.plan, r.only.as_deref()), (Some(PathBuf::from("plan.json")), Some("app@home")));
    assert_eq!(r.policy.policy, PathBuf::from(DEFAULT_POLICY));
}
