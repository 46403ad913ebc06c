//! The integration tests, one binary (the support code compiles once): each module drives the
//! real `publish` binary, or the library, against real registries and stand-ins started by
//! `support`.

mod support;

mod action;
mod architecture;
mod attest;
mod auth;
mod concurrent_sign;
mod cosign;
mod decision_matrix;
mod docker_archive;
mod docker_daemon;
mod dockerhub;
mod docs_commands;
mod docs_messages;
mod docs_snippets;
mod ecr;
mod faults;
mod hostile;
mod init;
mod keyless;
mod origins;
mod plan;
mod plan_run;
mod policy_errors;
mod properties;
mod prune;
mod prune_services;
mod push;
mod rekor_conflict;
mod remote_source;
mod resume;
mod rollback;
mod runpod;
mod selection;
mod sign;
mod sources_tls;
mod r#try;
