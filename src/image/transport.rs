//! Where an image is read from, in skopeo's transport syntax.

use std::path::{Path, PathBuf};

use super::ImageError;

/// Where an image is read from, in skopeo's transport syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    OciDir {
        path: PathBuf,
        reference: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// What `docker save` writes (legacy or Docker 25+'s OCI layout inside).
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// An image in the local Docker daemon, exported through its API.
    DockerDaemon {
        name: String,
    },
    /// An image in a registry (`docker://HOST/REPO[:TAG|@DIGEST]`), copied blob by blob.
    Registry {
        reference: String,
    },
}

impl std::fmt::Display for Transport {
    /// skopeo's syntax, which `Transport::parse` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_ref = |f: &mut std::fmt::Formatter<'_>, kind: &str, path: &Path, r: &Option<String>| match r {
            Some(r) => write!(f, "{kind}:{}:{r}", path.display()),
            None => write!(f, "{kind}:{}", path.display()),
        };
        match self {
            Transport::OciDir { path, reference } => with_ref(f, "oci", path, reference),
            Transport::OciArchive { path, reference } => with_ref(f, "oci-archive", path, reference),
            Transport::DockerArchive { path, reference } => with_ref(f, "docker-archive", path, reference),
            Transport::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            Transport::Registry { reference } => write!(f, "docker://{reference}"),
        }
    }
}

impl Transport {
    /// Parses `oci:DIR[:REF]` / `oci-archive:FILE[:REF]`; relative paths are taken from `base`.
    pub fn parse(s: &str, base: &Path) -> Result<Self, ImageError> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| ImageError::Transport(s.to_string()))?;
        if kind == "docker" {
            return match rest.strip_prefix("//") {
                Some(r) if !r.is_empty() => Ok(Transport::Registry { reference: r.to_string() }),
                _ => Err(ImageError::Transport(s.to_string())),
            };
        }
        if kind == "docker-daemon" {
            return if rest.is_empty() {
                Err(ImageError::Transport(s.to_string()))
            } else {
                Ok(Transport::DockerDaemon { name: rest.to_string() })
            };
        }
        // As in skopeo: the path ends at the first ':'.
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
            Some((p, _)) => (p, None),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(ImageError::Transport(s.to_string()));
        }
        let path = base.join(path);
        match kind {
            "oci" => Ok(Transport::OciDir { path, reference }),
            "oci-archive" => Ok(Transport::OciArchive { path, reference }),
            "docker-archive" => Ok(Transport::DockerArchive { path, reference }),
            _ => Err(ImageError::Transport(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_syntax_is_skopeos() {
        let base = Path::new("/p");
        assert_eq!(
            Transport::parse("oci:build/img:v1", base).unwrap(),
            Transport::OciDir { path: "/p/build/img".into(), reference: Some("v1".into()) }
        );
        assert_eq!(
            Transport::parse("oci-archive:/abs/x.tar", base).unwrap(),
            Transport::OciArchive { path: "/abs/x.tar".into(), reference: None }
        );
        assert_eq!(
            Transport::parse("docker-daemon:ghcr.io/o/app:v1", base).unwrap(),
            Transport::DockerDaemon { name: "ghcr.io/o/app:v1".into() }
        );
        assert_eq!(
            Transport::parse("docker-archive:app.tar:app:v1", base).unwrap(),
            Transport::DockerArchive { path: "/p/app.tar".into(), reference: Some("app:v1".into()) }
        );
        assert!(Transport::parse("dir:x", base).is_err());
        assert!(Transport::parse("docker-daemon:", base).is_err());
        assert!(Transport::parse("build/img", base).is_err());
    }
}
