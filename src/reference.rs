//! Image references (`host[:port]/path[:tag][@digest]`), parsed once at the edge.
//! Docker's rules: a first component with a `.` or `:` or equal to `localhost` is a host;
//! otherwise the reference is on Docker Hub. No I/O here.

use std::fmt;
use std::net::IpAddr;

use crate::types::Digest;

pub const DOCKER_HUB: &str = "docker.io";
/// The tag a reference without one means, as in Docker.
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub host: String,
    /// Repository path inside the registry: `ml/comfyui`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("{0:?} has no repository path after the host")]
    NoRepository(String),
    #[error(
        "repository path {0:?} is invalid: components are lowercase letters and digits, separated by '.', '_', '__' or '-'"
    )]
    BadRepository(String),
    #[error("tag {0:?} is invalid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'")]
    BadTag(String),
    #[error(transparent)]
    BadDigest(#[from] crate::types::DigestError),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        let (host, repository) = split_host(name);
        if repository.is_empty() {
            return Err(ReferenceError::NoRepository(s.to_string()));
        }
        validate_repository(&repository)?;
        if let Some(t) = &tag {
            validate_tag(t)?;
        }
        Ok(Reference { host, repository, tag, digest })
    }

    /// `host/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `name` into host and repository the way Docker does.
pub fn split_host(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => {
            let repo = if name.contains('/') { name.to_string() } else { format!("library/{name}") };
            (DOCKER_HUB.to_string(), repo)
        }
    }
}

/// Whether `host[:port]` names this machine: 127.0.0.0/8, ::1 or localhost.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = if let Some(inner) = host.strip_prefix('[') {
        inner.split(']').next().unwrap_or_default()
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or_default()
    } else {
        host
    };
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn validate_repository(path: &str) -> Result<(), ReferenceError> {
    // distribution/reference's grammar, as its own regular expression writes it:
    // path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | [-]+
    // (A pattern that did not compile would refuse every path: the tests below would fail.)
    static PATH: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
        regex::Regex::new(&format!("^{component}(?:/{component})*$")).ok()
    });
    if path.len() <= 255 && PATH.as_ref().is_some_and(|p| p.is_match(path)) {
        Ok(())
    } else {
        Err(ReferenceError::BadRepository(path.to_string()))
    }
}

pub fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|x| x.is_ascii_alphanumeric() || b"._-".contains(x));
    if ok { Ok(()) } else { Err(ReferenceError::BadTag(tag.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_separators_follow_the_grammar() {
        for ok in ["a", "ml/comfy-ui", "a__b", "a---b", "a.b_c", "x/y/z0"] {
            assert!(validate_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["a_-b", "a-_b", "a._b", "a___b", "a..b", "-a", "a-", "A", "a//b", "a/", ""] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Paths built from the grammar are accepted; a separator run the grammar does not
        /// allow is refused wherever it stands.
        #[test]
        fn repositories_from_the_grammar(
            parts in proptest::collection::vec(("[a-z0-9]{1,5}", proptest::sample::select(vec![".", "_", "__", "-", "--"]), "[a-z0-9]{1,5}"), 1..4),
            bad in proptest::sample::select(vec!["_-", "-_", "._", "_.", "___", "..", ".-"]),
        ) {
            let path: Vec<String> = parts.iter().map(|(a, sep, b)| format!("{a}{sep}{b}")).collect();
            let path = path.join("/");
            proptest::prop_assert!(validate_repository(&path).is_ok(), "{}", path);
            let broken = format!("{}{bad}x", parts[0].0);
            proptest::prop_assert!(validate_repository(&broken).is_err(), "{}", broken);
        }
    }

    #[test]
    fn parses_host_port_tag_and_digest() {
        let r = Reference::parse("127.0.0.1:5000/ml/img:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "ml/img", Some("v1"))
        );
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("ghcr.io/o/i@{d}")).unwrap();
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.tag, None);
        let r = Reference::parse("ubuntu").unwrap();
        assert_eq!(r.name(), "docker.io/library/ubuntu");
        assert!(Reference::parse("localhost:5000/Upper").is_err());
        assert!(Reference::parse("localhost:5000/a:-bad").is_err());
    }

    #[test]
    fn loopback_detection() {
        for h in ["127.0.0.1:5000", "localhost", "[::1]:443", "127.3.2.1", "::1"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "ghcr.io", "example.com:5000"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
