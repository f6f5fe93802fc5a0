//! Loads credentials through the AWS SDK for Rust's default credential chain and calls STS
//! GetCallerIdentity with them. Prints, one per line:
//!
//! ```text
//! access_key_id=<the access key id it loaded>
//! expiration=<their expiry, seconds since the Unix epoch, or "none">
//! account_id=<the account id that came with them, or "none">
//! arn=<the caller identity ARN>
//! ```
//!
//! Exits 1 with the error chain on stderr when either step fails. The STS endpoint comes from
//! the environment (`AWS_ENDPOINT_URL_STS`), like any SDK user's.

use std::error::Error;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_http_client::tls;

fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

async fn run() -> Result<(), String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    let provider = config
        .credentials_provider()
        .ok_or("the default chain built no credentials provider")?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| format!("loading credentials: {}", chain(&e)))?;
    println!("access_key_id={}", creds.access_key_id());
    let expiration = creds
        .expiry()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or("none".to_owned(), |d| d.as_secs().to_string());
    println!("expiration={expiration}");
    println!(
        "account_id={}",
        creds.account_id().map_or("none", |a| a.as_str())
    );
    let sts = aws_sdk_sts::Client::new(&config);
    let identity = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| format!("GetCallerIdentity: {}", chain(&e)))?;
    println!("arn={}", identity.arn().unwrap_or(""));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk-rust-client: {e}");
            ExitCode::FAILURE
        }
    }
}
