//! Turns a profile of the AWS config into a [`Chain`]: where its credentials start (keyring keys,
//! `credential_process`, a web identity token) and which STS calls lead from there to the
//! credentials served. Pure: the environment is passed in as [`Env`], and files (`file://`
//! policies, token files) are read through a reader the caller supplies, so every rule is unit
//! tested and every mistake is reported at load time with the profile and key named.
//!
//! Rules (the AWS SDKs' where they exist):
//! - `role_arn` + `source_profile` chains to any depth; a cycle is an error naming the profiles.
//!   `source_profile` naming the profile itself means "this profile's own keys".
//! - `role_arn` + `web_identity_token_file` starts a chain with `AssumeRoleWithWebIdentity`.
//! - `credential_process` starts a chain with that command's output.
//! - `sso_account_id` / `sso_role_name` (IAM Identity Center) start a chain with
//!   `GetRoleCredentials`, as botocore's `SSOProvider` decides (before `credential_process`): with
//!   `sso_session = NAME`, `sso_start_url`, `sso_region` and `sso_registration_scopes` come from
//!   `[sso-session NAME]` (a key set in both with different values is an error); without it, the
//!   legacy per-profile `sso_start_url` / `sso_region`. SSO endpoints, in the SDKs' order:
//!   `AWS_ENDPOINT_URL_SSO` (portal) / `AWS_ENDPOINT_URL_SSO_OIDC`, `AWS_ENDPOINT_URL`, the
//!   `[services]` section's `sso` / `sso_oidc` (botocore's snake-cased service ids), the profile's
//!   `endpoint_url`, else `portal.sso.REGION.amazonaws.com` / `oidc.REGION.amazonaws.com`.
//! - Otherwise the chain starts with long-term keys stored in the keyring under the profile name.
//! - `mfa_serial` anywhere in a chain that starts with keyring keys means one MFA-authenticated
//!   `GetSessionToken` at the start, and roles assumed from that session: the code is needed once
//!   per session (12 h by default) instead of once per role refresh.
//! - A profile with keyring keys and no role is served through `GetSessionToken` (long-term keys
//!   are never served); `credvend_federation_name` serves `GetFederationToken` instead.
//! - Durations: `GetSessionToken` 900..=129600 (default 43200), `AssumeRole` 900..=43200 (default
//!   3600, and at most 3600 when chained from role credentials), `GetFederationToken`
//!   900..=129600 (default 43200).
//! - Session tags, transitive tag keys and source identity (credvend's `credvend_*` keys or
//!   aws-vault's spellings) go with the `AssumeRole` of the profile that sets them, tags also
//!   with `GetFederationToken`; their syntax and STS's limits are in `resolve/tags.rs`.
//! - Endpoints, in the SDKs' order: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the profile's
//!   `[services]` section `sts = endpoint_url = …`, the profile's `endpoint_url`, else
//!   `sts.REGION.amazonaws.com` (or the global endpoint with `sts_regional_endpoints = legacy`).
//!   Each STS call uses the settings of the profile that defines it, falling back to the served
//!   profile's.

mod sso;
mod tags;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::file::{ProfileSet, Section};
use crate::sso::{SsoEndpoints, SsoSession};
use crate::sts::{RegionalEndpoints, StsEndpoint};

pub(crate) use tags::SessionTags;

/// Environment variables that affect resolution, captured once.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

const ENV_KEYS: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_SSO",
    "AWS_ENDPOINT_URL_SSO_OIDC",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CA_BUNDLE",
    "HOME",
];

impl Env {
    /// The relevant variables of this process.
    pub fn from_process() -> Env {
        Env {
            vars: ENV_KEYS
                .iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
                .collect(),
        }
    }

    /// An environment with exactly these variables (tests).
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn expand(&self, path: &str) -> PathBuf {
        match (path.strip_prefix("~/"), self.get("HOME")) {
            (Some(rest), Some(home)) => Path::new(home).join(rest),
            _ if path == "~" => self
                .get("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| path.into()),
            _ => PathBuf::from(path),
        }
    }
}

/// Where one STS call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsTarget {
    /// Endpoint and signing region.
    pub endpoint: StsEndpoint,
    /// PEM bundle replacing the system trust store.
    pub ca_bundle: Option<PathBuf>,
}

/// `AssumeRoleWithWebIdentity` with a token file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WebIdentityStep {
    /// Profile defining it.
    pub profile: String,
    /// Role to assume.
    pub role_arn: String,
    /// Token file (re-read at every refresh).
    pub token_file: PathBuf,
    /// Session name.
    pub session_name: String,
    /// Requested duration.
    pub duration: u32,
    /// Inline session policy.
    pub policy: Option<String>,
    /// Managed session policies.
    pub policy_arns: Vec<String>,
    /// Where to send it.
    pub target: StsTarget,
}

/// `GetRoleCredentials` with the access token of an IAM Identity Center sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SsoStep {
    /// Profile defining it (`sso_account_id`, `sso_role_name`).
    pub profile: String,
    /// The sign-in: `[sso-session NAME]`, or the legacy keys of the profile.
    pub session: SsoSession,
    /// `sso_account_id`.
    pub account_id: String,
    /// `sso_role_name`.
    pub role_name: String,
    /// Where the OIDC service and the portal are.
    pub endpoints: SsoEndpoints,
    /// PEM bundle replacing the system trust store.
    pub ca_bundle: Option<PathBuf>,
}

/// `GetSessionToken` on long-term keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionStep {
    /// Profile the keys belong to.
    pub profile: String,
    /// Requested duration.
    pub duration: u32,
    /// Where to send it.
    pub target: StsTarget,
}

/// The MFA device a session is authenticated with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MfaStep {
    /// The device (`mfa_serial`).
    pub serial: String,
    /// Command printing a code (`credvend_mfa_process`), when configured.
    pub process: Option<Vec<String>>,
}

/// An MFA-authenticated `GetSessionToken` from which roles are assumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MfaSession {
    /// The `GetSessionToken` call.
    pub session: SessionStep,
    /// Its device.
    pub mfa: MfaStep,
}

/// `GetFederationToken` on long-term keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FederationStep {
    /// Profile defining it.
    pub profile: String,
    /// Federated user name.
    pub name: String,
    /// Requested duration.
    pub duration: u32,
    /// Inline session policy.
    pub policy: Option<String>,
    /// Managed session policies.
    pub policy_arns: Vec<String>,
    /// Session tags of the federated user, `(key, value)` (`credvend_session_tags` or
    /// `session_tags`).
    pub tags: Vec<(String, String)>,
    /// Where to send it.
    pub target: StsTarget,
}

/// One `AssumeRole`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoleStep {
    /// Profile defining it.
    pub profile: String,
    /// Role to assume.
    pub role_arn: String,
    /// Session name.
    pub session_name: String,
    /// Requested duration.
    pub duration: u32,
    /// `external_id`.
    pub external_id: Option<String>,
    /// Inline session policy.
    pub policy: Option<String>,
    /// Managed session policies.
    pub policy_arns: Vec<String>,
    /// Session tags and which of them are transitive (`credvend_session_tags`,
    /// `credvend_transitive_session_tags`, or aws-vault's spellings).
    pub tags: SessionTags,
    /// `credvend_source_identity` (or `source_identity`).
    pub source_identity: Option<String>,
    /// Where to send it.
    pub target: StsTarget,
}

