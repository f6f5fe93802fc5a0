//! The integration-test binary: every test that runs the real thing (moto with SigV4 auth on,
//! the OS keyring, real SDK clients, the `credvend` binary). Run through `scripts/test`, which
//! starts what these tests need.

mod support;

mod cli_keys;
mod conformance;
mod container_clients;
mod containers;
mod control;
mod daemon_basic;
mod doctor;
mod ecs_agent;
mod faults;
mod first_hour;
mod fuzz_corpus;
mod hostile;
mod iam_fake;
mod iam_moto;
mod keystore;
mod layout;
mod lazy;
mod least_privilege;
mod lifecycle;
mod logs;
mod metrics;
mod netns;
mod profiles;
mod query_botocore;
mod reload;
mod rotate;
mod routes;
mod sdk;
mod session_tags;
mod sigv4_botocore;
mod sigv4_suite;
mod sso;
mod sso_standin;
mod sts_fake;
mod sts_moto;
mod sts_samples;
mod transport;
mod trust;
