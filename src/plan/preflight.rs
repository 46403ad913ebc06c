//! Credentials resolved for every target of a plan before anything is contacted: a variable
//! the policy names that is not set is a located mistake (exit 2), found offline.

use std::collections::HashMap;

use super::Plan;
use crate::credentials::{Env, Resolved as Credentials};
use crate::policy::{Diagnostic, Diagnostics, Resolved};

/// Resolves every target's credentials from its named source, before anything is contacted;
/// a policy variable that is not set is exit 2 (located in the policy when it is at hand).
/// Targets already in `known` are kept as they are (no credential helper runs twice).
pub fn preflight(
    plan: &Plan,
    resolved: Option<&Resolved>,
    env: &Env,
    known: HashMap<String, Credentials>,
) -> Result<HashMap<String, Credentials>, Diagnostics> {
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut out = known;
    let missing: Vec<_> = plan.images.iter().flat_map(|i| &i.targets).filter(|t| !out.contains_key(&t.id)).collect();
    for t in missing {
        match t.credentials.resolve(env) {
            Ok(c) => {
                out.insert(t.id.clone(), c);
            }
            Err(missing) => {
                let at = resolved
                    .and_then(|r| r.images.iter().flat_map(|i| &i.candidates).find(|c| c.id == t.registry))
                    .and_then(|r| r.credentials.as_ref());
                let (line, col, field) = at.map_or((1, 1, format!("registries.{}.credentials", t.registry)), |c| {
                    (c.at.0.max(1), c.at.1.max(1), c.field.clone())
                });
                if errors.iter().any(|e| e.field == field) {
                    continue;
                }
                errors.push(Diagnostic {
                    file: plan.policy.clone(),
                    line,
                    col,
                    field,
                    message: format!("environment variable {} is not set (registry {})", missing.variable, t.registry),
                    hint: Some(format!("export {} with the password or token for {}", missing.variable, t.registry)),
                });
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(Diagnostics(errors)) }
}
