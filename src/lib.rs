//! `publish`: get a CI-built container image, signed, onto the registry that fits, then
//! point a RunPod template at it. Stages, in the order data flows through them:
//! `policy` → `image` → `select` → `plan` → `registry`/`push` → `sign` → `runpod` →
//! `github`/`report`; `execute` runs a plan through them, `commands` is the command layer.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attest;
pub mod cli;
pub mod commands;
pub mod credentials;
pub mod execute;
pub mod github;
pub mod guard;
pub mod http;
pub mod image;
pub mod order;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod push;
pub mod reference;
pub mod registry;
pub mod report;
pub mod retry;
pub mod runpod;
pub mod select;
pub mod selfhost;
pub mod sign;
pub mod types;
