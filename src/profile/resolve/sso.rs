//! IAM Identity Center profiles: when a profile starts a chain with `GetRoleCredentials`, and the
//! [`SsoStep`] it resolves to. Pure, like the rest of resolution.
//!
//! The rules are botocore's (`botocore/credentials.py` `SSOProvider._load_sso_config` and
//! `_resolve_sso_session_reference`, `botocore/tokens.py` `SSOTokenProvider._load_sso_config`, in
//! the test venv's botocore 1.44):
//! - a profile is an SSO profile when it has `sso_account_id` or `sso_role_name`; then
//!   `sso_account_id`, `sso_role_name`, `sso_start_url` and `sso_region` are all required;
//! - `sso_session = NAME` must name an `[sso-session NAME]` section, which must hold
//!   `sso_start_url` and `sso_region` (the token provider reads them there); a key set both in the
//!   profile and in the section must have the same value;
//! - without `sso_session`, the legacy per-profile `sso_start_url` / `sso_region` are used, and the
//!   sign-in has no scopes (so no refresh token);
//! - `sso_registration_scopes` (in the section) is a comma-separated list.
//!
//! Endpoint variables and `[services]` keys use botocore's service ids snake-cased: service id
//! `SSO` is `AWS_ENDPOINT_URL_SSO` / `sso`, `SSO OIDC` is `AWS_ENDPOINT_URL_SSO_OIDC` / `sso_oidc`
//! (`botocore/configprovider.py` `EndpointConfigProvider`).

use reqwest::Url;

use super::{ErrorKind, ResolveError, Resolver, SsoStep, err};
use crate::profile::file::Section;
use crate::sso::{SsoEndpoints, SsoSession};

/// The keys only an SSO profile has.
const SSO_KEYS: [&str; 4] = [
    "sso_account_id",
    "sso_role_name",
    "sso_session",
    "sso_start_url",
];

/// A non-empty, trimmed value of `key` in `s`.
fn value<'s>(s: &'s Section, key: &str) -> Option<&'s str> {
    s.get(key).map(str::trim).filter(|v| !v.is_empty())
}

/// One of the two SSO services: its endpoint variable, its `[services]` key, and how the AWS
/// endpoint is found.
struct Service {
    env: &'static str,
    services_key: &'static str,
}

const PORTAL: Service = Service {
    env: "AWS_ENDPOINT_URL_SSO",
    services_key: "sso",
};

const OIDC: Service = Service {
    env: "AWS_ENDPOINT_URL_SSO_OIDC",
    services_key: "sso_oidc",
};

impl<'a> Resolver<'a> {
    /// Whether `p` starts its chain with IAM Identity Center (it has `sso_account_id` or
    /// `sso_role_name`, botocore's test). A profile with only `sso_session` / `sso_start_url` and
    /// no `credential_process` is a mistake worth naming rather than a profile with keys.
    pub(super) fn is_sso(&self, p: &Section) -> Result<bool, ResolveError> {
        if value(p, "sso_account_id").is_some() || value(p, "sso_role_name").is_some() {
            return Ok(true);
        }
        let partial = SSO_KEYS.iter().any(|k| value(p, k).is_some());
        if partial && value(p, "credential_process").is_none() {
            return Err(err(
                ErrorKind::Missing,
                format!(
                    "profile `{}` is configured for IAM Identity Center but is missing sso_account_id and sso_role_name (the account and the permission set's role to serve)",
                    p.name
                ),
            ));
        }
        Ok(false)
    }

