//! Attestations: in-toto statements about a pushed image — SLSA provenance of the run that
//! published it (`provenance`), the SBOMs its build made (`sbom`) — signed with the policy's
//! signing settings and written beside its signatures in both of cosign's formats
//! (`sign::attest`). Knows the predicates; signing and the registry are `sign`'s.

pub mod provenance;
pub mod sbom;
pub mod write;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::types::Digest;

pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";

/// cosign's `--type` names and the predicate types they stand for (`cosign attest`,
/// `cosign verify-attestation`); anything else is taken as the predicate type's URI.
pub const ALIASES: [(&str, &str); 10] = [
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", provenance::PREDICATE_TYPE),
    ("spdx", sbom::SPDX),
    ("spdxjson", sbom::SPDX),
    ("cyclonedx", sbom::CYCLONEDX),
    ("link", "https://in-toto.io/Link/v1"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
];

/// The predicate type `--attestation NAME` stands for: a cosign alias, or a URI.
pub fn predicate_type(name: &str) -> Result<String, String> {
    if let Some((_, uri)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Ok(uri.to_string());
    }
    match url::Url::parse(name) {
        Ok(_) if name.contains(':') => Ok(name.to_string()),
        _ => Err(format!(
            "{name:?} is neither a predicate type URI nor one of cosign's names ({})",
            ALIASES.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// What a statement is about: a pushed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `host/path`, as GitHub's attestations name an image.
    pub name: String,
    pub digest: Digest,
}

/// One attestation to write: its predicate, and where it came from.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub predicate_type: String,
    pub predicate: Value,
    /// `provenance`, or `sbom FILE` (shown in reports).
    pub source: String,
}

/// An in-toto Statement v1 over `subjects`, as the envelope carries it.
pub fn statement(subjects: &[Subject], a: &Attestation) -> Vec<u8> {
    let subject: Vec<Value> =
        subjects.iter().map(|s| json!({"name": s.name, "digest": {"sha256": s.digest.hex()}})).collect();
    json!({
        "_type": STATEMENT_V1,
        "subject": subject,
        "predicateType": a.predicate_type,
        "predicate": a.predicate
    })
    .to_string()
    .into_bytes()
}

/// An attestation the plan says a target gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub predicate_type: String,
    /// `provenance`, `sbom` (signed by this run) or `buildkit` (in the image's own index,
    /// pushed as it is).
    pub kind: String,
    /// The SBOM file, resolved against the policy's directory, and its SHA-256 when planned
    /// (a run refuses one changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_digest: Option<Digest>,
    /// For `buildkit`: the attestation manifest and the platform image it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<Digest>,
}

/// BuildKit's attestation manifests in an image's index (`vnd.docker.reference.type:
/// attestation-manifest`): each with the image it is about and its predicate types.
pub fn buildkit(image: &crate::image::Image) -> Vec<Planned> {
    let Ok(index) = serde_json::from_slice::<Value>(&image.root.bytes) else { return Vec::new() };
    let entries = index.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for e in &entries {
        let annotation = |k: &str| e.pointer(&format!("/annotations/{}", k.replace('/', "~1"))).and_then(Value::as_str);
        if annotation("vnd.docker.reference.type") != Some("attestation-manifest") {
            continue;
        }
        let Some(digest) = e.get("digest").and_then(Value::as_str).and_then(|d| d.parse::<Digest>().ok()) else {
            continue;
        };
        let about = annotation("vnd.docker.reference.digest").and_then(|d| d.parse::<Digest>().ok());
        let layers = image.children.iter().find(|c| c.digest == digest).map(|c| c.layers.clone()).unwrap_or_default();
        for l in layers {
            let t = l.annotations.as_ref().and_then(|a| a.get("in-toto.io/predicate-type")).cloned();
            let mut p = Planned::new(t.as_deref().unwrap_or("unknown"), "buildkit");
            p.manifest = Some(digest.clone());
            p.about = about.clone();
            out.push(p);
        }
    }
    out
}

/// The attestations the plan gives image `spec` (opened as `image`): its provenance when
/// `provenance`, its SBOM (checked to name this image where it names a digest: an error, or
/// for a Docker source, whose manifest syft makes up, a warning) and BuildKit's own.
pub fn plan(
    provenance: bool,
    file: &str,
    spec: &crate::policy::ResolvedImage,
    image: &crate::image::Image,
) -> Result<(Vec<Planned>, Option<String>), crate::policy::Diagnostic> {
    let mut out = Vec::new();
    let mut warning = None;
    if provenance {
        out.push(Planned::new(provenance::PREDICATE_TYPE, "provenance"));
    }
    if let Some(s) = &spec.sbom {
        let manifests = std::iter::once(&image.root).chain(&image.children);
        let ours: Vec<Digest> = manifests
            .flat_map(|m| std::iter::once(m.digest.clone()).chain(m.config.iter().map(|c| c.digest.clone())))
            .collect();
        if let Err(e) = s.sbom.check_names(&ours) {
            let docker = ["docker-archive:", "docker-daemon:"].iter().any(|p| spec.source.value.starts_with(p));
            if !docker {
                return Err(crate::policy::Diagnostic {
                    file: file.to_string(),
                    line: s.at.0.max(1),
                    col: s.at.1.max(1),
                    field: s.field.clone(),
                    message: format!("{}: {e}", s.path.display()),
                    hint: Some("make the SBOM from the image this policy publishes (syft oci-dir:DIR, or the pushed reference)".into()),
                });
            }
            warning = Some(format!(
                "image {}: its SBOM {} names a digest that is not this image's ({e}); from a Docker source syft names a manifest of its own, so it is attested anyway",
                spec.name,
                s.path.display()
            ));
        }
        let mut p = Planned::new(s.sbom.predicate_type, "sbom");
        p.file = Some(s.path.display().to_string());
        p.file_digest = Some(s.sbom.digest.clone());
        out.push(p);
    }
    out.extend(buildkit(image));
    Ok((out, warning))
}

impl Planned {
    /// Signed and written by the run (provenance, SBOMs), not BuildKit's pushed as they are.
    pub fn by_run(&self) -> bool {
        self.kind != "buildkit"
    }

    fn new(predicate_type: &str, kind: &str) -> Planned {
        Planned {
            predicate_type: predicate_type.to_string(),
            kind: kind.to_string(),
            file: None,
            file_digest: None,
            manifest: None,
            about: None,
        }
    }

    /// One line for the plan's text.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "provenance" => format!("{} (SLSA provenance of this run), signed", self.predicate_type),
            "sbom" => format!("{} (SBOM {}), signed", self.predicate_type, self.file.as_deref().unwrap_or("?")),
            _ => format!(
                "{} (BuildKit's, in the image's index{}), pushed as it is",
                self.predicate_type,
                self.about.as_ref().map(|a| format!(", about {a}")).unwrap_or_default()
            ),
        }
    }
}

/// What was written for one attestation of a target.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Written {
    pub predicate_type: String,
    /// `provenance` or `sbom FILE`.
    pub source: String,
    /// `repo:sha256-<hex>.att` when the legacy format was written (or already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<String>,
    /// The bundle referrer's digest when the bundle was written (or already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Digest>,
    /// Formats whose identical attestation by this signer was already there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub already_there: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_names_and_uris_are_predicate_types_and_anything_else_is_refused() {
        assert_eq!(predicate_type("slsaprovenance1").unwrap(), "https://slsa.dev/provenance/v1");
        assert_eq!(predicate_type("spdxjson").unwrap(), "https://spdx.dev/Document");
        assert_eq!(predicate_type("cyclonedx").unwrap(), "https://cyclonedx.org/bom");
        assert_eq!(predicate_type("https://example.com/p/v1").unwrap(), "https://example.com/p/v1");
        assert!(predicate_type("slsa").unwrap_err().contains("slsaprovenance1"));
    }
}
