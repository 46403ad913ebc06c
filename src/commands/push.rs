//! `publish push SOURCE docker://HOST/REPO[:TAG]`: one image to one registry, like `skopeo
//! copy`, with `--dry-run` reporting what would be written from read-only requests.

use std::path::PathBuf;

use super::{ExitStatus, Output, UsageError, load};
use crate::credentials::{CredentialSource, Env};
use crate::http::ClientConfig;
use crate::plan::{EndpointPlan, SourcePlan, SourceRegistry, UploadPlan};
use crate::push::{self, Destination};
use crate::reference::Reference;
use crate::registry::RegistryAccess;
use crate::report::{ImageOutcome, RunReport};
use crate::types::ByteSize;

/// How to reach a registry from the command line (`--ca-file`, `--insecure`, credentials).
#[derive(Debug, Clone, Default)]
pub struct RegistryArgs {
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

impl RegistryArgs {
    /// The registry of `reference` as these flags reach it, its credential resolved;
    /// `--insecure` is refused off loopback.
    pub fn access(&self, reference: &Reference, env: &Env, config: ClientConfig) -> Result<RegistryAccess, UsageError> {
        if self.insecure && !reference.is_loopback() {
            return Err(UsageError::Message(format!(
                "--insecure is only allowed for loopback registries, not {}",
                reference.host
            )));
        }
        let source = CredentialSource::for_cli(&reference.host, self.username.as_deref(), self.password_env.as_deref());
        let endpoint = EndpointPlan::new(&reference.host, self.insecure, self.ca_file.clone());
        let credential =
            source.resolve(env).map_err(|e| UsageError::Message(format!("{e} (--password-env)")))?.credential();
        Ok(RegistryAccess { endpoint: endpoint.endpoint(), ca_file: endpoint.ca_file, credential, config })
    }

    /// A client for the repository of `reference`, authenticated lazily by the caller.
    pub fn client(
        &self,
        reference: &Reference,
        env: &Env,
        config: ClientConfig,
    ) -> anyhow::Result<crate::registry::Client> {
        Ok(self.access(reference, env, config)?.client(&reference.repository)?)
    }
}

#[derive(Debug, Clone)]
pub struct PushArgs {
    pub source: String,
    pub destination: String,
    /// Read a `docker://` source over plain HTTP (loopback only).
    pub src_insecure: bool,
    /// PATCH chunks of this size instead of one streaming PUT.
    pub chunk_size: Option<ByteSize>,
    pub registry: RegistryArgs,
    pub output: Output,
    pub dry_run: bool,
}

pub async fn push(args: PushArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    let config = load::client_config(ClientConfig::default(), env);
    let dst = args.destination.strip_prefix("docker://").ok_or_else(|| {
        UsageError::Message(format!("destination {:?} must be docker://HOST/REPOSITORY[:TAG]", args.destination))
    })?;
    let reference = Reference::parse(dst).map_err(|e| UsageError::Message(format!("destination {dst:?}: {e}")))?;
    let access = args.registry.access(&reference, env, config)?;
    let registry = match crate::image::Transport::parse(&args.source, std::path::Path::new(".")) {
        Ok(crate::image::Transport::Registry { reference: r }) => {
            let host = crate::reference::split_host(&r).0;
            let insecure = args.src_insecure && crate::reference::is_loopback_host(&host);
            Some(SourceRegistry {
                endpoint: EndpointPlan::new(&host, insecure, None),
                credentials: CredentialSource::for_cli(&host, None, None),
            })
        }
        _ => None,
    };
    let plan = SourcePlan {
        transport: args.source.clone(),
        compression: Default::default(),
        compression_level: None,
        registry,
    };
    let image = match load::open_image(&plan, env, &config).await {
        Ok(image) => image,
        // The source registry was contacted and failed: exit 1, not a usage error.
        Err(e) if e.downcast_ref::<crate::registry::RegistryError>().is_some() => {
            return Err(e.context(format!("source {}", args.source)));
        }
        Err(e) => return Err(UsageError::Message(format!("source {}: {e:#}", args.source)).into()),
    };
    // (A docker source with layers to compress has its digest only once they are: the
    // registry then refuses a manifest put under another digest.)
    if let Some(d) = &reference.digest
        && image.deferred.is_none()
        && d != &image.root.digest
    {
        return Err(UsageError::Message(format!(
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
    let mount_from = image.mount_source(&reference.host, &reference.repository);
    let dest = Destination {
        registry_id: reference.host.clone(),
        access,
        path: reference.repository.clone(),
        tags,
        upload: UploadPlan::from_chunk(args.chunk_size).mode(),
        mount_from,
    };
    if args.dry_run {
        let would = push::would_write(&image, &dest).await?;
        super::print_json_or(args.output, &would, || would_text(&would));
        return Ok(ExitStatus::Success);
    }
    let name = reference.repository.rsplit('/').next().unwrap_or(&reference.repository).to_string();
    let outcome = push::push(&image, &dest).await;
    let report = RunReport::new(vec![ImageOutcome { name, digest: outcome.digest.clone(), targets: vec![outcome] }]);
    super::print_json_or(args.output, &report, || crate::report::run_text(&report));
    Ok(super::exit_for_report(&report))
}

fn would_text(w: &push::WouldWrite) -> String {
    let mut s = format!("Dry run: nothing is written to {}\n", w.repository);
    s.push_str(&format!(
        "  blobs      {} to upload ({}), {} already there\n",
        w.blobs_to_send.len(),
        w.bytes_to_send,
        w.blobs_present
    ));
    for d in &w.blobs_to_send {
        s.push_str(&format!("    would upload {d}\n"));
    }
    for d in &w.layers_to_compress {
        s.push_str(&format!("    would compress and upload layer {d}\n"));
    }
    for l in &w.layers_reused {
        s.push_str(&format!("    layer {}\n", l.describe()));
    }
    for m in &w.manifests {
        s.push_str(&format!("  would put manifest {m}\n"));
    }
    for r in &w.references {
        match &w.digest {
            Some(d) => s.push_str(&format!("  would tag {r} -> {d}\n")),
            None => s.push_str(&format!("  would tag {r} (its digest is known once its layers are compressed)\n")),
        }
    }
    s
}