    /// The `GetRoleCredentials` step of SSO profile `p`.
    pub(super) fn sso_step(&self, p: &'a Section) -> Result<SsoStep, ResolveError> {
        let section = match value(p, "sso_session") {
            Some(name) => Some(self.sso_section(p, name)?),
            None => None,
        };
        // With a session, its section holds the sign-in; legacy profiles hold it themselves.
        let signin = section.unwrap_or(p);
        let label = match section {
            Some(s) => format!("[sso-session {}]", s.name),
            None => format!("profile `{}`", p.name),
        };
        let merged = |key: &str| value(p, key).or_else(|| section.and_then(|s| value(s, key)));
        let mut missing: Vec<String> = ["sso_account_id", "sso_role_name"]
            .into_iter()
            .filter(|k| merged(k).is_none())
            .map(str::to_owned)
            .collect();
        for key in ["sso_start_url", "sso_region"] {
            if value(signin, key).is_none() {
                missing.push(match section {
                    Some(s) => format!("{key} (in [sso-session {}])", s.name),
                    None => key.to_owned(),
                });
            }
        }
        if !missing.is_empty() {
            return Err(err(
                ErrorKind::Missing,
                format!(
                    "profile `{}` is configured for IAM Identity Center but is missing required configuration: {}",
                    p.name,
                    missing.join(", ")
                ),
            ));
        }
        let get = |s: &Section, k: &str| value(s, k).unwrap_or_default().to_owned();
        let session = SsoSession {
            name: section.map(|s| s.name.clone()),
            start_url: start_url(signin, &label)?,
            region: get(signin, "sso_region"),
            registration_scopes: section
                .and_then(|s| value(s, "sso_registration_scopes"))
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let account_id = merged("sso_account_id").unwrap_or_default().to_owned();
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: sso_account_id = {account_id:?} is not a 12-digit AWS account id",
                    p.name
                ),
            ));
        }
        let endpoints = self.sso_endpoints(p, &label, &session.region)?;
        let ca_bundle = self
            .env
            .get("AWS_CA_BUNDLE")
            .or_else(|| self.setting(p, "ca_bundle"))
            .map(|b| self.env.expand(b));
        Ok(SsoStep {
            profile: p.name.clone(),
            session,
            account_id,
            role_name: merged("sso_role_name").unwrap_or_default().to_owned(),
            endpoints,
            ca_bundle,
        })
    }

    /// `[sso-session NAME]`, checked against the profile: a key in both must agree.
    fn sso_section(&self, p: &Section, name: &str) -> Result<&'a Section, ResolveError> {
        let section = self.set.sso_sessions.get(name).ok_or_else(|| {
            err(
                ErrorKind::Missing,
                format!(
                    "profile `{}`: sso_session = {name} names no [sso-session {name}] section in the AWS config",
                    p.name
                ),
            )
        })?;
        for key in section.properties.keys() {
            if let (Some(in_profile), Some(in_session)) = (value(p, key), value(section, key))
                && in_profile != in_session
            {
                return Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{}`: {key} = {in_profile} differs from {key} = {in_session} in [sso-session {name}]; remove it from the profile",
                        p.name
                    ),
                ));
            }
        }
        Ok(section)
    }

    /// Where the two services of profile `p` are: configured endpoints first, else AWS's in
    /// `region` (the sign-in's `sso_region`).
    fn sso_endpoints(
        &self,
        p: &'a Section,
        label: &str,
        region: &str,
    ) -> Result<SsoEndpoints, ResolveError> {
        let aws = SsoEndpoints::aws(region).ok_or_else(|| {
            err(
                ErrorKind::BadValue,
                format!("{label}: sso_region {region:?} is not a region name (e.g. us-east-1)"),
            )
        })?;
        let mut endpoints = aws;
        if let Some(url) = self.custom_endpoint(p, &PORTAL)? {
            endpoints = endpoints.with_portal(url);
        }
        if let Some(url) = self.custom_endpoint(p, &OIDC)? {
            endpoints = endpoints.with_oidc(url);
        }
        Ok(endpoints)
    }

    /// The configured endpoint of `service` for profile `p`, in the SDKs' order (see the module
    /// doc), or `None` for AWS's.
    fn custom_endpoint(
        &self,
        p: &'a Section,
        service: &Service,
    ) -> Result<Option<Url>, ResolveError> {
        let ignore = self
            .env
            .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .or_else(|| self.setting(p, "ignore_configured_endpoint_urls"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if ignore {
            return Ok(None);
        }
        // botocore reads the [services] section only when no endpoint variable is set.
        if self.env.get(service.env).is_none() && self.env.get("AWS_ENDPOINT_URL").is_none() {
            self.services_section_exists(p)?;
        }
        let services_url = || {
            let services = self.setting(p, "services")?;
            self.set
                .services
                .get(services)?
                .sub(service.services_key, "endpoint_url")
        };
        let found = self
            .env
            .get(service.env)
            .map(|u| (u, service.env.to_owned()))
            .or_else(|| {
                self.env
                    .get("AWS_ENDPOINT_URL")
                    .map(|u| (u, "AWS_ENDPOINT_URL".to_owned()))
            })
            .or_else(|| {
                services_url().map(|u| {
                    (
                        u,
                        format!(
                            "profile `{}`: [services] {} endpoint_url",
                            p.name, service.services_key
                        ),
                    )
                })
            })
            .or_else(|| {
                self.setting(p, "endpoint_url")
                    .map(|u| (u, format!("profile `{}`: endpoint_url", p.name)))
            });
        let Some((url, from)) = found else {
            return Ok(None);
        };
        Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .map(Some)
            .ok_or_else(|| {
                err(
                    ErrorKind::BadValue,
                    format!("{from} = {url:?} is not an http(s) URL"),
                )
            })
    }
}

/// `sso_start_url` of `s`, which must be an http(s) URL; `label` names `s` in the message.
fn start_url(s: &Section, label: &str) -> Result<String, ResolveError> {
    let v = value(s, "sso_start_url").unwrap_or_default();
    let ok = Url::parse(v)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
    if !ok {
        return Err(err(
            ErrorKind::BadValue,
            format!(
                "{label}: sso_start_url = {v:?} is not a URL (e.g. https://d-1234567890.awsapps.com/start)"
            ),
        ));
    }
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Chain, Env, Source, resolve};
    use super::*;
    use crate::profile::file::{FileKind, ProfileSet, merge, parse};

    fn set(config: &str) -> ProfileSet {
        merge(Some(parse(config, FileKind::Config).unwrap()), None)
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::other("no files"))
    }

    fn res(config: &str, name: &str, env: &[(&str, &str)]) -> Result<Chain, ResolveError> {
        resolve(&set(config), name, &Env::from_pairs(env), &no_files)
    }

    const SESSION: &str = "[sso-session corp]\nsso_start_url = https://d-1.awsapps.com/start\nsso_region = eu-west-1\n\
                           sso_registration_scopes = sso:account:access, other:scope\n";

    fn step(c: &Chain) -> &SsoStep {
        c.sso().unwrap_or_else(|| panic!("not an SSO chain: {c:?}"))
    }

    #[test]
    fn sso_session_profile() {
        let cfg = format!(
            "{SESSION}[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Developer\nregion = us-east-2\n"
        );
        let c = res(&cfg, "dev", &[]).unwrap();
        let s = step(&c);
        assert_eq!(s.session.name.as_deref(), Some("corp"));
        assert_eq!(s.session.start_url, "https://d-1.awsapps.com/start");
        assert_eq!(s.session.region, "eu-west-1");
        assert_eq!(
            s.session.registration_scopes,
            ["sso:account:access", "other:scope"]
        );
        assert_eq!(s.session.storage_key(), "corp");
        assert_eq!(
            (s.account_id.as_str(), s.role_name.as_str()),
            ("123456789012", "Developer")
        );
        assert_eq!(s.endpoints, SsoEndpoints::aws("eu-west-1").unwrap());
        assert_eq!(
            c.region, "us-east-2",
            "the served region is `region`, not sso_region"
        );
        assert_eq!(c.describe(), "sso-session:corp -> GetRoleCredentials(dev)");
        assert_eq!(c.profiles(), ["dev"]);
        assert_eq!(c.leaf_role_arn(), None);
        assert!(c.mfa_session().is_none());
    }

    #[test]
    fn legacy_profile() {
        let cfg = "[profile old]\nsso_start_url = https://d-2.awsapps.com/start\nsso_region = us-east-1\n\
                   sso_account_id = 123456789012\nsso_role_name = ReadOnly\n";
        let c = res(cfg, "old", &[]).unwrap();
        let s = step(&c);
        assert_eq!(s.session.name, None);
        assert!(s.session.registration_scopes.is_empty());
        assert_eq!(s.session.storage_key().len(), 40, "sha1 of the start URL");
        assert_eq!(
            c.describe(),
            "sso:https://d-2.awsapps.com/start -> GetRoleCredentials(old)"
        );
    }

    #[test]
    fn roles_chain_from_an_sso_profile_as_role_sessions() {
        let cfg = format!(
            "{SESSION}[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Developer\n\
             [profile admin]\nrole_arn = arn:aws:iam::123456789012:role/Admin\nsource_profile = dev\n\
             [profile long]\nrole_arn = arn:aws:iam::123456789012:role/Admin\nsource_profile = dev\nduration_seconds = 7200\n"
        );
        let c = res(&cfg, "admin", &[]).unwrap();
        let Source::Sso { step, roles } = &c.source else {
            panic!("{c:?}")
        };
        assert_eq!(step.profile, "dev");
        assert_eq!(roles.len(), 1);
        assert_eq!(
            c.describe(),
            "sso-session:corp -> GetRoleCredentials(dev) -> AssumeRole(admin)"
        );
        assert_eq!(c.profiles(), ["admin", "dev"]);
        assert_eq!(
            c.leaf_role_arn(),
            Some("arn:aws:iam::123456789012:role/Admin")
        );
        let e = res(&cfg, "long", &[]).unwrap_err();
        assert!(e.message.contains("role chaining"), "{e}");
    }

    #[test]
    fn sso_comes_before_credential_process() {
        let cfg = format!(
            "{SESSION}[profile both]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\ncredential_process = x\n\
             [profile token-only]\nsso_session = corp\ncredential_process = x\n"
        );
        assert!(res(&cfg, "both", &[]).unwrap().sso().is_some());
        assert!(matches!(
            res(&cfg, "token-only", &[]).unwrap().source,
            Source::Process { .. }
        ));
    }

    #[test]
    fn mistakes_are_named() {
        for (cfg, kind, needle) in [
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\nservices = locl\n[services local]\nsso =\n  endpoint_url = http://portal:2\n"),
                ErrorKind::BadValue,
                "services = locl names no [services locl] section (did you mean `local`?)",
            ),
            (
                "[profile p]\nsso_session = ghost\nsso_account_id = 123456789012\nsso_role_name = R\n".to_owned(),
                ErrorKind::Missing,
                "names no [sso-session ghost] section",
            ),
            (
                "[profile p]\nsso_session = corp\n[sso-session corp]\nsso_start_url = https://x/\nsso_region = us-east-1\n".to_owned(),
                ErrorKind::Missing,
                "missing sso_account_id and sso_role_name",
            ),
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 123456789012\n"),
                ErrorKind::Missing,
                "missing required configuration: sso_role_name",
            ),
            (
                "[sso-session corp]\nsso_start_url = https://x/\n[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\nsso_region = us-east-1\n".to_owned(),
                ErrorKind::Missing,
                "sso_region (in [sso-session corp])",
            ),
            (
                "[profile p]\nsso_account_id = 123456789012\nsso_role_name = R\n".to_owned(),
                ErrorKind::Missing,
                "missing required configuration: sso_start_url, sso_region",
            ),
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_start_url = https://other/\nsso_account_id = 123456789012\nsso_role_name = R\n"),
                ErrorKind::BadValue,
                "sso_start_url = https://other/ differs from sso_start_url = https://d-1.awsapps.com/start in [sso-session corp]",
            ),
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 1234\nsso_role_name = R\n"),
                ErrorKind::BadValue,
                "12-digit",
            ),
            (
                "[profile p]\nsso_start_url = d-1.awsapps.com\nsso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = R\n".to_owned(),
                ErrorKind::BadValue,
                "profile `p`: sso_start_url",
            ),
            (
                "[sso-session c]\nsso_start_url = https://x/\nsso_region = not a region\n[profile p]\nsso_session = c\nsso_account_id = 123456789012\nsso_role_name = R\n".to_owned(),
                ErrorKind::BadValue,
                "[sso-session c]: sso_region \"not a region\"",
            ),
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\nmfa_serial = arn:aws:iam::1:mfa/x\n"),
                ErrorKind::Unsupported,
                "mfa_serial",
            ),
            (
                format!("{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\ncredvend_policy = {{}}\n"),
                ErrorKind::BadValue,
                "credvend_policy",
            ),
        ] {
            let e = res(&cfg, "p", &[]).unwrap_err();
            assert_eq!(e.kind, kind, "{cfg:?}: {e}");
            assert!(e.message.contains(needle), "{cfg:?}: {e}");
            assert!(!e.message.contains('\n'));
        }
        // The same value in both places is fine (botocore compares values).
        let cfg = format!(
            "{SESSION}[profile p]\nsso_session = corp\nsso_region = eu-west-1\nsso_account_id = 123456789012\nsso_role_name = R\n"
        );
        assert!(res(&cfg, "p", &[]).is_ok());
    }

    #[test]
    fn endpoint_precedence() {
        let cfg = format!(
            "{SESSION}[profile p]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\n\
             services = local\nendpoint_url = http://global:1\n\
             [services local]\nsso =\n  endpoint_url = http://portal:2\nsso_oidc =\n  endpoint_url = http://oidc:3\n\
             [profile q]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\nendpoint_url = http://global:1\n\
             [profile r]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = R\nservices = hyphen\n\
             [services hyphen]\nsso-oidc =\n  endpoint_url = http://not-botocore:4\n"
        );
        let ep = |name: &str, env: &[(&str, &str)]| {
            let c = res(&cfg, name, env).unwrap();
            let e = &step(&c).endpoints;
            (e.portal.to_string(), e.oidc.to_string())
        };
        assert_eq!(
            ep("p", &[]),
            ("http://portal:2/".into(), "http://oidc:3/".into())
        );
        assert_eq!(
            ep("q", &[]),
            ("http://global:1/".into(), "http://global:1/".into())
        );
        assert_eq!(
            ep("r", &[]),
            (
                "https://portal.sso.eu-west-1.amazonaws.com/".into(),
                "https://oidc.eu-west-1.amazonaws.com/".into()
            ),
            "botocore's key is sso_oidc, not sso-oidc"
        );
        assert_eq!(
            ep("p", &[("AWS_ENDPOINT_URL", "http://env:5")]),
            ("http://env:5/".into(), "http://env:5/".into())
        );
        assert_eq!(
            ep(
                "p",
                &[
                    ("AWS_ENDPOINT_URL", "http://env:5"),
                    ("AWS_ENDPOINT_URL_SSO", "http://env-sso:6"),
                    ("AWS_ENDPOINT_URL_SSO_OIDC", "http://env-oidc:7")
                ]
            ),
            ("http://env-sso:6/".into(), "http://env-oidc:7/".into())
        );
        assert_eq!(
            ep("p", &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]),
            (
                "https://portal.sso.eu-west-1.amazonaws.com/".into(),
                "https://oidc.eu-west-1.amazonaws.com/".into()
            )
        );
        let e = res(&cfg, "p", &[("AWS_ENDPOINT_URL_SSO", "ftp://x")]).unwrap_err();
        assert!(e.message.contains("AWS_ENDPOINT_URL_SSO"), "{e}");
    }
}
