//! SBOMs the build made (`sbom: FILE` per image): SPDX 2.3 JSON or CycloneDX 1.5–1.7 JSON, as
//! syft writes them (`-o spdx-json`, `-o cyclonedx-json`). Checked before anything is pushed: the format
//! and its required fields, and that what the document says it describes — SPDX's described
//! packages, CycloneDX's `metadata.component` — names this image where it names a digest
//! (its manifest, a platform manifest or a config, i.e. the image id). Attested unchanged as
//! the predicate, with cosign's predicate types.

use std::path::Path;

use serde_json::Value;

use crate::types::Digest;

pub const SPDX: &str = "https://spdx.dev/Document";
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
/// The largest SBOM read (one of a 50 GB CUDA image with every Python package is a few MB).
pub const MAX_SBOM: u64 = 32 * 1024 * 1024;

/// A checked SBOM.
#[derive(Debug, Clone)]
pub struct Sbom {
    pub predicate_type: &'static str,
    /// `SPDX-2.3`, `CycloneDX 1.6`.
    pub format: String,
    pub document: Value,
    /// SHA-256 of the file as read.
    pub digest: Digest,
    /// Image digests the described element names, and where (`packages[0].versionInfo`).
    pub names: Vec<(Digest, String)>,
}

/// Reads and checks `path`: the error says what is wrong and where in the document.
pub fn load(path: &Path) -> Result<Sbom, String> {
    let bytes = crate::http::read_file_limited(path, MAX_SBOM).map_err(|e| e.to_string())?;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Result<Sbom, String> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("not JSON (line {}, column {}): {e}", e.line(), e.column()))?;
    if !document.is_object() {
        return Err("not an SBOM: the document is not a JSON object".into());
    }
    let (predicate_type, format, names) = if document.get("spdxVersion").is_some() {
        spdx(&document)?
    } else if document.get("bomFormat").is_some() {
        cyclonedx(&document)?
    } else {
        return Err("neither SPDX JSON (no spdxVersion) nor CycloneDX JSON (no bomFormat)".into());
    };
    Ok(Sbom { predicate_type, format, document, digest: Digest::of(bytes), names })
}

fn text<'a>(d: &'a Value, field: &str) -> Result<&'a str, String> {
    d.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{field} is missing or not a string"))
}

/// The predicate type, the format's name and version, and the digests the described element names.
type Checked = (&'static str, String, Vec<(Digest, String)>);

fn spdx(d: &Value) -> Result<Checked, String> {
    let version = text(d, "spdxVersion")?;
    if version != "SPDX-2.3" {
        return Err(format!("spdxVersion is {version:?}: SPDX-2.3 JSON is taken (syft -o spdx-json writes it)"));
    }
    if text(d, "SPDXID")? != "SPDXRef-DOCUMENT" {
        return Err("SPDXID must be SPDXRef-DOCUMENT".into());
    }
    text(d, "dataLicense")?;
    text(d, "name")?;
    text(d, "documentNamespace")?;
    let info = d.get("creationInfo").ok_or("creationInfo is missing")?;
    text(info, "created").map_err(|e| format!("creationInfo.{e}"))?;
    if info.get("creators").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return Err("creationInfo.creators is missing or empty".into());
    }
    let packages = d.get("packages").and_then(Value::as_array).cloned().unwrap_or_default();
    // What the document describes: `documentDescribes`, or DESCRIBES relationships.
    let mut described: Vec<String> = d
        .get("documentDescribes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for r in d.get("relationships").and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| r.get(k).and_then(Value::as_str);
        if s("spdxElementId") == Some("SPDXRef-DOCUMENT") && s("relationshipType") == Some("DESCRIBES") {
            described.extend(s("relatedSpdxElement").map(str::to_string));
        }
    }
    let mut names = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let id = p.get("SPDXID").and_then(Value::as_str).unwrap_or_default();
        if described.iter().any(|d| d == id) {
            digests_in(p, &format!("packages[{i}]"), &mut names);
        }
    }
    Ok((SPDX, version.to_string(), names))
}

fn cyclonedx(d: &Value) -> Result<Checked, String> {
    if text(d, "bomFormat")? != "CycloneDX" {
        return Err("bomFormat must be CycloneDX".into());
    }
    let version = text(d, "specVersion")?;
    if !matches!(version, "1.5" | "1.6" | "1.7") {
        return Err(format!("specVersion is {version:?}: CycloneDX 1.5, 1.6 and 1.7 JSON are taken"));
    }
    if d.get("version").is_some_and(|v| !v.is_u64()) {
        return Err("version must be an integer".into());
    }
    if d.get("components").is_some_and(|c| !c.is_array()) {
        return Err("components must be a list".into());
    }
    let mut names = Vec::new();
    if let Some(c) = d.pointer("/metadata/component") {
        digests_in(c, "metadata.component", &mut names);
    }
    Ok((CYCLONEDX, format!("CycloneDX {version}"), names))
}

