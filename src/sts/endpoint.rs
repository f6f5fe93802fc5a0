//! Where an STS request goes and which region signs it. Pure.

use reqwest::Url;

/// `sts_regional_endpoints`: `regional` (the SDK default since botocore 1.40) or `legacy`
/// (the classic regions and `aws-global` use the global `sts.amazonaws.com`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RegionalEndpoints {
    /// `sts.REGION.amazonaws.com` for every region.
    #[default]
    Regional,
    /// The global endpoint for the 16 classic regions.
    Legacy,
}

impl std::str::FromStr for RegionalEndpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "regional" => Ok(Self::Regional),
            "legacy" => Ok(Self::Legacy),
            other => Err(format!(
                "sts_regional_endpoints must be `regional` or `legacy`, not `{other}`"
            )),
        }
    }
}

/// Regions that legacy mode sends to the global endpoint (the `AWS::STS::UseGlobalEndpoint`
/// rule set of the STS endpoint rules).
const LEGACY_GLOBAL_REGIONS: &[&str] = &[
    "aws-global",
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// An STS endpoint URL and the region requests to it are signed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsEndpoint {
    /// Base URL requests are POSTed to.
    pub url: Url,
    /// Region in the SigV4 credential scope.
    pub signing_region: String,
}

impl StsEndpoint {
    /// Whether `region` can be a region name (`us-east-1`, `cn-north-1`, `local`): letters,
    /// digits, `-`, `_` and `.`, 1 to 64 of them.
    pub fn valid_region(region: &str) -> bool {
        (1..=64).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !region.starts_with(['.', '-'])
    }

    /// The AWS endpoint for `region`; `None` when `region` is not a region name.
    pub fn aws(region: &str, mode: RegionalEndpoints) -> Option<StsEndpoint> {
        if !Self::valid_region(region) {
            return None;
        }
        let global = region == "aws-global"
            || (mode == RegionalEndpoints::Legacy && LEGACY_GLOBAL_REGIONS.contains(&region));
        let (host, signing_region) = if global {
            ("sts.amazonaws.com".to_owned(), "us-east-1".to_owned())
        } else {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            (format!("sts.{region}.{suffix}"), region.to_owned())
        };
        Some(StsEndpoint {
            url: Url::parse(&format!("https://{host}/")).ok()?,
            signing_region,
        })
    }

    /// A custom endpoint (`endpoint_url`): Ceph RGW, MinIO, moto, LocalStack, a VPC endpoint.
    pub fn custom(url: Url, region: &str) -> StsEndpoint {
        StsEndpoint {
            url,
            signing_region: region.to_owned(),
        }
    }

    /// The `Host` header value requests to this endpoint carry (port only when not default).
    pub fn host_header(&self) -> String {
        super::query::host_header(&self.url)
    }
}

impl StsEndpoint {
    /// What a `SignatureDoesNotMatch` from this endpoint can mean, with what credvend can check
    /// said plainly: the clock (from the skew last measured), the region and URL signed for; what
    /// is left is the secret, or something re-encoding requests on the way.
    pub fn signature_diagnosis(&self) -> String {
        let clock = match super::clock_skew() {
            Some(s) if s.seconds.abs() > 300 => format!(
                "this machine's clock is {} s off STS's, more than SigV4's 5 minutes: correct the clock first",
                s.seconds.abs()
            ),
            Some(s) => format!("the clock is fine ({} s off STS's)", s.seconds.abs()),
            None => "the clock could not be compared with STS's".to_owned(),
        };
        format!(
            "STS knows the access key id but not the signature. Checked: {clock}; signed for region `{}` at {}. \
             So the secret is probably wrong, or the region or endpoint is not the one the key belongs to, \
             or something on the way (a proxy, an STS-compatible server) changes the request",
            self.signing_region, self.url
        )
    }
}

impl std::fmt::Display for StsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_and_legacy() {
        let aws = |r: &str, m| StsEndpoint::aws(r, m).unwrap();
        let e = aws("eu-west-1", RegionalEndpoints::Regional);
        assert_eq!(e.url.as_str(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(e.signing_region, "eu-west-1");
        let e = aws("eu-west-1", RegionalEndpoints::Legacy);
        assert_eq!(e.url.as_str(), "https://sts.amazonaws.com/");
        assert_eq!(e.signing_region, "us-east-1");
        let e = aws("ap-east-1", RegionalEndpoints::Legacy);
        assert_eq!(e.url.as_str(), "https://sts.ap-east-1.amazonaws.com/");
        let e = aws("cn-north-1", RegionalEndpoints::Regional);
        assert_eq!(e.url.as_str(), "https://sts.cn-north-1.amazonaws.com.cn/");
        let e = aws("aws-global", RegionalEndpoints::Regional);
        assert_eq!(e.url.as_str(), "https://sts.amazonaws.com/");
        for bad in ["us east 1", "", "a/b", "-x", "x\u{0}", "ü"] {
            assert!(
                StsEndpoint::aws(bad, RegionalEndpoints::Regional).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_header_keeps_non_default_port() {
        let e = StsEndpoint::custom(Url::parse("http://127.0.0.1:5000").unwrap(), "us-east-1");
        assert_eq!(e.host_header(), "127.0.0.1:5000");
        let e = StsEndpoint::custom(Url::parse("https://sts.example.com:443/").unwrap(), "x");
        assert_eq!(e.host_header(), "sts.example.com");
        let e = StsEndpoint::custom(Url::parse("http://[::1]:9000/").unwrap(), "x");
        assert_eq!(e.host_header(), "[::1]:9000");
    }

    #[test]
    fn mode_parses_case_insensitively() {
        assert_eq!("Legacy".parse(), Ok(RegionalEndpoints::Legacy));
        assert!("global".parse::<RegionalEndpoints>().is_err());
    }
}
