//! The commands, as plain requests: load the policy, build the plan, run it, print the
//! result. `cli.rs` lowers clap's types into these; `main.rs` maps the outcome to an exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::github;
use crate::http::RetryPolicy;
use crate::image::{Image, Transport};
use crate::plan::{self, MeasuredUsage, Plan};
use crate::policy::RegistryKind;
use crate::policy::Visibility;
use crate::policy::{self, Diagnostic, Diagnostics, GitContext, Resolved, TemplateContext};
use crate::push::{self, Destination};
use crate::reference::Reference;
use crate::registry::{Client, Credential, Endpoint, auth, usage};
use crate::report::{self, ImageOutcome, RunReport, TemplateReport};
use crate::runpod::{
    self,
    stage::{self, Rendered},
    template::TemplateErrors,
};
use crate::select::Usage;
use crate::sign::{self, KeySigner, keyless};
use crate::types::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyArgs {
    pub policy: PathBuf,
    pub output: Output,
    /// Measure usage already spent on registries that allow it (read-only requests).
    pub measure: bool,
    /// Print a GitHub Actions matrix (one entry per image and selected registry).
    pub matrix: bool,
    /// Run one entry: `IMAGE` or `IMAGE@REGISTRY`.
    pub only: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PushArgs {
    pub source: String,
    pub destination: String,
    /// Read a `docker://` source over plain HTTP (loopback only).
    pub src_insecure: bool,
    /// PATCH chunks of this size instead of one streaming PUT.
    pub chunk_size: Option<crate::types::ByteSize>,
    pub registry: RegistryArgs,
    pub output: Output,
}

#[derive(Debug, Clone)]
pub enum Request {
    Check(PolicyArgs),
    Plan(PolicyArgs),
    Run(PolicyArgs),
    Push(PushArgs),
    Schema,
    /// `publish runpod render|sync`.
    RunPod(RunPodArgs),
    /// `publish sign REF@DIGEST --key K`.
    Sign(SignArgs),
    /// `publish verify REF[@DIGEST] --key cosign.pub`.
    Verify(SignArgs),
    /// `publish generate-key-pair`: cosign.key and cosign.pub in `dir`.
    GenerateKeyPair {
        dir: PathBuf,
    },
}

/// A registry reference to sign or verify, and how to reach it.
#[derive(Debug, Clone)]
pub struct SignArgs {
    pub reference: String,
    /// sign: the private key; verify: the public key. `None` for keyless.
    pub key: Option<String>,
    /// Keyless: Fulcio and Rekor, and (verify) the identity the certificate must carry.
    pub keyless: keyless::Endpoints,
    pub identity: Option<String>,
    pub issuer: Option<String>,
    /// Trusted Fulcio roots (PEM), for keyless verification.
    pub roots: Option<PathBuf>,
    pub format: crate::sign::Format,
    pub registry: RegistryArgs,
    pub output: Output,
}

/// How to reach a registry from the command line (`--ca-file`, `--insecure`, credentials).
#[derive(Debug, Clone, Default)]
pub struct RegistryArgs {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunPodArgs {
    pub policy: PolicyArgs,
    pub command: RunPodCommand,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub enum RunPodCommand {
    /// Print the rendered template bodies (one, with a name).
    Render { template: Option<String> },
    /// Create or update the templates for images already published.
    Sync,
}

/// Exit codes, as documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Partial = 3,
}

/// A mistake in how the tool was called (exit 2): nothing was contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error that ended a command.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    if err.downcast_ref::<Diagnostics>().is_some()
        || err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<TemplateErrors>().is_some()
    {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

pub async fn execute(request: Request) -> anyhow::Result<Exit> {
    let actions = github::Actions::detect();
    if actions.is_some() {
        github::mask_secrets_from_now_on();
    }
    match request {
        Request::Schema => {
            println!("{}", report::json(&policy::schema()));
            Ok(Exit::Success)
        }
        Request::Check(args) => {
            let (resolved, images) = load(&args.policy).await?;
            plan::build(&resolved, &images, &MeasuredUsage::new())?;
            let result = serde_json::json!({"status": "ok", "policy": resolved.file});
            if let Some(a) = &actions {
                a.set_outputs(&[("result", result.to_string())])?;
            }
            if args.output == Output::Json {
                println!("{}", report::json(&result));
            } else {
                println!("{}: ok ({} images)", resolved.file, resolved.images.len());
            }
            Ok(Exit::Success)
        }
        Request::Plan(args) => {
            let (resolved, images) = load(&args.policy).await?;
            let measured = if args.measure { measure_usage(&resolved, true).await } else { MeasuredUsage::new() };
            let plan = plan::build(&resolved, &images, &measured)?;
            if args.matrix {
                println!("{}", report::json(&matrix(&plan)));
            } else {
                print_plan(&plan, args.output);
            }
            if let Some(a) = &actions {
                plan_to_actions(a, &plan, args.matrix).await?;
            }
            Ok(Exit::Success)
        }
        Request::Run(args) => {
            let (resolved, images) = load(&args.policy).await?;
            let measured = measure_usage(&resolved, false).await;
            let mut plan = plan::build(&resolved, &images, &measured)?;
            if let Some(only) = &args.only {
                restrict(&mut plan, only)?;
            }
            let credentials = preflight_credentials(&plan, &resolved)?;
            // Templates are rendered, checked and their secrets found before anything is pushed.
            let templates = prepare_templates(&resolved, &plan)?;
            let signer = prepare_signer(&resolved)?;
            let report = run_plan(&plan, &images, credentials, signer.as_ref(), actions.is_some()).await;
            let report = match templates {
                Some((client, templates)) => {
                    let results = sync_templates(&client, templates, &report).await;
                    report.with_runpod(results)
                }
                None => report,
            };
            print_report(&report, args.output);
            if let Some(a) = &actions {
                let images = report
                    .images
                    .iter()
                    .map(|i| (i.name.clone(), i.targets.iter().flat_map(|t| t.references.clone()).collect()))
                    .collect();
                let digest = report.images.first().map(|i| i.digest.to_string()).unwrap_or_default();
                a.set_outputs(&outputs(&report, digest, images))?;
                a.append_summary(&format!(
                    "{}\n{}",
                    github::summary::plan_markdown(&plan),
                    github::summary::run_markdown(&report)
                ))?;
            }
            Ok(exit_for_report(&report))
        }
        Request::Push(args) => push_one(args).await,
        Request::RunPod(args) => runpod_command(args).await,
        Request::Sign(args) => sign_command(args).await,
        Request::Verify(args) => verify_command(args).await,
        Request::GenerateKeyPair { dir } => {
            let password = std::env::var("COSIGN_PASSWORD").map_err(|_| {
                UsageError("set COSIGN_PASSWORD to the password for the new key (it may be empty)".into())
            })?;
            let (key, public) =
                sign::keys::generate(&dir, &Secret::new(password)).map_err(|e| UsageError(e.to_string()))?;
            println!("Private key written to {}\nPublic key written to {}", key.display(), public.display());
            Ok(Exit::Success)
        }
    }
}

fn print_plan(plan: &Plan, output: Output) {
    match output {
        Output::Json => println!("{}", report::json(plan)),
        Output::Text => print!("{}", report::plan_text(plan)),
    }
}

fn print_report(report: &RunReport, output: Output) {
    match output {
        Output::Json => println!("{}", report::json(report)),
        Output::Text => print!("{}", report::run_text(report)),
    }
}

fn exit_for_report(report: &RunReport) -> Exit {
    match report.status {
        "success" => Exit::Success,
        "partial" => Exit::Partial,
        _ => Exit::Failure,
    }
}

/// Loads, resolves and opens everything the policy names: offline, but for `docker://`
/// sources, whose manifests are read from their registry.
pub async fn load(path: &Path) -> anyhow::Result<(Resolved, Vec<Image>)> {
    let (policy, file) = policy::load(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let ctx = template_context(dir);
    let resolved = policy::resolve(&policy, &file, dir, &ctx)?;
    crate::http::configure(resolved.transfer);
    let mut images = Vec::new();
    let mut errors = Vec::new();
    for (i, img) in resolved.images.iter().enumerate() {
        let access = |host: &str| source_access(&resolved, host);
        match open_image(&img.source, &img.base_dir, img.compression, &access).await {
            Ok(image) => images.push(image),
            Err(message) => errors.push(plan::source_diagnostic(&resolved, i, message)),
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors).into());
    }
    Ok((resolved, images))
}

/// How to reach a source registry: plain HTTP or not, an extra CA, credentials.
#[derive(Debug, Clone, Default)]
struct SourceAccess {
    insecure: bool,
    ca_file: Option<PathBuf>,
    credential: Option<Credential>,
}

/// A source registry that is also one of the policy's registries is reached the same way;
/// otherwise over HTTPS with Docker's credentials.
fn source_access(resolved: &Resolved, host: &str) -> SourceAccess {
    let known = resolved.images.iter().flat_map(|i| &i.candidates).find(|r| r.host == host);
    let credential = known.map_or_else(|| docker_config_credential(host), registry_credential);
    SourceAccess {
        insecure: known.is_some_and(|r| r.insecure),
        ca_file: known.and_then(|r| r.ca_file.clone()),
        credential,
    }
}

/// Opens a source in skopeo's transport syntax; `docker://` through the registry client.
async fn open_image(
    source: &str,
    base: &Path,
    compression: crate::types::LayerCompression,
    access: &dyn Fn(&str) -> SourceAccess,
) -> Result<Image, String> {
    let transport = Transport::parse(source, base).map_err(|e| e.to_string())?;
    match &transport {
        Transport::Registry { reference } => {
            let r = Reference::parse(reference).map_err(|e| format!("{reference:?}: {e}"))?;
            let a = access(&r.host);
            let endpoint = Endpoint { host: r.host.clone(), insecure: a.insecure };
            let client =
                Client::new(&endpoint, &r.repository, a.ca_file.as_deref(), a.credential, RetryPolicy::default())
                    .map_err(|e| e.to_string())?;
            crate::registry::remote::open(&r, client).await.map_err(|e| e.to_string())
        }
        _ => Image::open_with(&transport, compression).map_err(|e| e.to_string()),
    }
}

/// `git` facts for tag templates: from GitHub Actions' variables, else from `git` itself.
fn template_context(dir: &Path) -> TemplateContext {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let git_out = |args: &[&str]| -> Option<String> {
        let out =
            Command::new("git").arg("-C").arg(dir).args(args).stderr(std::process::Stdio::null()).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let sha = env.get("GITHUB_SHA").cloned().or_else(|| git_out(&["rev-parse", "HEAD"]));
    let ref_type = env.get("GITHUB_REF_TYPE").map(String::as_str);
    let ref_name = env.get("GITHUB_REF_NAME").cloned();
    let branch = match ref_type {
        Some("branch") => ref_name.clone(),
        Some(_) => None,
        None => git_out(&["symbolic-ref", "--short", "-q", "HEAD"]),
    };
    let tag = match ref_type {
        Some("tag") => ref_name,
        Some(_) => None,
        None => git_out(&["describe", "--tags", "--exact-match"]),
    };
    let short_sha = sha.as_ref().map(|s| s.chars().take(7).collect());
    TemplateContext { git: GitContext { sha, short_sha, branch, tag }, env }
}

/// Reads every credential the plan needs from the environment before anything is contacted;
/// a variable that is not set is a policy error (exit 2).
fn preflight_credentials(plan: &Plan, resolved: &Resolved) -> Result<Vec<Vec<Option<Credential>>>, Diagnostics> {
    let mut errors = Vec::new();
    let creds = plan
        .images
        .iter()
        .map(|img| {
            img.targets
                .iter()
                .map(|t| {
                    let cr = t.endpoint.credentials.as_ref()?;
                    match std::env::var(&cr.password_env) {
                        Ok(v) if !v.is_empty() => {
                            Some(Credential { username: cr.username.clone(), password: Secret::new(v) })
                        }
                        _ => {
                            errors.push(Diagnostic {
                                file: resolved.file.clone(),
                                line: cr.at.0.max(1),
                                col: cr.at.1.max(1),
                                field: cr.field.clone(),
                                message: format!(
                                    "environment variable {} is not set (registry {})",
                                    cr.password_env, t.registry
                                ),
                                hint: Some(format!(
                                    "export {} with the password or token for {}",
                                    cr.password_env, cr.username
                                )),
                            });
                            None
                        }
                    }
                })
                .collect()
        })
        .collect();
    if errors.is_empty() {
        Ok(creds)
    } else {
        errors.dedup_by(|a, b| a.field == b.field);
        Err(Diagnostics(errors))
    }
}

/// Measures what self-hosted registries already store (catalog walk, read-only), for those
/// whose usage the policy does not state; unless `all`, only where it matters (a
/// `limits.storage` is set). A registry that cannot be measured stays unknown.
async fn measure_usage(resolved: &Resolved, all: bool) -> MeasuredUsage {
    let mut measured = MeasuredUsage::new();
    let registries = resolved.images.iter().flat_map(|i| &i.candidates);
    for r in registries {
        if measured.contains_key(&r.id) {
            continue;
        }
        // Docker Hub: the private repositories in use, for the free plan's limit.
        let private_here = resolved
            .images
            .iter()
            .any(|i| i.visibility == Visibility::Private && i.candidates.iter().any(|c| c.id == r.id));
        if r.kind == RegistryKind::Dockerhub && r.used.private_repositories.is_none() && (all || private_here) {
            if let Some(cred) = registry_credential(r) {
                match crate::registry::hub::private_repositories(&r.namespace, &cred).await {
                    Ok(n) => {
                        tracing::info!(registry = %r.id, private_repositories = n, "measured usage");
                        measured.insert(
                            r.id.clone(),
                            Usage { storage: None, transfer: None, private_repositories: Some(n), source: "measured" },
                        );
                    }
                    Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
                }
            }
            continue;
        }
        let matters = all || r.limits.storage.is_some();
        if r.kind != RegistryKind::Registry || !matters || r.used.storage.is_some() {
            continue;
        }
        let credential = registry_credential(r);
        let endpoint = Endpoint { host: r.host.clone(), insecure: r.insecure };
        let result = async {
            let client = Client::new(&endpoint, "", r.ca_file.as_deref(), credential, RetryPolicy::default())?
                .with_scope("registry:catalog:*");
            client.authenticate().await?;
            usage::measure(&client).await
        }
        .await;
        match result {
            Ok(stored) => {
                tracing::info!(registry = %r.id, stored = %stored.bytes, repositories = stored.repositories, "measured usage");
                measured.insert(
                    r.id.clone(),
                    Usage {
                        storage: Some(stored.bytes),
                        transfer: None,
                        private_repositories: None,
                        source: "measured",
                    },
                );
            }
            Err(e) => tracing::warn!(registry = %r.id, "usage not measured, so it stays unknown: {e}"),
        }
    }
    measured
}

type Prepared = (runpod::Client, Vec<(Rendered, runpod::Wanted)>);

/// Renders and checks every template, reads its pull credential and the API key: all before
/// any network call, so a mistake writes nothing anywhere (exit 2).
fn prepare_templates(resolved: &Resolved, plan: &Plan) -> anyhow::Result<Option<Prepared>> {
    let Some(rp) = &resolved.runpod else { return Ok(None) };
    let rendered = stage::render_all(resolved, plan)?;
    if rendered.is_empty() {
        return Ok(None);
    }
    let wanted = rendered
        .into_iter()
        .map(|r| stage::wanted(&r).map(|w| (r, w)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(UsageError)?;
    let client = stage::client(rp).map_err(UsageError)?;
    Ok(Some((client, wanted)))
}

/// Syncs each template whose image reached the registry it pins; the others are skipped: a
/// template never points at an image that failed to publish.
async fn sync_templates(
    client: &runpod::Client,
    templates: Vec<(Rendered, runpod::Wanted)>,
    report: &RunReport,
) -> Vec<TemplateReport> {
    let mut out = Vec::new();
    for (r, wanted) in templates {
        let pushed = report
            .images
            .iter()
            .filter(|i| i.name == r.image.name)
            .flat_map(|i| &i.targets)
            .any(|t| t.registry == r.target.registry && t.status == push::Status::Pushed);
        let base = TemplateReport {
            name: r.template.name.clone(),
            image: r.image.name.clone(),
            status: "skipped",
            sync: None,
            reason: None,
        };
        if !pushed {
            out.push(TemplateReport {
                reason: Some(format!(
                    "image {} was not published to {}, so the template keeps its image",
                    r.image.name, r.target.registry
                )),
                ..base
            });
            continue;
        }
        match runpod::sync(client, wanted, false).await {
            Ok(sync) => out.push(TemplateReport { status: "synced", sync: Some(sync), ..base }),
            Err(e) => out.push(TemplateReport { status: "failed", reason: Some(e.to_string()), ..base }),
        }
    }
    out
}

async fn runpod_command(args: RunPodArgs) -> anyhow::Result<Exit> {
    let (resolved, images) = load(&args.policy.policy).await?;
    let plan = plan::build(&resolved, &images, &MeasuredUsage::new())?;
    if resolved.runpod.as_ref().is_none_or(|rp| rp.templates.is_empty()) {
        return Err(UsageError(format!("{}: no runpod: templates to work on", resolved.file)).into());
    }
    match args.command {
        RunPodCommand::Render { template } => {
            let rendered = stage::render_all(&resolved, &plan)?;
            let bodies: Vec<&serde_json::Map<String, serde_json::Value>> = rendered
                .iter()
                .filter(|r| template.as_ref().is_none_or(|t| &r.template.name == t))
                .map(|r| &r.body)
                .collect();
            match (&template, bodies.as_slice()) {
                (Some(t), []) => return Err(UsageError(format!("no template named {t:?}")).into()),
                (Some(_), [one]) => println!("{}", report::json(one)),
                _ => println!("{}", report::json(&bodies)),
            }
            Ok(Exit::Success)
        }
        RunPodCommand::Sync => {
            let Some((client, templates)) = prepare_templates(&resolved, &plan)? else { return Ok(Exit::Success) };
            let mut results = Vec::new();
            let mut failed = false;
            for (r, wanted) in templates {
                match runpod::sync(&client, wanted, args.dry_run).await {
                    Ok(s) => results.push(s),
                    Err(e) => {
                        failed = true;
                        eprintln!("error: template {}: {e}", r.template.name);
                    }
                }
            }
            match args.policy.output {
                Output::Json => println!("{}", report::json(&results)),
                Output::Text => results.iter().for_each(|s| print!("{}", report::sync_text(s))),
            }
            Ok(match (failed, results.is_empty()) {
                (false, _) => Exit::Success,
                (true, true) => Exit::Failure,
                (true, false) => Exit::Partial,
            })
        }
    }
}

/// One matrix entry per image and selected registry, for `strategy.matrix` in a workflow.
fn matrix(plan: &Plan) -> serde_json::Value {
    let include: Vec<serde_json::Value> = plan
        .images
        .iter()
        .flat_map(|i| {
            i.targets.iter().map(move |t| {
                serde_json::json!({"image": i.name, "registry": t.registry, "only": format!("{}@{}", i.name, t.registry)})
            })
        })
        .collect();
    serde_json::json!({ "include": include })
}

/// Keeps only `IMAGE` or `IMAGE@REGISTRY` in the plan.
fn restrict(plan: &mut Plan, only: &str) -> Result<(), UsageError> {
    let (image, registry) = match only.split_once('@') {
        Some((i, r)) => (i, Some(r)),
        None => (only, None),
    };
    let names: Vec<String> =
        plan.images.iter().flat_map(|i| i.targets.iter().map(move |t| format!("{}@{}", i.name, t.registry))).collect();
    plan.images.retain(|i| i.name == image);
    for i in &mut plan.images {
        i.targets.retain(|t| registry.is_none_or(|r| t.registry == r));
    }
    plan.images.retain(|i| !i.targets.is_empty());
    if plan.images.is_empty() {
        return Err(UsageError(format!("--only {only} matches nothing in the plan; entries: {}", names.join(", "))));
    }
    Ok(())
}

/// A policy registry's credentials (its `password_env` read now), else Docker's config.
fn registry_credential(r: &crate::policy::ResolvedRegistry) -> Option<Credential> {
    r.credentials
        .as_ref()
        .and_then(|c| {
            std::env::var(&c.password_env)
                .ok()
                .map(|p| Credential { username: c.username.clone(), password: Secret::new(p) })
        })
        .or_else(|| docker_config_credential(&r.host))
}

fn docker_config_credential(host: &str) -> Option<Credential> {
    match auth::from_docker_config(host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("ignoring Docker credentials for {host}: {e:#}");
            None
        }
    }
}

/// Loads the signing key before anything is contacted: a missing password or key is exit 2.
fn prepare_signer(resolved: &Resolved) -> anyhow::Result<Option<(PreparedSigner, sign::Format)>> {
    let Some(s) = &resolved.signing else { return Ok(None) };
    let signer = match &s.key {
        Some(key) => {
            let password = std::env::var(&s.password_env).map_err(|_| {
                UsageError(format!("environment variable {} (the signing key's password) is not set", s.password_env))
            })?;
            PreparedSigner::Key(KeySigner::load(key, &Secret::new(password)).map_err(|e| UsageError(e.to_string()))?)
        }
        None => {
            keyless::check_prerequisites().map_err(|e| UsageError(e.to_string()))?;
            PreparedSigner::Keyless(
                keyless::Endpoints { fulcio: s.fulcio_url.clone(), rekor: s.rekor_url.clone() },
                tokio::sync::OnceCell::new(),
            )
        }
    };
    let format = match s.format {
        crate::policy::model::SignFormat::Legacy => sign::Format::Legacy,
        crate::policy::model::SignFormat::Bundle => sign::Format::Bundle,
        crate::policy::model::SignFormat::Both => sign::Format::Both,
    };
    Ok(Some((signer, format)))
}

/// A signer ready before the push: a loaded key, or keyless endpoints whose session (token
/// and certificate) starts at the first signature and serves the rest of the run.
pub enum PreparedSigner {
    Key(KeySigner),
    Keyless(keyless::Endpoints, tokio::sync::OnceCell<keyless::Session>),
}

/// Signs an image just pushed to `dest`.
async fn sign_pushed(
    dest: &Destination,
    image: &Image,
    prepared: &PreparedSigner,
    format: sign::Format,
    retry: RetryPolicy,
) -> Result<sign::Signed, sign::SignError> {
    let signer = match prepared {
        PreparedSigner::Key(k) => sign::Signer::Key(k),
        PreparedSigner::Keyless(endpoints, session) => {
            sign::Signer::Keyless(session.get_or_try_init(|| keyless::Session::start(endpoints)).await?)
        }
    };
    let client = Client::new(&dest.endpoint, &dest.path, dest.ca_file.as_deref(), dest.credential.clone(), retry)?;
    client.authenticate().await?;
    let subject = sign::Subject {
        repository: format!("{}/{}", dest.endpoint.host, dest.path),
        digest: image.root.digest.clone(),
        media_type: image.root.media_type.clone(),
        size: image.root.bytes.len() as u64,
    };
    sign::sign(&client, &dest.path, &subject, signer, format).await
}

async fn run_plan(
    plan: &Plan,
    images: &[Image],
    credentials: Vec<Vec<Option<Credential>>>,
    signer: Option<&(PreparedSigner, sign::Format)>,
    in_actions: bool,
) -> RunReport {
    let retry = RetryPolicy::default();
    let mut outcomes = Vec::new();
    for ((img, image), creds) in plan.images.iter().zip(images).zip(credentials) {
        let mut targets = Vec::new();
        for (t, cred) in img.targets.iter().zip(creds) {
            let e = &t.endpoint;
            let dest = Destination {
                registry_id: t.registry.clone(),
                endpoint: Endpoint { host: e.host.clone(), insecure: e.insecure },
                ca_file: e.ca_file.clone(),
                path: t.path().to_string(),
                tags: t.tags.clone(),
                credential: cred.or_else(|| docker_config_credential(&e.host)).or_else(|| github_token_for(e.kind)),
                upload: upload_mode(e.chunk_size),
            };
            let _group = github::Group::start(in_actions, &format!("Pushing {} to {}", img.name, t.repository));
            let mut dest = dest;
            if e.kind == RegistryKind::EcrPublic && dest.credential.is_none() {
                match ecr_prepare(&dest.path).await {
                    Ok(cred) => dest.credential = Some(cred),
                    Err(err) => {
                        targets.push(push::failed(image, &dest, err.to_string()));
                        continue;
                    }
                }
            }
            tracing::info!(image = %img.name, registry = %t.registry, "pushing to {}", t.repository);
            let mut outcome = push::push(image, &dest, retry).await;
            if let (push::Status::Pushed, Some((signer, format))) = (outcome.status, signer) {
                match sign_pushed(&dest, image, signer, *format, retry).await {
                    Ok(signed) => outcome.signed = Some(signed),
                    Err(e) => {
                        outcome.status = push::Status::PushedUnsigned;
                        outcome.error = Some(format!("published but not signed: {e}"));
                    }
                }
            }
            if outcome.status == push::Status::Pushed && img.visibility == Visibility::Public {
                outcome.anonymous_pull = push::probe_anonymous(&dest, retry).await;
                if outcome.anonymous_pull == Some(false) {
                    let message = not_public_message(&img.name, t, e.kind);
                    tracing::warn!("{message}");
                    if in_actions {
                        github::warning(&message);
                    }
                }
            }
            targets.push(outcome);
        }
        outcomes.push(ImageOutcome { name: img.name.clone(), digest: img.manifest_digest.clone(), targets });
    }
    RunReport::new(outcomes)
}

fn upload_mode(chunk: Option<crate::types::ByteSize>) -> crate::registry::UploadMode {
    match chunk {
        Some(c) => crate::registry::UploadMode::Chunked { chunk: c.0 },
        None => crate::registry::UploadMode::Monolithic,
    }
}

/// ECR Public: a registry token from the AWS credentials, and the repository created when it
/// does not exist yet (`path` is `ALIAS/REPOSITORY`).
async fn ecr_prepare(path: &str) -> Result<Credential, crate::registry::ecr::EcrError> {
    let api = crate::registry::ecr::Api::from_environment().await?;
    let repository = path.split_once('/').map_or(path, |(_, r)| r);
    if api.ensure_repository(repository).await? {
        tracing::info!("created the ECR Public repository {repository}");
    }
    api.registry_credential().await
}

/// `GITHUB_TOKEN` (user `GITHUB_ACTOR`) for GHCR when no other credential is given.
fn github_token_for(kind: RegistryKind) -> Option<Credential> {
    if kind != RegistryKind::Ghcr {
        return None;
    }
    let token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty())?;
    let user = std::env::var("GITHUB_ACTOR").ok().filter(|a| !a.is_empty()).unwrap_or_else(|| "github-actions".into());
    Some(Credential { username: user, password: Secret::new(token) })
}

/// The warning for a public image that cannot be pulled anonymously, with the fix.
fn not_public_message(image: &str, t: &plan::TargetPlan, kind: RegistryKind) -> String {
    let mut m = format!(
        "image {image} is public in the policy, but {} cannot be pulled without credentials: RunPod will fail to pull it unless the template has a registry credential.",
        t.repository
    );
    if kind == RegistryKind::Ghcr {
        let (owner, package) = t.path().split_once('/').unwrap_or((t.path(), image));
        let package = package.replace('/', "%2F");
        m.push_str(&format!(
            " New GHCR packages start private: make it public in the package's settings (Danger Zone → Change visibility): https://github.com/orgs/{owner}/packages/container/{package}/settings (for a user: https://github.com/users/{owner}/packages/container/{package}/settings)."
        ));
    } else {
        m.push_str(" Allow anonymous pulls on the registry, or set visibility: private so RunPod gets credentials.");
    }
    m
}

/// The action's outputs: `result` (the JSON document), `digest` (the first image's manifest
/// digest) and `images` (a JSON map image → references).
fn outputs<T: serde::Serialize>(
    result: &T,
    digest: String,
    images: std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<(&'static str, String)> {
    vec![
        ("result", serde_json::to_string(result).unwrap_or_default()),
        ("digest", digest),
        ("images", serde_json::to_string(&images).unwrap_or_default()),
    ]
}

/// Outputs, job summary and, on a pull request, the plan as one upserted comment.
async fn plan_to_actions(a: &github::Actions, plan: &Plan, matrix_only: bool) -> anyhow::Result<()> {
    let images = plan
        .images
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.targets
                    .iter()
                    .flat_map(|t| t.tags.iter().map(move |tag| format!("{}:{tag}", t.repository)))
                    .collect(),
            )
        })
        .collect();
    let digest = plan.images.first().map(|i| i.manifest_digest.to_string()).unwrap_or_default();
    let mut outs = outputs(plan, digest, images);
    if matrix_only {
        outs.push(("matrix", matrix(plan).to_string()));
    }
    a.set_outputs(&outs)?;
    let markdown = github::summary::plan_markdown(plan);
    a.append_summary(&markdown)?;
    if let (Some(number), Some(repository)) = (a.pull_request(), &a.repository) {
        match std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => {
                match github::comment::upsert(&a.api_url, &Secret::new(token), repository, number, &markdown).await {
                    Ok(done) => tracing::info!("plan comment on pull request #{number}: {done:?}"),
                    // A fork's read-only token cannot comment: the plan is still in the summary.
                    Err(e) => github::warning(&format!("could not comment the plan on pull request #{number}: {e}")),
                }
            }
            None => github::warning(
                "GITHUB_TOKEN is not set: the plan is in the job summary but not commented on the pull request",
            ),
        }
    }
    Ok(())
}

/// Prints a command's error; in GitHub Actions, policy mistakes also become annotations on
/// the policy file (at most 10, GitHub's limit per step).
pub fn report_error(err: &anyhow::Error) {
    let in_actions = github::Actions::detect().is_some();
    if let Some(d) = err.downcast_ref::<Diagnostics>() {
        // Already `file:line:col: field: message`, the shape editors and Actions parse.
        eprintln!("{d}");
        if in_actions {
            for x in d.0.iter().take(github::MAX_ERROR_ANNOTATIONS) {
                let message = match &x.hint {
                    Some(h) => format!("{}\nhint: {h}", x.message),
                    None => x.message.clone(),
                };
                github::error_annotation(&x.file, x.line, x.col, &x.field, &message);
            }
        }
    } else if let Some(t) = err.downcast_ref::<TemplateErrors>() {
        eprintln!("{t}");
    } else {
        eprintln!("error: {err:#}");
        if in_actions {
            github::error(&format!("{err:#}"));
        }
    }
}

/// DER certificates from a PEM file.
fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
        let body = block.split("-----END CERTIFICATE-----").next().unwrap_or_default();
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        out.push(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .map_err(|e| format!("a certificate is not base64: {e}"))?,
        );
    }
    if out.is_empty() { Err("no PEM certificate in the roots file".into()) } else { Ok(out) }
}

