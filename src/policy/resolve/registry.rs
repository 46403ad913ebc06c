//! The `registries:` section: address, kind, tier, credentials, TLS, limits and usage.

use std::path::{Path, PathBuf};

use super::super::located::Located;
use super::super::model::{self, RegistryKind};
use super::super::resolved::*;
use super::{Checker, credential_ref};
use crate::reference::{self, is_loopback_host};
use crate::types::ByteSize;

pub(super) fn resolve_registry(
    c: &mut Checker,
    id: &str,
    r: &model::Registry,
    field: &str,
    base_dir: &Path,
) -> Option<ResolvedRegistry> {
    let before = c.out.len();
    let repo = r.repository.trim_end_matches('/');
    let (host, namespace) = match repo.split_once('/') {
        Some((h, ns)) => (h.to_string(), ns.to_string()),
        None => (repo.to_string(), String::new()),
    };
    check_address(c, r, field, &host, &namespace);
    if *r.insecure && !is_loopback_host(&host) {
        c.err(
            &r.insecure,
            format!("{field}.insecure"),
            format!("plain HTTP is refused for {host}: only loopback registries may be insecure"),
            Some("serve the registry over TLS and give its CA with ca_file:".into()),
        );
    }
    let ca_file = r.ca_file.as_ref().and_then(|ca| resolve_ca_file(c, ca, field, base_dir));
    let credentials = r.credentials.as_ref().map(|cr| credential_ref(c, cr, &format!("{field}.credentials")));
    let pull_credentials =
        r.pull_credentials.as_ref().map(|cr| credential_ref(c, cr, &format!("{field}.pull_credentials")));
    check_options(c, r, field);
    let limits = r.limits.clone().unwrap_or_default();
    let size = |s: &Option<Located<model::Size>>| s.as_ref().map(|s| s.value.0);
    let used = r.used.clone().unwrap_or_default();
    (c.out.len() == before).then(|| ResolvedRegistry {
        id: id.to_string(),
        kind: *r.kind,
        host,
        namespace,
        insecure: *r.insecure,
        ca_file,
        credentials,
        pull_credentials,
        chunk_size: r
            .chunk_size
            .as_ref()
            .map(|c| c.value.0)
            .or((*r.kind == RegistryKind::EcrPublic).then_some(ByteSize(8 * 1024 * 1024))),
        tier: r.tier.clone(),
        billing: r.billing.as_ref().map(|b| b.value).unwrap_or_default(),
        limits: LimitOverrides {
            storage: size(&limits.storage),
            transfer: size(&limits.transfer),
            max_layer: size(&limits.max_layer),
            private_repositories: limits.private_repositories.as_ref().map(|p| p.value),
            private: limits.private.as_ref().map(|p| p.value),
            cost_per_month: limits.cost_per_month.as_ref().map(|p| p.value),
        },
        used: GivenUsage {
            storage: size(&used.storage),
            transfer: size(&used.transfer),
            private_repositories: used.private_repositories.as_ref().map(|p| p.value),
        },
        region: r.region.as_ref().map(|r| r.value.clone()),
    })
}

/// `repository:`: a host, the namespace the kind needs, on the kind's own host.
fn check_address(c: &mut Checker, r: &model::Registry, field: &str, host: &str, namespace: &str) {
    let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
    if !looks_like_host {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("{:?} does not start with a registry host", *r.repository),
            Some("write <host>[:port]/<namespace>, e.g. ghcr.io/my-org or 127.0.0.1:5000/ml".into()),
        );
    } else if url::Url::parse(&format!("https://{host}/")).is_err() {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("{host:?} is not a valid host[:port] (a port is 1 to 65535)"),
            Some("write <host>[:port]/<namespace>, e.g. 127.0.0.1:5000/ml".into()),
        );
    } else if !namespace.is_empty() && reference::validate_repository(namespace).is_err() {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("namespace {namespace:?} is invalid: lowercase letters, digits, '.', '_' and '-' only"),
            None,
        );
    }
    let expected_host = match *r.kind {
        RegistryKind::Ghcr => Some("ghcr.io"),
        RegistryKind::Dockerhub => Some("docker.io"),
        RegistryKind::EcrPublic => Some("public.ecr.aws"),
        RegistryKind::Registry | RegistryKind::Gar => None,
    };
    // Artifact Registry hosts are regional: REGION-docker.pkg.dev (or a multi-region).
    if *r.kind == RegistryKind::Gar && looks_like_host && !host.ends_with("-docker.pkg.dev") && !is_loopback_host(host)
    {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("an Artifact Registry repository lives at REGION-docker.pkg.dev, not {host}"),
            Some("e.g. repository: europe-west4-docker.pkg.dev/my-project/images".into()),
        );
    }
    if *r.kind == RegistryKind::Gar && looks_like_host && namespace.split('/').count() < 2 {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            "gar needs the project and the repository after the host: HOST/PROJECT/REPOSITORY".to_string(),
            Some("e.g. repository: us-docker.pkg.dev/my-project/images".into()),
        );
    }
    if let Some(h) = expected_host
        && looks_like_host
        && host != h
        && !is_loopback_host(host)
    {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("a {} registry lives at {h}, not {host}", r.kind.as_str()),
            Some(format!("write {h}/<namespace>, or use kind: registry for another host")),
        );
    }
    if matches!(*r.kind, RegistryKind::Ghcr | RegistryKind::Dockerhub | RegistryKind::EcrPublic)
        && namespace.is_empty()
        && looks_like_host
    {
        c.err(
            &r.repository,
            format!("{field}.repository"),
            format!("{} needs a namespace (user, organisation or alias) after the host", r.kind.as_str()),
            None,
        );
    }
}