impl RoleStep {
    /// How `status` shows it: `AssumeRole(profile)`, with the tag keys and the source identity
    /// when set.
    fn describe(&self) -> String {
        let mut extras = vec![self.tags.describe()];
        if let Some(s) = &self.source_identity {
            extras.push(format!("source identity: {s}"));
        }
        describe_call("AssumeRole", &self.profile, &extras)
    }
}

/// `CALL(subject)` or `CALL(subject; extra; extra)`, empty extras left out.
fn describe_call(call: &str, subject: &str, extras: &[String]) -> String {
    let extras: Vec<&str> = extras
        .iter()
        .map(String::as_str)
        .filter(|e| !e.is_empty())
        .collect();
    if extras.is_empty() {
        format!("{call}({subject})")
    } else {
        format!("{call}({subject}; {})", extras.join("; "))
    }
}

/// Roles assumed in order: at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Roles {
    /// Assumed with the credentials the chain starts with.
    pub first: RoleStep,
    /// Each assumed with the credentials of the one before.
    pub rest: Vec<RoleStep>,
}

impl Roles {
    fn from_vec(mut roles: Vec<RoleStep>) -> Option<Roles> {
        if roles.is_empty() {
            return None;
        }
        let first = roles.remove(0);
        Some(Roles { first, rest: roles })
    }

    /// Every role, in the order they are assumed.
    pub fn iter(&self) -> impl Iterator<Item = &RoleStep> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }
}

/// What follows long-term keys in a chain. (Chains are built once per configuration load, so
/// the variants' sizes do not matter.)
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum FromKeys {
    /// A `GetSessionToken` session is served (MFA-authenticated when `mfa` is set). Long-term
    /// keys themselves are never served.
    Session {
        /// The call.
        session: SessionStep,
        /// Its device, when the session needs a code.
        mfa: Option<MfaStep>,
    },
    /// A `GetFederationToken` session is served.
    Federation(FederationStep),
    /// Roles are assumed, with the keys or with an MFA session minted from them.
    Roles {
        /// The MFA session the roles are assumed from, when the chain has an `mfa_serial`.
        mfa: Option<MfaSession>,
        /// The roles.
        roles: Roles,
    },
}

/// Where a chain starts, and what each start allows to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source {
    /// Long-term keys in the keyring, stored under profile `keys`.
    Keys {
        /// Profile whose keys are used.
        keys: String,
        /// What is minted from them.
        then: FromKeys,
    },
    /// The output of `credential_process` of `profile`: served as it is when it is a session,
    /// or the start of `roles`.
    Process {
        /// Profile defining it.
        profile: String,
        /// Program and arguments (split like a POSIX shell, run without one).
        command: Vec<String>,
        /// Roles assumed with its output (may be empty).
        roles: Vec<RoleStep>,
    },
    /// `AssumeRoleWithWebIdentity` with a token file, served as it is or the start of `roles`.
    WebIdentity {
        /// The call.
        step: Box<WebIdentityStep>,
        /// Roles assumed with its credentials (may be empty).
        roles: Vec<RoleStep>,
    },
    /// IAM Identity Center role credentials (`GetRoleCredentials`), served as they are or the
    /// start of `roles`.
    Sso {
        /// The call and the sign-in it needs.
        step: Box<SsoStep>,
        /// Roles assumed with its credentials (may be empty).
        roles: Vec<RoleStep>,
    },
}

/// Everything needed to mint one profile's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The served profile.
    pub profile: String,
    /// Its region (for `placement/region` and the identity document).
    pub region: String,
    /// Where the chain starts and what follows.
    pub source: Source,
    /// The ID of the consumer's session policy the last call carries (`scope.rs`), if any.
    pub scope: Option<String>,
}

impl Chain {
    /// The MFA session this chain needs, if any: the `GetSessionToken` call and its device.
    pub fn mfa_session(&self) -> Option<(&SessionStep, &MfaStep)> {
        match &self.source {
            Source::Keys {
                then:
                    FromKeys::Session {
                        session,
                        mfa: Some(mfa),
                    },
                ..
            } => Some((session, mfa)),
            Source::Keys {
                then: FromKeys::Roles { mfa: Some(m), .. },
                ..
            } => Some((&m.session, &m.mfa)),
            _ => None,
        }
    }

    /// The MFA device this chain needs a code for, if any.
    pub fn mfa_serial(&self) -> Option<&str> {
        self.mfa_session().map(|(_, m)| m.serial.as_str())
    }

    /// The IAM Identity Center step this chain starts with, if any.
    pub fn sso(&self) -> Option<&SsoStep> {
        match &self.source {
            Source::Sso { step, .. } => Some(step),
            _ => None,
        }
    }

    /// The profile whose keyring keys the chain starts with, if it starts with keys.
    pub fn key_profile(&self) -> Option<&str> {
        match &self.source {
            Source::Keys { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// The roles assumed after the start, in order (possibly none).
    pub fn roles(&self) -> Vec<&RoleStep> {
        match &self.source {
            Source::Keys {
                then: FromKeys::Roles { roles, .. },
                ..
            } => roles.iter().collect(),
            Source::Keys { .. } => Vec::new(),
            Source::Process { roles, .. }
            | Source::WebIdentity { roles, .. }
            | Source::Sso { roles, .. } => roles.iter().collect(),
        }
    }

    /// The configured role ARN of the served credentials, if they are a role's.
    pub fn leaf_role_arn(&self) -> Option<&str> {
        if let Some(r) = self.roles().last() {
            return Some(&r.role_arn);
        }
        match &self.source {
            Source::WebIdentity { step, .. } => Some(&step.role_arn),
            _ => None,
        }
    }

    /// A one-line description for `status`, e.g.
    /// `keyring:base -> GetSessionToken(MFA) -> AssumeRole(a) -> AssumeRole(b)`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.source {
            Source::Keys { keys, .. } => format!("keyring:{keys}"),
            Source::Process { profile, .. } => format!("credential_process:{profile}"),
            Source::WebIdentity { step, .. } => {
                format!("AssumeRoleWithWebIdentity:{}", step.profile)
            }
            Source::Sso { step, .. } => match &step.session.name {
                Some(name) => format!("sso-session:{name}"),
                None => format!("sso:{}", step.session.start_url),
            },
        }];
        match &self.source {
            Source::Keys {
                then: FromKeys::Session { mfa, .. },
                ..
            } => parts.push(if mfa.is_some() {
                "GetSessionToken(MFA)".into()
            } else {
                "GetSessionToken".into()
            }),
            Source::Keys {
                then: FromKeys::Federation(f),
                ..
            } => {
                let tags = SessionTags {
                    tags: f.tags.clone(),
                    transitive: Vec::new(),
                };
                parts.push(describe_call(
                    "GetFederationToken",
                    &f.name,
                    &[tags.describe()],
                ))
            }
            Source::Keys {
                then: FromKeys::Roles { mfa: Some(_), .. },
                ..
            } => parts.push("GetSessionToken(MFA)".into()),
            Source::Sso { step, .. } => parts.push(format!("GetRoleCredentials({})", step.profile)),
            _ => {}
        }
        parts.extend(self.roles().into_iter().map(RoleStep::describe));
        let mut text = parts.join(" -> ");
        if let Some(id) = &self.scope {
            text.push_str(&format!(" [scoped: session policy {id}]"));
        }
        text
    }