/// The credential the command-line flags give for `reference` (`--username` with
/// `--password-env`), else Docker's config; refuses `--insecure` for a remote host.
fn cli_credential(reference: &Reference, args: &RegistryArgs) -> Result<Option<Credential>, UsageError> {
    if args.insecure && !reference.is_loopback() {
        return Err(UsageError(format!("--insecure is only allowed for loopback registries, not {}", reference.host)));
    }
    match (&args.username, &args.password_env) {
        (Some(u), Some(var)) => {
            let v = std::env::var(var)
                .map_err(|_| UsageError(format!("environment variable {var} (--password-env) is not set")))?;
            Ok(Some(Credential { username: u.clone(), password: Secret::new(v) }))
        }
        (None, None) => Ok(docker_config_credential(&reference.host)),
        _ => Err(UsageError("--username and --password-env go together".into())),
    }
}

/// A client for the repository of `reference`, with credentials from the flags or Docker's config.
fn client_for(reference: &Reference, args: &RegistryArgs) -> anyhow::Result<Client> {
    let credential = cli_credential(reference, args)?;
    let endpoint = Endpoint { host: reference.host.clone(), insecure: args.insecure };
    Ok(Client::new(&endpoint, &reference.repository, args.ca_file.as_deref(), credential, RetryPolicy::default())?)
}

