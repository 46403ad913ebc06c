//! `publish`: get a CI-built container image, signed, onto the registry that fits, then
//! point a RunPod template at it. Stages, in the order data flows through them:
//! `policy` → `image` → `plan` → `registry`/`push` → `report`.

pub mod app;
pub mod cli;
pub mod github;
pub mod http;
pub mod image;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod push;
pub mod reference;
pub mod registry;
pub mod report;
pub mod runpod;
pub mod select;
pub mod sign;
pub mod types;