    /// This chain with a consumer's session policy (`policy`, `policy_arns`, the scope `id`) on
    /// its last call. Refused when that call takes no session policy, and when the profile
    /// already sets one (a second set would replace it, not narrow it).
    pub fn scoped(
        mut self,
        id: &str,
        policy: Option<String>,
        policy_arns: Vec<String>,
    ) -> Result<Chain, ResolveError> {
        let name = self.profile.clone();
        let slot: Option<(&mut Option<String>, &mut Vec<String>)> = match &mut self.source {
            Source::Keys {
                then: FromKeys::Federation(f),
                ..
            } => Some((&mut f.policy, &mut f.policy_arns)),
            Source::Keys {
                then: FromKeys::Roles { roles, .. },
                ..
            } => {
                let last = roles.rest.last_mut().unwrap_or(&mut roles.first);
                Some((&mut last.policy, &mut last.policy_arns))
            }
            Source::Process { roles, .. } | Source::Sso { roles, .. } => roles
                .last_mut()
                .map(|r| (&mut r.policy, &mut r.policy_arns)),
            Source::WebIdentity { step, roles } => Some(match roles.last_mut() {
                Some(r) => (&mut r.policy, &mut r.policy_arns),
                None => (&mut step.policy, &mut step.policy_arns),
            }),
            Source::Keys { .. } => None,
        };
        let Some((p, arns)) = slot else {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "profile `{name}` is not served by AssumeRole or GetFederationToken, which are the calls that take a \
                     session policy: scope a role or federation profile instead"
                ),
            ));
        };
        if p.is_some() || !arns.is_empty() {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{name}` already restricts its sessions with credvend_policy / credvend_policy_arns, and \
                     a second session policy would replace them rather than narrow them: put the policy in a profile \
                     of its own (source_profile = {name}'s source) instead"
                ),
            ));
        }
        *p = policy;
        *arns = policy_arns;
        self.scope = Some(id.to_owned());
        Ok(self)
    }

    /// Every profile the chain reads, served profile first.
    pub fn profiles(&self) -> Vec<&str> {
        let mut out = vec![self.profile.as_str()];
        for r in self.roles().into_iter().rev() {
            out.push(&r.profile);
        }
        out.push(match &self.source {
            Source::Keys { keys, .. } => keys,
            Source::Process { profile, .. } => profile,
            Source::WebIdentity { step, .. } => &step.profile,
            Source::Sso { step, .. } => &step.profile,
        });
        out.dedup();
        out
    }
}

/// What kind of configuration mistake (for tests and status codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A named profile does not exist.
    UnknownProfile,
    /// `source_profile` loops.
    Cycle,
    /// A key is missing (`role_arn` for web identity, `source_profile` for a role).
    Missing,
    /// A value is out of range or malformed.
    BadValue,
    /// A feature credvend does not support (`credential_source`).
    Unsupported,
    /// A referenced file cannot be read.
    File,
}

/// A profile that cannot be used, with a one-line message naming the profile and key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// Kind.
    pub kind: ErrorKind,
    /// One line, naming the profile, the key and the fix.
    pub message: String,
}

fn err(kind: ErrorKind, message: String) -> ResolveError {
    ResolveError { kind, message }
}

/// Reads a file named in the config (`file://` policies, token files).
pub type FileReader<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// Splits a `credential_process` value like a POSIX shell would (quotes and backslashes), without
/// expanding anything.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

struct Resolver<'a> {
    set: &'a ProfileSet,
    env: &'a Env,
    read: FileReader<'a>,
    /// The served profile, whose settings are the fallback for every step.
    leaf: &'a Section,
}