fn parse_reference(s: &str) -> Result<Reference, UsageError> {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    Reference::parse(s).map_err(|e| UsageError(format!("{s:?}: {e}")))
}

async fn sign_command(args: SignArgs) -> anyhow::Result<Exit> {
    let reference = parse_reference(&args.reference)?;
    let digest = reference.digest.clone().ok_or_else(|| {
        UsageError(format!(
            "sign {}: name the image by digest, REF@sha256:…, so the signature covers exactly it",
            args.reference
        ))
    })?;
    let prepared = match &args.key {
        Some(key) => {
            let password = std::env::var("COSIGN_PASSWORD")
                .map_err(|_| UsageError("set COSIGN_PASSWORD to the key's password".into()))?;
            PreparedSigner::Key(KeySigner::load(key, &Secret::new(password)).map_err(|e| UsageError(e.to_string()))?)
        }
        None => {
            keyless::check_prerequisites().map_err(|e| UsageError(e.to_string()))?;
            PreparedSigner::Keyless(args.keyless.clone(), tokio::sync::OnceCell::new())
        }
    };
    let session;
    let signer = match &prepared {
        PreparedSigner::Key(k) => sign::Signer::Key(k),
        PreparedSigner::Keyless(endpoints, _) => {
            session = keyless::Session::start(endpoints).await?;
            sign::Signer::Keyless(&session)
        }
    };
    let client = client_for(&reference, &args.registry)?;
    client.authenticate().await?;
    let (found, media_type, size) = client
        .resolve(digest.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("{}: no manifest {digest} in {}", reference.host, reference.repository))?;
    if found != digest {
        anyhow::bail!("{}: the registry served {found} for {digest}", reference.host);
    }
    let subject = sign::Subject { repository: reference.name(), digest, media_type, size };
    let signed = sign::sign(&client, &reference.repository, &subject, signer, args.format).await?;
    match args.output {
        Output::Json => println!("{}", report::json(&signed)),
        Output::Text => {
            if let Some(l) = &signed.legacy {
                println!("legacy signature: {l}");
            }
            if let Some(b) = &signed.bundle {
                println!("bundle referrer: {}@{b}", reference.name());
            }
            if !signed.already_signed.is_empty() {
                println!("already signed with this key ({}): nothing added", signed.already_signed.join(", "));
            }
        }
    }
    Ok(Exit::Success)
}