/// `ca_file:`, read now, bounded, so a FIFO, /dev/zero or a non-PEM file is a located error.
fn resolve_ca_file(c: &mut Checker, ca: &Located<PathBuf>, field: &str, base_dir: &Path) -> Option<PathBuf> {
    let path = base_dir.join(&ca.value);
    // Read now, bounded, so a FIFO, /dev/zero or a non-PEM file is a located error.
    let problem = match crate::http::read_file_limited(&path, crate::http::MAX_CA_FILE) {
        Ok(pem) if reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()) => None,
        Ok(_) => Some(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Some(e.to_string()),
    };
    match problem {
        None => Some(path),
        Some(message) => {
            c.err(
                ca,
                format!("{field}.ca_file"),
                message,
                Some("paths are relative to the policy file; the file is the registry's CA in PEM".into()),
            );
            None
        }
    }
}

/// `chunk_size:`, `billing:`, `tier:` and `limits.cost_per_month:`.
fn check_options(c: &mut Checker, r: &model::Registry, field: &str) {
    if let Some(chunk) = &r.chunk_size
        && chunk.value.0.0 == 0
    {
        c.err(
            chunk,
            format!("{field}.chunk_size"),
            "a chunk of 0 bytes never finishes",
            Some("e.g. chunk_size: 8MiB".into()),
        );
    }
    // ECR Public takes parts of 5 MiB or more (but the last) and at most 1,000 of them: parts
    // over 10 MiB are not needed for its 10,000 MiB layers, parts under 5 MiB are refused.
    if let Some(chunk) = &r.chunk_size
        && *r.kind == RegistryKind::EcrPublic
        && !(5 * 1024 * 1024..=10 * 1024 * 1024).contains(&chunk.value.0.0)
    {
        c.err(
            chunk,
            format!("{field}.chunk_size"),
            "ECR Public takes parts from 5 MiB to 10 MiB (at most 1,000 of them; larger layers get larger parts)",
            Some("leave chunk_size out (8MiB), or set 5MiB to 10MiB".into()),
        );
    }
    if let Some(b) = &r.billing
        && *r.kind != RegistryKind::Ghcr
    {
        c.err(b, format!("{field}.billing"), format!("billing applies to ghcr only, not {}", r.kind.as_str()), None);
    }
    if let Some(t) = &r.tier
        && crate::select::catalog::tier(*r.kind, Some(t.value.as_str())).is_none()
    {
        // Checked here, not only when the registry is a candidate for some image.
        let names: Vec<&str> = crate::select::catalog::tiers(*r.kind).map(|t| t.name).collect();
        c.err(
            t,
            format!("{field}.tier"),
            format!("{} has no tier {:?}", r.kind.as_str(), t.value),
            Some(format!("tiers of {}: {}", r.kind.as_str(), names.join(", "))),
        );
    }
    if let Some(cost) = r.limits.as_ref().and_then(|l| l.cost_per_month.as_ref())
        && !(cost.value >= 0.0 && cost.value.is_finite())
    {
        c.err(cost, format!("{field}.limits.cost_per_month"), "a monthly cost is a number of USD, 0 or more", None);
    }
}