impl<'a> Resolver<'a> {
    fn source(&self, name: &str, from: &str) -> Result<&'a Section, ResolveError> {
        self.set.profiles.get(name).ok_or_else(|| {
            err(
                ErrorKind::UnknownProfile,
                format!("profile `{from}`: source_profile = {name} names a profile that is not defined in the AWS config"),
            )
        })
    }

    /// A setting of `p`, falling back to the served profile.
    /// Checks that the `[services NAME]` section profile `p`'s `services` names exists. As in
    /// botocore a missing one is an error, not a fall-back to another endpoint (which, for a
    /// local STS, would be AWS itself).
    fn services_section_exists(&self, p: &'a Section) -> Result<(), ResolveError> {
        match self.setting(p, "services") {
            Some(name) if !self.set.services.contains_key(name) => {
                let hint =
                    super::check::suggest(name, self.set.services.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{}`: services = {name} names no [services {name}] section{hint}: add the section or fix the name",
                        p.name
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn setting(&self, p: &'a Section, key: &str) -> Option<&'a str> {
        p.get(key)
            .or_else(|| self.leaf.get(key))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn region(&self, p: &Section) -> String {
        self.env
            .get("AWS_REGION")
            .or_else(|| self.env.get("AWS_DEFAULT_REGION"))
            .map(str::to_owned)
            .or_else(|| {
                p.get("region")
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
            })
            .or_else(|| {
                self.leaf
                    .get("region")
                    .map(|r| r.trim().to_owned())
                    .filter(|r| !r.is_empty())
            })
            .unwrap_or_else(|| "us-east-1".into())
    }

    fn target(&self, p: &'a Section) -> Result<StsTarget, ResolveError> {
        let region = self.region(p);
        if !StsEndpoint::valid_region(&region) {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: region {region:?} is not a region name (e.g. us-east-1)",
                    p.name
                ),
            ));
        }
        let ignore = self
            .env
            .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .or_else(|| self.setting(p, "ignore_configured_endpoint_urls"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // botocore reads the [services] section only when no endpoint variable is set.
        if !ignore
            && self.env.get("AWS_ENDPOINT_URL_STS").is_none()
            && self.env.get("AWS_ENDPOINT_URL").is_none()
        {
            self.services_section_exists(p)?;
        }
        let services_url = || {
            let services = self.setting(p, "services")?;
            self.set.services.get(services)?.sub("sts", "endpoint_url")
        };
        let custom = if ignore {
            None
        } else {
            self.env
                .get("AWS_ENDPOINT_URL_STS")
                .map(|u| (u, "AWS_ENDPOINT_URL_STS".to_owned()))
                .or_else(|| {
                    self.env
                        .get("AWS_ENDPOINT_URL")
                        .map(|u| (u, "AWS_ENDPOINT_URL".to_owned()))
                })
                .or_else(|| {
                    services_url().map(|u| {
                        (
                            u,
                            format!("profile `{}`: [services] sts endpoint_url", p.name),
                        )
                    })
                })
                .or_else(|| {
                    self.setting(p, "endpoint_url")
                        .map(|u| (u, format!("profile `{}`: endpoint_url", p.name)))
                })
        };
        let endpoint = match custom {
            Some((url, from)) => {
                let parsed = reqwest::Url::parse(url.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| {
                        err(
                            ErrorKind::BadValue,
                            format!("{from} = {url:?} is not an http(s) URL"),
                        )
                    })?;
                StsEndpoint::custom(parsed, &region)
            }
            None => {
                let mode = match self
                    .env
                    .get("AWS_STS_REGIONAL_ENDPOINTS")
                    .or_else(|| self.setting(p, "sts_regional_endpoints"))
                {
                    None => RegionalEndpoints::default(),
                    Some(v) => v.parse().map_err(|e: String| {
                        err(ErrorKind::BadValue, format!("profile `{}`: {e}", p.name))
                    })?,
                };
                StsEndpoint::aws(&region, mode).expect("region validated above")
            }
        };
        let ca_bundle = self
            .env
            .get("AWS_CA_BUNDLE")
            .or_else(|| self.setting(p, "ca_bundle"))
            .map(|b| self.env.expand(b));
        Ok(StsTarget {
            endpoint,
            ca_bundle,
        })
    }

    fn duration(
        &self,
        p: &Section,
        key: &str,
        default: u32,
        range: (u32, u32),
        why: &str,
    ) -> Result<u32, ResolveError> {
        match p.get(key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(default.clamp(range.0, range.1)),
            Some(v) => {
                let n: u32 = v.parse().map_err(|_| {
                    err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: {key} = {v:?} is not a number of seconds",
                            p.name
                        ),
                    )
                })?;
                if n < range.0 || n > range.1 {
                    return Err(err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: {key} = {n} is outside {}..={} seconds {why}",
                            p.name, range.0, range.1
                        ),
                    ));
                }
                Ok(n)
            }
        }
    }

    fn policy(&self, p: &Section) -> Result<(Option<String>, Vec<String>), ResolveError> {
        let policy = match p
            .get("credvend_policy")
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => None,
            Some(v) => {
                let text = match v.strip_prefix("file://") {
                    Some(path) => {
                        let path = self.env.expand(path);
                        (self.read)(&path).map_err(|e| {
                            err(
                                ErrorKind::File,
                                format!(
                                    "profile `{}`: credvend_policy file {} cannot be read: {e}",
                                    p.name,
                                    path.display()
                                ),
                            )
                        })?
                    }
                    None => v.to_owned(),
                };
                if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                    return Err(err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: credvend_policy is not a JSON policy document",
                            p.name
                        ),
                    ));
                }
                Some(text)
            }
        };
        let arns = p
            .get("credvend_policy_arns")
            .map(|v| {
                v.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for arn in &arns {
            if !arn.starts_with("arn:") {
                return Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{}`: credvend_policy_arns entry {arn:?} is not an ARN",
                        p.name
                    ),
                ));
            }
        }
        Ok((policy, arns))
    }

    fn session_name(&self, p: &Section) -> Result<String, ResolveError> {
        match p
            .get("role_session_name")
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            Some(v) => {
                let ok = (2..=64).contains(&v.len())
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
                if !ok {
                    return Err(err(
                        ErrorKind::BadValue,
                        format!(
                            "profile `{}`: role_session_name {v:?} must be 2-64 characters of letters, digits and _+=,.@-",
                            p.name
                        ),
                    ));
                }
                Ok(v.to_owned())
            }
            None => {
                let mut name: String = format!("credvend-{}", p.name)
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                name.truncate(64);
                Ok(name)
            }
        }
    }

    fn role_step(&self, p: &'a Section, chained: bool) -> Result<RoleStep, ResolveError> {
        let (policy, policy_arns) = self.policy(p)?;
        let max = if chained { 3600 } else { 43200 };
        let why = if chained {
            "(role chaining: this role is assumed with another role's credentials, which STS caps at 1 hour)"
        } else {
            "(AssumeRole limits)"
        };
        Ok(RoleStep {
            profile: p.name.clone(),
            role_arn: self.arn(p, "role_arn")?,
            session_name: self.session_name(p)?,
            duration: self.duration(p, "duration_seconds", 3600, (900, max), why)?,
            external_id: p
                .get("external_id")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
            policy,
            policy_arns,
            tags: self.session_tags(p)?,
            source_identity: self.source_identity(p)?,
            target: self.target(p)?,
        })
    }

    fn arn(&self, p: &Section, key: &str) -> Result<String, ResolveError> {
        let v = p.get(key).map(str::trim).unwrap_or_default();
        if !v.starts_with("arn:") || v.split(':').count() < 6 {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: {key} = {v:?} is not an ARN (e.g. arn:aws:iam::123456789012:role/Name)",
                    p.name
                ),
            ));
        }
        Ok(v.to_owned())
    }

    fn reject_unsupported(&self, p: &Section) -> Result<(), ResolveError> {
        if p.get("credential_source").is_some() {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "profile `{}`: credential_source is not supported by credvend; use source_profile (keys in the keyring) instead",
                    p.name
                ),
            ));
        }
        Ok(())
    }

    fn command(&self, p: &Section, key: &str) -> Result<Vec<String>, ResolveError> {
        let v = p.get(key).unwrap_or_default();
        let argv = split_command(v).map_err(|e| {
            err(
                ErrorKind::BadValue,
                format!(
                    "profile `{}`: {key} cannot be split into a command: {e}",
                    p.name
                ),
            )
        })?;
        if argv.is_empty() {
            return Err(err(
                ErrorKind::BadValue,
                format!("profile `{}`: {key} is empty", p.name),
            ));
        }
        Ok(argv)
    }

    fn resolve(&self, name: &str) -> Result<Chain, ResolveError> {
        let leaf = self.leaf;
        let mut visited: Vec<&str> = vec![name];
        let mut role_profiles: Vec<&'a Section> = Vec::new();
        let mut cur = leaf;
        let base_section;
        let mut base_kind = BaseKind::Keyring;
        loop {
            self.reject_unsupported(cur)?;
            let has_role = cur.get("role_arn").is_some_and(|v| !v.trim().is_empty());
            let web = cur
                .get("web_identity_token_file")
                .is_some_and(|v| !v.trim().is_empty());
            if has_role {
                if web {
                    base_section = cur;
                    base_kind = BaseKind::WebIdentity;
                    break;
                }
                role_profiles.push(cur);
                let Some(source) = cur
                    .get("source_profile")
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                else {
                    return Err(err(
                        ErrorKind::Missing,
                        format!(
                            "profile `{}`: role_arn needs source_profile (the profile whose credentials assume the role), or web_identity_token_file",
                            cur.name
                        ),
                    ));
                };
                if source == cur.name {
                    base_section = cur;
                    break;
                }
                if let Some(pos) = visited.iter().position(|v| *v == source) {
                    let mut cycle: Vec<&str> = visited[pos..].to_vec();
                    cycle.push(source);
                    return Err(err(
                        ErrorKind::Cycle,
                        format!(
                            "source_profile loop: {} (break the cycle in the AWS config)",
                            cycle.join(" -> ")
                        ),
                    ));
                }
                let next = self.source(source, &cur.name)?;
                visited.push(source);
                cur = next;
                continue;
            }
            if web {
                return Err(err(
                    ErrorKind::Missing,
                    format!(
                        "profile `{}`: web_identity_token_file needs role_arn (the role to assume with the token)",
                        cur.name
                    ),
                ));
            }
            if self.is_sso(cur)? {
                base_kind = BaseKind::Sso;
            } else if cur
                .get("credential_process")
                .is_some_and(|v| !v.trim().is_empty())
            {
                base_kind = BaseKind::Process;
            }
            base_section = cur;
            break;
        }
        role_profiles.reverse();
        let roles = self.roles(&role_profiles, base_kind)?;
        let source = match base_kind {
            BaseKind::Keyring => self.keys_source(name, base_section, &role_profiles, roles)?,
            BaseKind::Process => {
                self.no_mfa_or_federation(
                    name,
                    base_section,
                    &role_profiles,
                    "credential_process",
                )?;
                Source::Process {
                    profile: base_section.name.clone(),
                    command: self.command(base_section, "credential_process")?,
                    roles,
                }
            }
            BaseKind::WebIdentity => {
                self.no_mfa_or_federation(
                    name,
                    base_section,
                    &role_profiles,
                    "a web identity token",
                )?;
                Source::WebIdentity {
                    step: Box::new(self.web_identity(base_section)?),
                    roles,
                }
            }
            BaseKind::Sso => {
                self.no_mfa_or_federation(
                    name,
                    base_section,
                    &role_profiles,
                    "an IAM Identity Center sign-in",
                )?;
                Source::Sso {
                    step: Box::new(self.sso_step(base_section)?),
                    roles,
                }
            }
        };
        let has_policy =
            leaf.get("credvend_policy").is_some() || leaf.get("credvend_policy_arns").is_some();
        let restrictable = match &source {
            Source::Keys { then, .. } => !matches!(then, FromKeys::Session { .. }),
            Source::Process { roles, .. } | Source::Sso { roles, .. } => !roles.is_empty(),
            Source::WebIdentity { .. } => true,
        };
        if has_policy && !restrictable {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{name}`: credvend_policy / credvend_policy_arns restrict role and federation sessions; \
                     add role_arn or credvend_federation_name, or remove them"
                ),
            ));
        }
        Ok(Chain {
            profile: name.to_owned(),
            region: self.region(leaf),
            source,
            scope: None,
        })
    }

    /// The roles of the chain, in the order they are assumed. The first is chained when the
    /// chain starts with a role session (web identity, IAM Identity Center).
    fn roles(
        &self,
        profiles: &[&'a Section],
        base: BaseKind,
    ) -> Result<Vec<RoleStep>, ResolveError> {
        let role_session = matches!(base, BaseKind::WebIdentity | BaseKind::Sso);
        let roles = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| self.role_step(p, i > 0 || role_session))
            .collect::<Result<Vec<_>, _>>()?;
        let tagged: Vec<_> = profiles
            .iter()
            .zip(&roles)
            .map(|(p, r)| (*p, &r.tags, r.source_identity.as_deref()))
            .collect();
        self.chain_keeps_inherited(&tagged)?;
        Ok(roles)
    }

    /// The first profile of the chain (base first) with an `mfa_serial`.
    fn mfa_profile(&self, base: &'a Section, roles: &[&'a Section]) -> Option<&'a Section> {
        std::iter::once(base)
            .chain(roles.iter().copied())
            .find(|p| p.get("mfa_serial").is_some_and(|v| !v.trim().is_empty()))
    }

    /// Chains that do not start with keyring keys cannot use MFA or federation.
    fn no_mfa_or_federation(
        &self,
        name: &str,
        base: &'a Section,
        roles: &[&'a Section],
        starts_with: &str,
    ) -> Result<(), ResolveError> {
        if let Some(p) = self.mfa_profile(base, roles) {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "profile `{}`: mfa_serial is supported only in chains that start with keys in the keyring (here they start with {starts_with})",
                    p.name
                ),
            ));
        }
        if self.leaf.get("credvend_federation_name").is_some() {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{name}`: credvend_federation_name needs keys in the keyring (here the chain starts with {starts_with}); remove it"
                ),
            ));
        }
        Ok(())
    }

    fn web_identity(&self, base: &'a Section) -> Result<WebIdentityStep, ResolveError> {
        let file = base
            .get("web_identity_token_file")
            .unwrap_or_default()
            .trim();
        let token_file = self.env.expand(file);
        (self.read)(&token_file).map_err(|e| {
            err(
                ErrorKind::File,
                format!(
                    "profile `{}`: web_identity_token_file {} cannot be read: {e}",
                    base.name,
                    token_file.display()
                ),
            )
        })?;
        let (policy, policy_arns) = self.policy(base)?;
        Ok(WebIdentityStep {
            profile: base.name.clone(),
            role_arn: self.arn(base, "role_arn")?,
            token_file,
            session_name: self.session_name(base)?,
            duration: self.duration(
                base,
                "duration_seconds",
                3600,
                (900, 43200),
                "(AssumeRoleWithWebIdentity limits)",
            )?,
            policy,
            policy_arns,
            target: self.target(base)?,
        })
    }

    /// `GetSessionToken` on the keys of `base`. Its length is a property of `base` alone, so an
    /// MFA session shared by several chains lasts as long whichever of them asked for it:
    /// `credvend_session_duration_seconds`, else `duration_seconds` when `base` is not itself a
    /// role profile, else 12 hours.
    fn session_step(&self, base: &'a Section) -> Result<SessionStep, ResolveError> {
        let own = |key| base.get(key).is_some_and(|v| !v.trim().is_empty());
        let key = if own("credvend_session_duration_seconds") || own("role_arn") {
            "credvend_session_duration_seconds"
        } else {
            "duration_seconds"
        };
        Ok(SessionStep {
            profile: base.name.clone(),
            duration: self.duration(
                base,
                key,
                43200,
                (900, 129_600),
                "(GetSessionToken limits)",
            )?,
            target: self.target(base)?,
        })
    }

    fn mfa_step(&self, mfa_profile: &'a Section) -> Result<MfaStep, ResolveError> {
        let process = match mfa_profile.get("credvend_mfa_process") {
            Some(_) => Some(self.command(mfa_profile, "credvend_mfa_process")?),
            None => self
                .leaf
                .get("credvend_mfa_process")
                .map(|_| self.command(self.leaf, "credvend_mfa_process"))
                .transpose()?,
        };
        Ok(MfaStep {
            serial: mfa_profile
                .get("mfa_serial")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            process,
        })
    }

    fn keys_source(
        &self,
        name: &str,
        base: &'a Section,
        role_profiles: &[&'a Section],
        roles: Vec<RoleStep>,
    ) -> Result<Source, ResolveError> {
        let leaf = self.leaf;
        let mfa_profile = self.mfa_profile(base, role_profiles);
        let mfa = mfa_profile.map(|p| self.mfa_step(p)).transpose()?;
        let federation_name = leaf
            .get("credvend_federation_name")
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let then = match (federation_name, Roles::from_vec(roles)) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{name}`: credvend_federation_name cannot be combined with role_arn (federated users cannot assume roles)"
                    ),
                ));
            }
            (Some(_), None) if mfa.is_some() => {
                return Err(err(
                    ErrorKind::BadValue,
                    format!(
                        "profile `{name}`: credvend_federation_name cannot be combined with mfa_serial (GetFederationToken takes no MFA)"
                    ),
                ));
            }
            (Some(fed), None) => FromKeys::Federation(self.federation(name, fed)?),
            (None, Some(roles)) => FromKeys::Roles {
                mfa: match mfa {
                    Some(mfa) => Some(MfaSession {
                        session: self.session_step(base)?,
                        mfa,
                    }),
                    None => None,
                },
                roles,
            },
            (None, None) => FromKeys::Session {
                session: self.session_step(base)?,
                mfa,
            },
        };
        Ok(Source::Keys {
            keys: base.name.clone(),
            then,
        })
    }

    fn federation(&self, name: &str, fed: &str) -> Result<FederationStep, ResolveError> {
        let leaf = self.leaf;
        if !(2..=32).contains(&fed.len())
            || !fed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "profile `{name}`: credvend_federation_name {fed:?} must be 2-32 characters of letters, digits and _+=,.@-"
                ),
            ));
        }
        let (policy, policy_arns) = self.policy(leaf)?;
        let tags = self.federation_tags(leaf)?;
        Ok(FederationStep {
            profile: name.to_owned(),
            name: fed.to_owned(),
            duration: self.duration(
                leaf,
                "duration_seconds",
                43200,
                (900, 129_600),
                "(GetFederationToken limits)",
            )?,
            policy,
            policy_arns,
            tags,
            target: self.target(leaf)?,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BaseKind {
    Keyring,
    Process,
    WebIdentity,
    Sso,
}

/// Resolves profile `name` of `set`.
pub fn resolve(
    set: &ProfileSet,
    name: &str,
    env: &Env,
    read: FileReader<'_>,
) -> Result<Chain, ResolveError> {
    let Some(leaf) = set.profiles.get(name) else {
        return Err(unknown_profile(set, name));
    };
    Resolver {
        set,
        env,
        read,
        leaf,
    }
    .resolve(name)
    .map_err(|e| locate(set, e))
}

/// Prefixes an error about `profile `P`: KEY ...` with the file and line KEY is on, so a broken
/// configuration names the line to fix. (Every message about a key follows that shape.)
fn locate(set: &ProfileSet, mut e: ResolveError) -> ResolveError {
    let origin = (|| {
        let rest = e.message.strip_prefix("profile `")?;
        let (profile, rest) = rest.split_once("`: ")?;
        let key: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        set.profiles.get(profile)?.origin(&key)
    })();
    if let Some(o) = origin {
        e.message = format!("{o}: {}", e.message);
    }
    e
}