async fn verify_command(args: SignArgs) -> anyhow::Result<Exit> {
    let reference = parse_reference(&args.reference)?;
    let verifier = match (&args.key, &args.identity, &args.issuer) {
        (Some(key), None, None) => {
            sign::Verifier::Key(sign::keys::load_public(Path::new(key)).map_err(|e| UsageError(e.to_string()))?)
        }
        (None, Some(identity), Some(issuer)) => {
            let roots_path = args.roots.as_ref().ok_or_else(|| {
                UsageError(
                    "keyless verification needs --certificate-roots FILE: the Fulcio root certificates to trust (PEM)"
                        .into(),
                )
            })?;
            let pem = std::fs::read(roots_path)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", roots_path.display())))?;
            let roots = parse_pem_certificates(&pem).map_err(UsageError)?;
            sign::Verifier::Keyless(keyless::Policy { identity: identity.clone(), issuer: issuer.clone(), roots })
        }
        _ => {
            return Err(UsageError(
                "verify with --key cosign.pub, or with --certificate-identity and --certificate-oidc-issuer (keyless)"
                    .into(),
            )
            .into());
        }
    };
    let client = client_for(&reference, &args.registry)?;
    client.authenticate().await?;
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        None => {
            let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
            client.resolve(&tag).await?.ok_or_else(|| anyhow::anyhow!("{}: no image {reference}", reference.host))?.0
        }
    };
    let verified = sign::verify(&client, &reference.repository, &digest, &verifier).await?;
    let legacy_ok = !verified.legacy.is_empty();
    let bundle_ok = !verified.bundle.is_empty();
    let ok = match args.format {
        sign::Format::Legacy => legacy_ok,
        sign::Format::Bundle => bundle_ok,
        sign::Format::Both => legacy_ok || bundle_ok,
    };
    match args.output {
        Output::Json => println!("{}", report::json(&serde_json::json!({"verified": ok, "result": verified}))),
        Output::Text => {
            println!("{}@{digest}", reference.name());
            println!("  legacy (.sig): {} valid", verified.legacy.len());
            println!("  bundle (referrer): {} valid", verified.bundle.len());
            for i in &verified.invalid {
                println!("  invalid: {i}");
            }
            println!("{}", if ok { "verified" } else { "NOT verified" });
        }
    }
    Ok(if ok { Exit::Success } else { Exit::Failure })
}

