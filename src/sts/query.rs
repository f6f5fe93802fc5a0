//! One signed AWS query-protocol call over HTTP(S): the transport STS ([`super::client`]) and IAM
//! ([`crate::iam`]) share. It builds the rustls(ring) + reqwest client, signs a form body with
//! SigV4 for a service and region, POSTs it, reads at most [`MAX_BODY`] bytes of the answer and
//! turns a non-200 answer into the AWS error document it carries. It does not retry and knows no
//! action: each client maps [`Failure`] to its own error type and decides what may be retried.
//!
//! TLS is rustls with the *ring* provider; server certificates are checked against the operating
//! system's trust store, or only against `ca_bundle` when one is configured (as the AWS SDKs do).
//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` are honoured.

use std::path::Path;
use std::sync::Arc;

use reqwest::Url;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::client::{ClientOptions, MAX_BODY};
use super::wire::{self, ErrorBody};
use crate::creds::SigningKey;
use crate::sigv4;

/// The `Content-Type` of every query-protocol request (botocore's, `botocore/serialize.py`).
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How far STS's clock is from this machine's, as last measured from the `Date` header of an
/// answer (whole seconds; positive when STS is ahead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    /// STS's time minus ours, in seconds (the header has a resolution of one second).
    pub seconds: i64,
    /// When it was measured (our clock).
    pub measured_at: OffsetDateTime,
}

static LAST_SKEW: std::sync::Mutex<Option<ClockSkew>> = std::sync::Mutex::new(None);

/// The clock skew against the STS (or IAM) endpoint that answered last, if any answered.
pub fn clock_skew() -> Option<ClockSkew> {
    *LAST_SKEW.lock().expect("skew lock")
}

/// Records the skew shown by an answer's `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn record_skew(date: &str, now: OffsetDateTime) {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    if let Ok(theirs) = time::PrimitiveDateTime::parse(date.trim(), &format) {
        let seconds = (theirs.assume_utc() - now).whole_seconds();
        *LAST_SKEW.lock().expect("skew lock") = Some(ClockSkew {
            seconds,
            measured_at: now,
        });
    }
}

/// The HTTP client and its options. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
}

/// One request: where it goes, how it is signed, what it carries.
pub(crate) struct Call<'a> {
    /// Base URL the body is POSTed to.
    pub url: &'a Url,
    /// Region in the SigV4 credential scope.
    pub signing_region: &'a str,
    /// Service in the SigV4 credential scope (`sts`, `iam`).
    pub service: &'static str,
    /// The form body (see [`sigv4::form_encode`]); may hold a secret such as an MFA code.
    pub body: &'a str,
    /// The signing key; `None` sends the request unsigned.
    pub key: Option<SigningKey<'a>>,
}

/// Why a call failed, before the client adds its action and endpoint.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A non-200 answer carrying an AWS error document (request id from the body, else from the
    /// `x-amzn-requestid` / `x-amz-request-id` header).
    Service {
        /// HTTP status.
        status: u16,
        /// The error document.
        error: ErrorBody,
    },
    /// A non-200 answer without an error document.
    Http {
        /// HTTP status.
        status: u16,
    },
    /// The request could not be sent or the answer not read (the error and its sources).
    Transport(String),
    /// The whole request took longer than [`ClientOptions::timeout`].
    Timeout,
    /// The answer exceeded [`MAX_BODY`].
    TooLarge,
    /// A credential holds characters an HTTP header cannot carry.
    Setup(String),
}

impl Transport {
    /// Builds the client. Fails only when `ca_bundle` is unreadable or the system trust store
    /// cannot be loaded; the message names the file and the problem.
    pub(crate) fn new(options: ClientOptions) -> Result<Transport, String> {
        Ok(Transport {
            http: http_client(&options)?,
            options: Arc::new(options),
        })
    }

    /// The options this client was built with.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Sends one call and returns the body of a 200 answer (lossily decoded as UTF-8).
    pub(crate) async fn call(&self, call: &Call<'_>) -> Result<String, Failure> {
        let host = host_header(call.url);
        let mut builder = self
            .http
            .post(call.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, "text/xml");
        if let Some(key) = call.key {
            let headers = [("content-type", CONTENT_TYPE), ("host", host.as_str())];
            let signed = sigv4::sign(
                &sigv4::Request {
                    method: "POST",
                    path: call.url.path(),
                    query: call.url.query().unwrap_or(""),
                    headers: &headers,
                    payload: call.body.as_bytes(),
                },
                key,
                &sigv4::Scope {
                    region: call.signing_region,
                    service: call.service,
                    time: OffsetDateTime::now_utc(),
                },
            );
            builder = builder.header("x-amz-date", signed.amz_date).header(
                reqwest::header::AUTHORIZATION,
                sensitive(&signed.authorization)?,
            );
            if let Some(token) = key.session_token {
                builder = builder.header("x-amz-security-token", sensitive(token.expose_secret())?);
            }
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Transport(error_chain(&e))
            }
        };
        let mut resp = builder
            .body(call.body.to_owned())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if let Some(date) = resp.headers().get(reqwest::header::DATE)
            && let Ok(date) = date.to_str()
        {
            record_skew(date, OffsetDateTime::now_utc());
        }
        let header_request_id = ["x-amzn-requestid", "x-amz-request-id"]
            .iter()
            .find_map(|h| resp.headers().get(*h)?.to_str().ok())
            .map(str::to_owned);
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if data.len() + chunk.len() > MAX_BODY {
                return Err(Failure::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&data).into_owned();
        if status != 200 {
            return Err(match wire::parse_error(&text) {
                Some(mut error) => {
                    error.request_id = error.request_id.or(header_request_id);
                    Failure::Service { status, error }
                }
                None => Failure::Http { status },
            });
        }
        Ok(text)
    }
}

/// The `Host` header value requests to `url` carry (port only when not the scheme's default).
pub(crate) fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Builds the rustls configuration: system roots, or only the roots in `ca_bundle`.
fn tls_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut config = match ca_bundle {
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Some(path) => {
            let shown = path.display();
            let bundle =
                std::fs::read(path).map_err(|e| format!("cannot read ca_bundle {shown}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bundle) {
                let cert =
                    cert.map_err(|e| format!("ca_bundle {shown} is not a PEM bundle: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_bundle {shown} holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "ca_bundle {shown} holds no certificates; point it at a PEM file"
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue, Failure> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        Failure::Setup("a credential holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The reqwest client every AWS call of credvend goes through (STS and IAM here, IAM Identity
/// Center in `crate::sso`): the TLS setup of `tls_config`, the connect and total timeouts of
/// `options`, credvend's User-Agent, no redirects followed, proxies from the environment. Fails
/// only when `ca_bundle` is unreadable or the system trust store cannot be loaded.
pub(crate) fn http_client(options: &ClientOptions) -> Result<reqwest::Client, String> {
    let tls = tls_config(options.ca_bundle.as_deref())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .user_agent(concat!("credvend/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client setup failed: {e}"))
}

/// The error and its sources, joined: reqwest's top-level message alone ("error sending
/// request") does not say what failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_comes_from_the_date_header() {
        let now = time::macros::datetime!(2026-11-30 12:00:00 UTC);
        record_skew("Mon, 30 Nov 2026 10:00:05 GMT", now);
        assert_eq!(clock_skew().unwrap().seconds, -7195);
        record_skew("not a date", now);
        assert_eq!(clock_skew().unwrap().seconds, -7195, "kept");
    }
}
