//! `publish generate-key-pair`: cosign.key (encrypted with `COSIGN_PASSWORD`) and cosign.pub.

use std::path::PathBuf;

use super::{ExitStatus, UsageError};
use crate::credentials::Env;
use crate::sign::keys::COSIGN_PASSWORD;
use crate::types::Secret;

#[derive(Debug, Clone)]
pub struct KeyPairArgs {
    pub dir: PathBuf,
    /// Replace an existing pair.
    pub force: bool,
}

pub fn generate_key_pair(args: KeyPairArgs, env: &Env) -> anyhow::Result<ExitStatus> {
    let password = env.get(COSIGN_PASSWORD).ok_or_else(|| {
        UsageError::Message(format!("set {COSIGN_PASSWORD} to the password for the new key (it may be empty)"))
    })?;
    let (key, public) =
        crate::sign::keys::generate(&args.dir, &Secret::new(password.clone()), args.force).map_err(UsageError::of)?;
    super::print_out(&format!(
        "Private key written to {}\nPublic key written to {}\n",
        key.display(),
        public.display()
    ));
    Ok(ExitStatus::Success)
}