fn unknown_profile(set: &ProfileSet, name: &str) -> ResolveError {
    let names = set.profiles.keys().map(String::as_str);
    let message = match super::check::suggest(name, names) {
        Some(s) => format!(
            "profile `{name}` is not defined in the AWS config: did you mean `{s}`? (or add a [profile {name}] section; check AWS_CONFIG_FILE)"
        ),
        None => format!(
            "profile `{name}` is not defined in the AWS config (add a [profile {name}] section, or check AWS_CONFIG_FILE)"
        ),
    };
    err(ErrorKind::UnknownProfile, message)
}

/// Where a call signed with the keys stored for `profile` goes: the STS endpoint, signing region
/// and trust settings of the profile itself (its `region`, `endpoint_url`, `[services]`,
/// `ca_bundle`, and the environment), whatever else the profile says. `None` when the profile is
/// not in the AWS config.
pub(crate) fn key_target(
    set: &ProfileSet,
    profile: &str,
    env: &Env,
) -> Option<Result<StsTarget, ResolveError>> {
    let leaf = set.profiles.get(profile)?;
    let no_files = |_: &Path| Err(std::io::Error::other("not read"));
    Some(
        Resolver {
            set,
            env,
            read: &no_files,
            leaf,
        }
        .target(leaf),
    )
}

