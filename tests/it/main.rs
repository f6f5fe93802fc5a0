//! The integration-test binary: every test that runs the real thing (moto with SigV4 auth on,
//! the OS keyring, real SDK clients, the `credvend` binary). Run through `scripts/test`, which
//! starts what these tests need.

mod support;

mod cli_keys;
mod conformance;
mod container_clients;
mod containers;
mod daemon_basic;
mod faults;
mod fuzz_corpus;
mod hostile;
mod keystore;
mod netns;
mod profiles;
mod sdk;
mod service;
mod sigv4_botocore;
mod sigv4_suite;
mod sts_fake;
mod sts_moto;
mod sts_samples;
mod transport;
