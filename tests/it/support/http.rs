//! Raw HTTP requests to the daemon's endpoints, for curl-level checks.

use std::net::SocketAddr;

use reqwest::header::HeaderMap;

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with `headers` to `addr`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let client = super::http_client();
    let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// An IMDSv2 token for `addr`.
pub async fn token(addr: SocketAddr, ttl: u32) -> String {
    let r = request(
        addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string())],
    )
    .await;
    assert_eq!(r.status, 200, "token PUT: {}", r.body);
    r.body
}

/// GET `path` with an IMDSv2 token.
pub async fn get(addr: SocketAddr, path: &str, token: &str) -> Resp {
    request(addr, "GET", path, &[("x-aws-ec2-metadata-token", token)]).await
}

/// The IMDS credentials document of `role` on `addr` (token PUT, then GET), as JSON.
pub async fn imds_creds(addr: SocketAddr, role: &str) -> serde_json::Value {
    let token = token(addr, 60).await;
    let path = format!("/latest/meta-data/iam/security-credentials/{role}");
    get(addr, &path, &token).await.json()
}

/// GET the ECS credentials of `profile` with `token`.
pub async fn ecs_get(addr: SocketAddr, profile: &str, token: Option<&str>) -> Resp {
    let path = format!("/credentials/{profile}");
    match token {
        Some(t) => request(addr, "GET", &path, &[("authorization", t)]).await,
        None => request(addr, "GET", &path, &[]).await,
    }
}