/// Reads files from disk (the production [`FileReader`]).
pub fn read_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::file::{FileKind, merge, parse};

    fn set(config: &str) -> ProfileSet {
        merge(Some(parse(config, FileKind::Config).unwrap()), None)
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory",
        ))
    }

    impl Chain {
        fn session_target(&self) -> Option<StsTarget> {
            match &self.source {
                Source::Keys {
                    then: FromKeys::Session { session, .. },
                    ..
                } => Some(session.target.clone()),
                _ => None,
            }
        }
    }

    fn res(config: &str, name: &str) -> Result<Chain, ResolveError> {
        resolve(&set(config), name, &Env::default(), &no_files)
    }

    #[test]
    fn keyring_profile_is_served_through_get_session_token() {
        let c = res("[profile base]\nregion = eu-west-1\n", "base").unwrap();
        let Source::Keys {
            keys,
            then: FromKeys::Session { session: s, mfa },
        } = &c.source
        else {
            panic!("{c:?}")
        };
        assert_eq!(keys, "base");
        assert_eq!(s.duration, 43200);
        assert_eq!(mfa, &None);
        assert_eq!(
            s.target.endpoint.url.as_str(),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert!(c.roles().is_empty());
        assert_eq!(c.region, "eu-west-1");
    }

    #[test]
    fn three_link_chain_in_order() {
        let cfg = "[profile user]\n[profile a]\nrole_arn = arn:aws:iam::123456789012:role/a\nsource_profile = user\n\
                   [profile b]\nrole_arn = arn:aws:iam::123456789012:role/b\nsource_profile = a\nexternal_id = ext\n";
        let c = res(cfg, "b").unwrap();
        assert_eq!(c.key_profile(), Some("user"));
        assert_eq!(
            c.mfa_session(),
            None,
            "no MFA: roles are assumed with the keys directly"
        );
        let roles = c.roles();
        let names: Vec<_> = roles.iter().map(|r| r.profile.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(roles[1].external_id.as_deref(), Some("ext"));
        assert_eq!(roles[0].duration, 3600);
        assert_eq!(
            c.describe(),
            "keyring:user -> AssumeRole(a) -> AssumeRole(b)"
        );
        assert_eq!(c.leaf_role_arn(), Some("arn:aws:iam::123456789012:role/b"));
    }

    #[test]
    fn chained_role_duration_over_an_hour_is_rejected() {
        let cfg = "[profile user]\n[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = user\nduration_seconds = 7200\n\
                   [profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = a\nduration_seconds = 7200\n";
        assert!(res(cfg, "a").is_ok(), "the first role may last 2 h");
        let e = res(cfg, "b").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadValue);
        assert!(
            e.message.contains("profile `b`: duration_seconds = 7200"),
            "{e}"
        );
        assert!(e.message.contains("role chaining"), "{e}");
    }

    #[test]
    fn cycles_name_every_profile() {
        let cfg = "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n\
                   [profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = c\n\
                   [profile c]\nrole_arn = arn:aws:iam::1:role/c\nsource_profile = a\n";
        let e = res(cfg, "a").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Cycle);
        assert!(e.message.contains("a -> b -> c -> a"), "{e}");
    }

    #[test]
    fn self_reference_means_own_keys() {
        let cfg = "[profile me]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = me\n";
        let c = res(cfg, "me").unwrap();
        assert_eq!(c.key_profile(), Some("me"));
        assert_eq!(c.roles().len(), 1);
    }

    #[test]
    fn mfa_anywhere_means_one_mfa_session_at_the_base() {
        let cfg = "[profile user]\n[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = user\nmfa_serial = arn:aws:iam::1:mfa/u\n";
        let c = res(cfg, "a").unwrap();
        let (s, mfa) = c.mfa_session().unwrap();
        assert_eq!(s.profile, "user");
        assert_eq!(mfa.serial, "arn:aws:iam::1:mfa/u");
        assert_eq!(s.duration, 43200);
        assert_eq!(c.mfa_serial(), Some("arn:aws:iam::1:mfa/u"));
        assert_eq!(
            c.describe(),
            "keyring:user -> GetSessionToken(MFA) -> AssumeRole(a)"
        );
    }

    #[test]
    fn mistakes_have_one_clear_message_each() {
        for (cfg, name, kind, needle) in [
            (
                "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = ghost\n",
                "a",
                ErrorKind::UnknownProfile,
                "source_profile = ghost",
            ),
            (
                "[profile a]\n",
                "nope",
                ErrorKind::UnknownProfile,
                "profile `nope` is not defined",
            ),
            (
                "[profile w]\nweb_identity_token_file = /t\n",
                "w",
                ErrorKind::Missing,
                "needs role_arn",
            ),
            (
                "[profile w]\nweb_identity_token_file = /nonexistent/token\nrole_arn = arn:aws:iam::1:role/w\n",
                "w",
                ErrorKind::File,
                "/nonexistent/token cannot be read",
            ),
            (
                "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n",
                "a",
                ErrorKind::Missing,
                "needs source_profile",
            ),
            (
                "[profile a]\nduration_seconds = 100\n",
                "a",
                ErrorKind::BadValue,
                "duration_seconds = 100 is outside 900..=129600",
            ),
            (
                "[profile a]\nduration_seconds = soon\n",
                "a",
                ErrorKind::BadValue,
                "not a number",
            ),
            (
                "[profile a]\nrole_arn = nope\nsource_profile = a\n",
                "a",
                ErrorKind::BadValue,
                "not an ARN",
            ),
            (
                "[profile a]\ncredential_source = Environment\n",
                "a",
                ErrorKind::Unsupported,
                "credential_source",
            ),
            (
                "[profile a]\nsso_session = x\n",
                "a",
                ErrorKind::Missing,
                "sso_account_id and sso_role_name",
            ),
            (
                "[profile a]\ncredential_process = 'unterminated\n",
                "a",
                ErrorKind::BadValue,
                "unterminated",
            ),
            (
                "[profile a]\nendpoint_url = ftp://x\n",
                "a",
                ErrorKind::BadValue,
                "endpoint_url",
            ),
            (
                "[profile a]\nsts_regional_endpoints = global\n",
                "a",
                ErrorKind::BadValue,
                "regional",
            ),
            (
                "[profile a]\ncredvend_policy = {nope\n",
                "a",
                ErrorKind::BadValue,
                "credvend_policy",
            ),
            (
                "[profile a]\ncredvend_federation_name = x\n",
                "a",
                ErrorKind::BadValue,
                "2-32",
            ),
            (
                "[profile p]\ncredential_process = x\n[profile r]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = p\nmfa_serial = m\n",
                "r",
                ErrorKind::Unsupported,
                "mfa_serial",
            ),
        ] {
            let e = res(cfg, name).unwrap_err();
            assert_eq!(e.kind, kind, "{cfg:?}: {e}");
            assert!(e.message.contains(needle), "{cfg:?}: {e}");
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn a_services_name_without_its_section_is_an_error_with_a_suggestion() {
        let cfg = "[profile a]\nregion = eu-west-2\nservices = locl\n\
                   [services local]\nsts =\n  endpoint_url = http://services:2\n";
        let e = res(cfg, "a").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadValue);
        assert!(
            e.message.contains(
                "services = locl names no [services locl] section (did you mean `local`?)"
            ),
            "{e}"
        );
        for env in [
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ("AWS_ENDPOINT_URL_STS", "http://env:1"),
            ("AWS_ENDPOINT_URL", "http://env:2"),
        ] {
            // As botocore, which does not read the section then.
            assert!(resolve(&set(cfg), "a", &Env::from_pairs(&[env]), &no_files).is_ok());
        }
    }

    #[test]
    fn errors_about_a_key_name_its_line() {
        let e = res(
            "[profile a]\nregion = us-east-1\n\nduration_seconds = soon\n",
            "a",
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("config file line 4: profile `a`: duration_seconds"),
            "{e}"
        );
        let e = res("[profile dev]\n", "dve").unwrap_err();
        assert!(e.message.contains("did you mean `dev`?"), "{e}");
    }

    #[test]
    fn endpoint_precedence() {
        let cfg = "[profile a]\nregion = eu-west-2\nendpoint_url = http://profile:1\nservices = local\n\
                   [services local]\nsts =\n  endpoint_url = http://services:2\n[profile b]\nendpoint_url = http://profile-b:3\n";
        let s = set(cfg);
        let url = |name: &str, env: &[(&str, &str)]| {
            resolve(&s, name, &Env::from_pairs(env), &no_files)
                .unwrap()
                .session_target()
                .unwrap()
                .endpoint
                .url
                .to_string()
        };
        assert_eq!(url("a", &[]), "http://services:2/");
        assert_eq!(url("b", &[]), "http://profile-b:3/");
        assert_eq!(
            url("a", &[("AWS_ENDPOINT_URL", "http://env:4")]),
            "http://env:4/"
        );
        assert_eq!(
            url(
                "a",
                &[
                    ("AWS_ENDPOINT_URL", "http://env:4"),
                    ("AWS_ENDPOINT_URL_STS", "http://env-sts:5")
                ]
            ),
            "http://env-sts:5/"
        );
        assert_eq!(
            url("a", &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]),
            "https://sts.eu-west-2.amazonaws.com/"
        );
        let c = resolve(
            &s,
            "a",
            &Env::from_pairs(&[("AWS_REGION", "ap-south-1")]),
            &no_files,
        )
        .unwrap();
        assert_eq!(c.region, "ap-south-1");
        assert_eq!(
            c.session_target().unwrap().endpoint.signing_region,
            "ap-south-1"
        );
    }

    #[test]
    fn legacy_global_endpoint_and_ca_bundle() {
        let cfg = "[profile a]\nregion = eu-west-1\nsts_regional_endpoints = legacy\nca_bundle = ~/ca.pem\n";
        let c = resolve(
            &set(cfg),
            "a",
            &Env::from_pairs(&[("HOME", "/home/u")]),
            &no_files,
        )
        .unwrap();
        let t = c.session_target().unwrap();
        assert_eq!(t.endpoint.url.as_str(), "https://sts.amazonaws.com/");
        assert_eq!(t.ca_bundle.as_deref(), Some(Path::new("/home/u/ca.pem")));
    }

    #[test]
    fn web_identity_process_and_federation() {
        let cfg = "[profile w]\nrole_arn = arn:aws:iam::1:role/w\nweb_identity_token_file = ~/tok\n\
                   [profile p]\ncredential_process = \"/opt/my tool\" --profile 'x y' a\\ b\n\
                   [profile f]\ncredvend_federation_name = fed-user\ncredvend_policy = file://~/pol.json\ncredvend_policy_arns = arn:aws:iam::aws:policy/ReadOnlyAccess, arn:aws:iam::aws:policy/X\n";
        let files = |p: &Path| -> std::io::Result<String> {
            match p.to_str().unwrap() {
                "/h/tok" => Ok("jwt".into()),
                "/h/pol.json" => Ok("{\"Version\":\"2012-10-17\"}".into()),
                _ => no_files(p),
            }
        };
        let s = set(cfg);
        let env = Env::from_pairs(&[("HOME", "/h")]);
        let w = resolve(&s, "w", &env, &files).unwrap();
        assert!(
            matches!(&w.source, Source::WebIdentity { step, roles } if step.token_file == Path::new("/h/tok") && step.duration == 3600 && roles.is_empty())
        );
        assert_eq!(w.mfa_session(), None);
        let p = resolve(&s, "p", &env, &files).unwrap();
        assert_eq!(
            p.source,
            Source::Process {
                profile: "p".into(),
                command: vec![
                    "/opt/my tool".into(),
                    "--profile".into(),
                    "x y".into(),
                    "a b".into()
                ],
                roles: Vec::new(),
            }
        );
        let f = resolve(&s, "f", &env, &files).unwrap();
        let Source::Keys {
            then: FromKeys::Federation(fed),
            ..
        } = f.source
        else {
            panic!("{f:?}")
        };
        assert_eq!(fed.name, "fed-user");
        assert_eq!(fed.policy_arns.len(), 2);
        assert!(fed.policy.unwrap().contains("2012-10-17"));
    }

    #[test]
    fn session_tags_and_source_identity_reach_the_role_step_in_either_spelling() {
        let cfg = "[profile user]\n\
                   [profile cv]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = user\n\
                   credvend_session_tags = team=dev, Project = x/y\ncredvend_transitive_session_tags = TEAM\n\
                   credvend_source_identity = alice@example.com\n\
                   [profile av]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = user\n\
                   session_tags = team=dev,Project=x/y\ntransitive_session_tags = team\nsource_identity = alice@example.com\n\
                   [profile both]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = user\n\
                   credvend_session_tags = Project=x/y,team=dev\nsession_tags = team=dev,Project=x/y\n\
                   [profile lines]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = user\n\
                   session_tags =\n  team = dev\n  Project = x/y\n";
        let role = |name: &str| res(cfg, name).unwrap().roles()[0].clone();
        let cv = role("cv");
        assert_eq!(
            cv.tags.tags,
            [
                ("team".to_owned(), "dev".to_owned()),
                ("Project".to_owned(), "x/y".to_owned())
            ]
        );
        assert_eq!(
            cv.tags.transitive,
            ["team"],
            "spelled as the tag, whatever case the list used"
        );
        assert_eq!(cv.source_identity.as_deref(), Some("alice@example.com"));
        let av = role("av");
        assert_eq!(
            (&av.tags, &av.source_identity),
            (&cv.tags, &cv.source_identity)
        );
        assert_eq!(role("both").tags.tags.len(), 2, "same tags, other order");
        assert_eq!(role("lines").tags.tags, cv.tags.tags, "indented lines");
        assert_eq!(
            res(cfg, "cv").unwrap().describe(),
            "keyring:user -> AssumeRole(cv; tags: team (transitive), Project; source identity: alice@example.com)"
        );
        assert!(role("cv").tags != SessionTags::default());
        assert_eq!(
            res(cfg, "user").unwrap().describe(),
            "keyring:user -> GetSessionToken"
        );
    }

    #[test]
    fn malformed_session_tags_are_refused_naming_their_line() {
        let role = "[profile user]\n[profile r]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = user\n";
        for (lines, needle) in [
            (
                "credvend_session_tags = team",
                "line 5: profile `r`: credvend_session_tags entry \"team\" has no `=`",
            ),
            (
                "session_tags = team=dev,=x",
                "line 5: profile `r`: session_tags entry \"=x\" has an empty key",
            ),
            (
                "session_tags = team=dev,TEAM=ops",
                "line 5: profile `r`: session_tags key \"TEAM\" is given twice",
            ),
            (
                "credvend_source_identity = a b",
                "line 5: profile `r`: credvend_source_identity \"a b\" must be 2-64",
            ),
            (
                "session_tags = team=dev\ntransitive_session_tags = team,project",
                "line 6: profile `r`: transitive_session_tags names \"project\", which is not a key of session_tags",
            ),
            (
                "credvend_transitive_session_tags = team",
                "line 5: profile `r`: credvend_transitive_session_tags names \"team\", which is not a key of credvend_session_tags",
            ),
            (
                "credvend_session_tags = team=dev\nsession_tags = team=ops",
                "line 5: profile `r`: credvend_session_tags (config file line 5) and session_tags (config file line 6) say different things",
            ),
            (
                "source_identity = alice\ncredvend_source_identity = bob",
                "line 6: profile `r`: credvend_source_identity (config file line 6) and source_identity (config file line 5)",
            ),
        ] {
            let e = res(&format!("{role}{lines}\n"), "r").unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadValue, "{lines}: {e}");
            assert!(e.message.starts_with("config file "), "{lines}: {e}");
            assert!(e.message.contains(needle), "{lines}:\n{e}\nwants {needle}");
        }
    }

    #[test]
    fn federation_takes_tags_but_no_transitive_keys_or_source_identity() {
        let fed = "[profile f]\ncredvend_federation_name = fed-user\n";
        let f = res(&format!("{fed}session_tags = team=dev\n"), "f").unwrap();
        let Source::Keys {
            then: FromKeys::Federation(step),
            ..
        } = &f.source
        else {
            panic!("{f:?}")
        };
        assert_eq!(step.tags, [("team".to_owned(), "dev".to_owned())]);
        assert_eq!(
            f.describe(),
            "keyring:f -> GetFederationToken(fed-user; tags: team)"
        );
        for (extra, key) in [
            (
                "session_tags = team=dev\ntransitive_session_tags = team\n",
                "transitive_session_tags",
            ),
            (
                "credvend_source_identity = alice\n",
                "credvend_source_identity",
            ),
        ] {
            let e = res(&format!("{fed}{extra}"), "f").unwrap_err();
            assert!(
                e.message.contains(&format!(
                    "profile `f`: {key} cannot be sent with GetFederationToken"
                )) && e.message.starts_with("config file line "),
                "{e}"
            );
        }
    }

    /// Each role of a chain sends its own profile's tags; a later role may not set a tag an
    /// earlier one passes on as transitive, nor another source identity (STS fails that
    /// AssumeRole).
    #[test]
    fn tags_and_source_identity_belong_to_their_role_and_inherited_ones_stay() {
        let cfg = "[profile user]\n\
                   [profile a]\nrole_arn = arn:aws:iam::123456789012:role/a\nsource_profile = user\n\
                   session_tags = team=dev,x=1\ntransitive_session_tags = team\n\
                   [profile b]\nrole_arn = arn:aws:iam::123456789012:role/b\nsource_profile = a\nsession_tags = x=2\n\
                   [profile c]\nrole_arn = arn:aws:iam::123456789012:role/c\nsource_profile = a\nsession_tags = Team=ops\n";
        let b = res(cfg, "b").unwrap();
        let roles = b.roles();
        assert_eq!(roles[0].tags.tags.len(), 2);
        assert_eq!(
            roles[1].tags.tags,
            [("x".to_owned(), "2".to_owned())],
            "a non-transitive key may be set again"
        );
        let e = res(cfg, "c").unwrap_err();
        assert!(
            e.message.starts_with(
                "config file line 14: profile `c`: session_tags sets \"Team\", which profile `a`"
            ),
            "{e}"
        );
        let ids = "[profile user]\n\
                   [profile a]\nrole_arn = arn:aws:iam::123456789012:role/a\nsource_profile = user\nsource_identity = alice\n\
                   [profile b]\nrole_arn = arn:aws:iam::123456789012:role/b\nsource_profile = a\nsource_identity = alice\n\
                   [profile c]\nrole_arn = arn:aws:iam::123456789012:role/c\nsource_profile = a\ncredvend_source_identity = bob\n";
        assert!(res(ids, "b").is_ok(), "the same source identity again");
        let e = res(ids, "c").unwrap_err();
        assert!(
            e.message.starts_with("config file line 13: profile `c`: credvend_source_identity \"bob\" differs from \"alice\", which profile `a`"),
            "{e}"
        );
    }

    #[test]
    fn command_splitting() {
        assert_eq!(
            split_command("a 'b c' \"d \\\"e\\\"\" f\\ g").unwrap(),
            ["a", "b c", "d \"e\"", "f g"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_command("''").unwrap(), [""]);
        assert!(split_command("\"x").is_err());
        assert!(split_command("x\\").is_err());
    }
}
