//! `retention:`: what `publish prune` keeps of each repository the policy publishes to (top
//! level, overridden field by field under an image). Without it, nothing is ever deleted.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::located::Located;
use super::resolve::Checker;

/// What to keep; everything else older than `min_age` is deleted by `publish prune`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest N images per repository are kept (default 5; at least 1).
    #[serde(default)]
    pub keep_last: Option<Located<u32>>,
    /// And every image newer than this (`30d`, `12h`, `2w`).
    #[serde(default)]
    pub keep_within: Option<Located<String>>,
    /// Tags never deleted, as globs (`latest`, `main`, `v*`).
    #[serde(default)]
    pub keep_tags: Option<Vec<Located<String>>>,
    /// `keep` (default) or `delete`: the untagged children of a deleted index (on GHCR, every
    /// untagged version) no kept tag or index refers to.
    #[serde(default)]
    pub untagged: Option<Located<Untagged>>,
    /// Nothing younger than this is touched (default `1h`: pushes in flight).
    #[serde(default)]
    pub min_age: Option<Located<String>>,
    /// `publish run` prunes after a fully successful push and RunPod sync (default false).
    #[serde(default)]
    pub on_run: Option<Located<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Untagged {
    Keep,
    Delete,
}

/// Retention as prune applies it to one image's repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRetention {
    pub keep_last: u32,
    pub keep_within: Option<Duration>,
    pub keep_tags: Vec<String>,
    pub delete_untagged: bool,
    pub min_age: Duration,
    pub on_run: bool,
}

/// The retention of an image: its own `retention:` fields over the top-level ones; `None`
/// when neither is written.
pub(super) fn resolve(
    c: &mut Checker,
    top: Option<&Retention>,
    own: Option<&Retention>,
    field: &str,
) -> Option<ResolvedRetention> {
    if top.is_none() && own.is_none() {
        return None;
    }
    let pick = |f: fn(&Retention) -> bool| -> (Option<&Retention>, String) {
        match own.filter(|o| f(o)) {
            Some(o) => (Some(o), format!("{field}.retention")),
            None => (top, "retention".to_string()),
        }
    };
    let mut out = ResolvedRetention {
        keep_last: 5,
        keep_within: None,
        keep_tags: Vec::new(),
        delete_untagged: false,
        min_age: Duration::from_secs(3600),
        on_run: false,
    };
    if let (Some(r), at) = pick(|r| r.keep_last.is_some())
        && let Some(n) = &r.keep_last
    {
        if n.value == 0 {
            c.err(
                n,
                format!("{at}.keep_last"),
                "must be 1 or more",
                Some("0 would delete the image just published".into()),
            );
        }
        out.keep_last = n.value.max(1);
    }
    if let (Some(r), at) = pick(|r| r.keep_within.is_some())
        && let Some(d) = &r.keep_within
    {
        out.keep_within = duration(c, d, &format!("{at}.keep_within"));
    }
    if let (Some(r), at) = pick(|r| r.min_age.is_some())
        && let Some(d) = &r.min_age
    {
        out.min_age = duration(c, d, &format!("{at}.min_age")).unwrap_or(out.min_age);
    }
    if let (Some(r), at) = pick(|r| r.keep_tags.is_some()) {
        for (i, g) in r.keep_tags.iter().flatten().enumerate() {
            if g.value.is_empty() || g.value.len() > 128 || g.value.chars().any(|ch| ch.is_whitespace()) {
                c.err(g, format!("{at}.keep_tags[{i}]"), format!("{:?} is not a tag glob", g.value), None);
            }
            out.keep_tags.push(g.value.clone());
        }
    }
    if let (Some(r), _) = pick(|r| r.untagged.is_some()) {
        out.delete_untagged = r.untagged.as_ref().is_some_and(|u| u.value == Untagged::Delete);
    }
    if let (Some(r), _) = pick(|r| r.on_run.is_some()) {
        out.on_run = r.on_run.as_ref().is_some_and(|b| b.value);
    }
    Some(out)
}

/// `30d`, `12h`, `90m`, `45s`, `2w`.
fn duration(c: &mut Checker, d: &Located<String>, field: &str) -> Option<Duration> {
    match parse_duration(&d.value) {
        Some(v) => Some(v),
        None => {
            c.err(
                d,
                field,
                format!("{:?} is not a duration", d.value),
                Some("a number and a unit: 45s, 90m, 12h, 30d or 2w".into()),
            );
            None
        }
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// Whether `tag` matches `glob` (`*` any run of characters, `?` one character).
pub fn glob_matches(glob: &str, tag: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), tag.chars().collect());
    let (mut gi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ti;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&ch| ch == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_durations() {
        assert!(glob_matches("v*", "v1.2"));
        assert!(glob_matches("latest", "latest"));
        assert!(!glob_matches("latest", "latest2"));
        assert!(glob_matches("sha-???????", "sha-1a2b3c4"));
        assert!(!glob_matches("v*", "main"));
        assert!(glob_matches("*-rc*", "v1-rc2"));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("d"), None);
    }
}