/// Every `sha256:<hex>` (or `sha256%3A<hex>`, as purls write it) in the string fields of
/// `element` (name, version, purl, checksums, external references), with where.
fn digests_in(element: &Value, at: &str, out: &mut Vec<(Digest, String)>) {
    fn walk(v: &Value, at: String, depth: usize, out: &mut Vec<(Digest, String)>) {
        match v {
            Value::String(s) => {
                let s = s.replace("%3A", ":").replace("%3a", ":");
                let mut rest = s.as_str();
                while let Some(i) = rest.find("sha256:") {
                    let hex = &rest[i + 7..];
                    let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
                    if end == 64
                        && let Ok(d) = format!("sha256:{}", hex[..64].to_ascii_lowercase()).parse::<Digest>()
                    {
                        out.push((d, at.clone()));
                    }
                    rest = &hex[end..];
                }
            }
            // Nested components and packages are the image's contents, not the image.
            Value::Object(m) if depth < 3 => {
                for (k, v) in m.iter().filter(|(k, _)| !matches!(k.as_str(), "components" | "packages" | "files")) {
                    walk(v, format!("{at}.{k}"), depth + 1, out);
                }
            }
            Value::Array(a) if depth < 3 => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{at}[{i}]"), depth + 1, out);
                }
            }
            _ => {}
        }
    }
    walk(element, at.to_string(), 0, out);
    // SPDX checksums are written `{"algorithm": "SHA256", "checksumValue": "<hex>"}`.
    for (i, c) in element.get("checksums").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let alg = c.get("algorithm").and_then(Value::as_str).unwrap_or_default();
        if alg.eq_ignore_ascii_case("sha256")
            && let Some(d) =
                c.get("checksumValue").and_then(Value::as_str).and_then(|h| format!("sha256:{h}").parse().ok())
        {
            out.push((d, format!("{at}.checksums[{i}]")));
        }
    }
}

impl Sbom {
    /// Checks that where the SBOM names a digest, it names one of `image`'s (`ours`: its
    /// manifests' and configs' digests).
    pub fn check_names(&self, ours: &[Digest]) -> Result<(), String> {
        if self.names.is_empty() || self.names.iter().any(|(d, _)| ours.contains(d)) {
            return Ok(());
        }
        let (d, at) = &self.names[0];
        Err(format!(
            "it describes {d} (at {at}), which is not this image: its manifests and configs are {}",
            ours.iter().map(Digest::to_string).collect::<Vec<_>>().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spdx_doc(version_info: &str) -> Vec<u8> {
        json!({
            "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": "app", "documentNamespace": "https://anchore.com/syft/image/app-1",
            "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: syft-1.0.0"]},
            "packages": [
                {"SPDXID": "SPDXRef-DocumentRoot-Image-app", "name": "app", "versionInfo": version_info},
                {"SPDXID": "SPDXRef-Package-python", "name": "python", "versionInfo": format!("sha256:{}", "c".repeat(64))}
            ],
            "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-DocumentRoot-Image-app"}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_spdx_document_is_checked_and_must_name_this_image_where_it_names_one() {
        let ours: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let other = format!("sha256:{}", "b".repeat(64));
        let s = parse(&spdx_doc(ours.as_str())).unwrap();
        assert_eq!(s.predicate_type, SPDX);
        s.check_names(std::slice::from_ref(&ours)).unwrap();
        let e = parse(&spdx_doc(&other)).unwrap().check_names(std::slice::from_ref(&ours)).unwrap_err();
        assert!(e.contains("packages[0].versionInfo") && e.contains(&other), "{e}");
        // A package inside the image with a digest is not the image.
        parse(&spdx_doc("1.0")).unwrap().check_names(&[ours]).unwrap();
        let mut bad: Value = serde_json::from_slice(&spdx_doc("1.0")).unwrap();
        bad["spdxVersion"] = json!("SPDX-2.2");
        assert!(parse(bad.to_string().as_bytes()).unwrap_err().contains("SPDX-2.3"));
    }

    #[test]
    fn a_cyclonedx_document_names_the_image_in_its_metadata_component() {
        let ours: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let doc = |purl: String| {
            json!({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                "metadata": {"component": {"type": "container", "name": "app", "purl": purl}},
                "components": [{"type": "library", "name": "x", "version": format!("sha256:{}", "d".repeat(64))}]})
            .to_string()
        };
        let s = parse(doc(format!("pkg:oci/app@sha256%3A{}", "a".repeat(64))).as_bytes()).unwrap();
        s.check_names(std::slice::from_ref(&ours)).unwrap();
        let e = parse(doc(format!("pkg:oci/app@sha256%3A{}", "b".repeat(64))).as_bytes()).unwrap().check_names(&[ours]);
        assert!(e.unwrap_err().contains("metadata.component.purl"));
        assert!(
            parse(br#"{"bomFormat": "CycloneDX", "specVersion": "1.4"}"#).unwrap_err().contains("1.5, 1.6 and 1.7")
        );
        assert!(parse(br#"{"hello": 1}"#).unwrap_err().contains("neither SPDX"));
    }
}