async fn push_one(args: PushArgs) -> anyhow::Result<Exit> {
    let dst = args.destination.strip_prefix("docker://").ok_or_else(|| {
        UsageError(format!("destination {:?} must be docker://HOST/REPOSITORY[:TAG]", args.destination))
    })?;
    let reference = Reference::parse(dst).map_err(|e| UsageError(format!("destination {dst:?}: {e}")))?;
    let credential = cli_credential(&reference, &args.registry)?;
    let src_insecure = args.src_insecure;
    let access = move |host: &str| SourceAccess {
        insecure: src_insecure && crate::reference::is_loopback_host(host),
        ca_file: None,
        credential: docker_config_credential(host),
    };
    let image = open_image(&args.source, Path::new("."), crate::types::LayerCompression::default(), &access)
        .await
        .map_err(|e| UsageError(format!("source {}: {e}", args.source)))?;
    if let Some(d) = &reference.digest
        && d != &image.root.digest
    {
        return Err(UsageError(format!(
            "destination digest {d} differs from the source's manifest {}",
            image.root.digest
        ))
        .into());
    }
    let tags = match (&reference.tag, &reference.digest) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(d)) => vec![d.to_string()],
        (None, None) => vec!["latest".to_string()],
    };
    let dest = Destination {
        registry_id: reference.host.clone(),
        endpoint: Endpoint { host: reference.host.clone(), insecure: args.registry.insecure },
        ca_file: args.registry.ca_file.clone(),
        path: reference.repository.clone(),
        tags,
        credential,
        upload: upload_mode(args.chunk_size),
    };
    let name = reference.repository.rsplit('/').next().unwrap_or(&reference.repository).to_string();
    let outcome = push::push(&image, &dest, RetryPolicy::default()).await;
    let report = RunReport::new(vec![ImageOutcome { name, digest: image.root.digest.clone(), targets: vec![outcome] }]);
    print_report(&report, args.output);
    Ok(exit_for_report(&report))
}
