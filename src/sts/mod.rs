//! Security Token Service: request/response wire format (pure), endpoint resolution (pure), the
//! HTTP client that retries (IO), and the signed query-protocol transport it shares with
//! [`crate::iam`] (IO).

pub mod client;
pub mod endpoint;
pub(crate) mod query;
pub mod wire;

pub use client::{ClientOptions, RetryPolicy, ServiceError, StsClient, StsError};
pub use endpoint::{RegionalEndpoints, StsEndpoint};
pub(crate) use query::clock_skew;
pub use wire::{
    AssumeRole, AssumeRoleWithWebIdentity, CallerIdentity, GetFederationToken, GetSessionToken,
    MfaToken, StsRequest,
};
