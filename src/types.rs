//! Small typed values that cross module boundaries: digests, byte sizes and secrets.
//! Parse at the edge, never pass the raw strings around. No I/O here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest such as `sha256:0123…`. Only sha256 is verified, as every registry
/// our users push to uses it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct DigestError(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }
    pub fn from_sha256(hash: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The hex part, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
    /// Short form for humans: `sha256:0123456789ab`.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(19)]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok { Ok(Digest(s.to_string())) } else { Err(DigestError(s.to_string())) }
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A size in bytes. Displayed in decimal units (kB, MB, GB), as registries state their limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1000.0 && unit < UNITS.len() - 1 {
            value /= 1000.0;
            unit += 1;
        }
        if unit == 0 { write!(f, "{} B", self.0) } else { write!(f, "{value:.1} {}", UNITS[unit]) }
    }
}

impl ByteSize {
    pub fn gb(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl FromStr for ByteSize {
    type Err = String;
    /// `1.2GB`, `500 MB`, `10GiB`, `1024`: decimal units (kB, MB, GB, TB) and binary ones
    /// (KiB, MiB, GiB, TiB); a bare number is bytes. Written here, not taken from `bytesize`:
    /// policy sizes must refuse what that crate accepts silently (a unit it does not know, a
    /// value past u64), with the message saying which units exist; a proptest below checks it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a size: write e.g. 500MB, 1.2GB or 10GiB"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?}: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
                ));
            }
        };
        let bytes = (value * mult).round();
        // A float cast saturates silently: say so instead.
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("{s:?} is larger than any size publish can count (16 EiB)"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

/// An enum of outcomes that reads as one word, the same in JSON and in text: statuses and
/// actions are typed values, turned into words only at the edge (`Display`, `Serialize`).
#[macro_export]
macro_rules! word_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $v),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A secret string (password, token). `Debug` and `Display` print `***`; only
/// [`Secret::expose`] reveals it, and only code that puts it on the wire calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Called with every secret as it is read (GitHub Actions masks it in the log).
static SECRET_HOOK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Registers what to do with each secret read from now on; the first registration wins.
pub fn on_secret_read(hook: fn(&str)) {
    let _ = SECRET_HOOK.set(hook);
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        let s = s.into();
        if let Some(hook) = SECRET_HOOK.get() {
            hook(&s);
        }
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `secs` since the epoch as RFC 3339 (UTC): times AWS gives as numbers, provenance timestamps.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whole numbers in every unit read back exactly; any text parses or is refused,
        /// never panics.
        #[test]
        fn sizes_read_back_in_every_unit(
            n in 0u64..1_000_000,
            unit in proptest::sample::select(vec![("", 1u64), ("B", 1), ("kB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]),
            space in proptest::bool::ANY,
            junk in "\\PC{0,30}",
        ) {
            let text = format!("{n}{}{}", if space { " " } else { "" }, unit.0);
            proptest::prop_assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(n * unit.1)));
            let _ = junk.parse::<ByteSize>();
        }
    }

    #[test]
    fn digest_rejects_uppercase_and_short() {
        assert!("sha256:ABCD".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "A".repeat(64)).parse::<Digest>().is_err());
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().len(), 64);
    }

    #[test]
    fn byte_size_parses_units() {
        assert_eq!("1.2GB".parse::<ByteSize>().unwrap(), ByteSize(1_200_000_000));
        assert_eq!("500 MB".parse::<ByteSize>().unwrap(), ByteSize(500_000_000));
        assert_eq!("10000MiB".parse::<ByteSize>().unwrap(), ByteSize(10_485_760_000));
        assert_eq!("42".parse::<ByteSize>().unwrap(), ByteSize(42));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("GB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn byte_size_is_decimal() {
        assert_eq!(ByteSize(999).to_string(), "999 B");
        assert_eq!(ByteSize(12_400_000_000).to_string(), "12.4 GB");
        assert_eq!(ByteSize(1_500).to_string(), "1.5 kB");
    }

    #[test]
    fn secret_never_formats() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}

/// How uncompressed layers are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LayerCompression {
    /// gzip, what every client pulls (default).
    #[default]
    Gzip,
    /// zstd: smaller and faster to unpack; needs an OCI manifest and a recent runtime.
    Zstd,
    /// As they are: larger transfers, no compression time.
    None,
}

/// An OCI platform, `os/arch[/variant]`, as in `linux/amd64` or `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether an image built for `self` satisfies a requirement for `wanted`. A requirement
    /// without a variant accepts any variant (`linux/arm64` accepts `linux/arm64/v8`).
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || wanted.variant == self.variant)
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("{s:?} is not a platform: expected os/arch[/variant], such as linux/amd64")),
        }
    }
}

impl TryFrom<String> for Platform {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.to_string()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
