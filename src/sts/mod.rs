//! Security Token Service: request/response wire format (pure), endpoint resolution (pure), and
//! the HTTP client that signs, sends and retries (IO).

pub mod client;
pub mod endpoint;
pub mod wire;

pub use client::{ClientOptions, RetryPolicy, ServiceError, StsClient, StsError};
pub use endpoint::{RegionalEndpoints, StsEndpoint};
pub use wire::{
    AssumeRole, AssumeRoleWithWebIdentity, CallerIdentity, GetFederationToken, GetSessionToken,
    MfaToken, StsRequest,
};
