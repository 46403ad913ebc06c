//! The policy file: `parse` reads `publish.yaml` into the model, `resolve` checks everything
//! that can be checked offline and lowers it into the plain values of `resolved` that the
//! later stages use. Every mistake is a located `Diagnostic`. No network here; the only disk
//! reads are the policy and the files it names.

pub mod diag;
pub mod located;
pub mod model;
mod parse;
mod resolve;
mod resolved;
pub mod retention;

pub use diag::{Diagnostic, Diagnostics};
pub use located::Located;
pub use model::{Billing, Policy, PublishTo, RegistryKind, Visibility};
pub use parse::{load, parse};
pub use resolve::{TemplateFailure, resolve, template_environment, template_error};
pub use resolved::*;
pub use retention::ResolvedRetention;

/// The JSON Schema of the policy file.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or_default()
}
