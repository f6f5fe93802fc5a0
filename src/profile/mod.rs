//! The AWS shared configuration files (`~/.aws/config`, `~/.aws/credentials`): parsing them the
//! way the AWS SDKs do ([`file`](mod@file)) and removing plaintext keys from the credentials file without
//! disturbing anything else in it ([`edit`]).
//!
//! Both modules are pure: they take and return text. Finding and reading the files (and
//! `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`) is the caller's job.

pub mod edit;
pub mod file;
pub mod resolve;
