//! The control protocol's wire types: what the CLI and the daemon say to each other over
//! `STATE_DIR/control.sock`. One JSON request line, one JSON answer line, then close:
//!
//! ```text
//! -> {"v":2,"cmd":"status"}                       <- {"v":2,"ok":{"reply":"status",...}}
//! -> {"v":2,"cmd":"login","profile":"dev","code":"123456"}
//! -> {"v":2,"cmd":"refresh","profile":null}       (null: every profile)
//! -> {"v":2,"cmd":"lock","profile":"dev"}
//! -> {"v":2,"cmd":"credentials","profile":"dev"}  <- {"v":2,"err":{"kind":"not-served","message":"..."}}
//! -> {"v":2,"cmd":"sign-in-changed","session":"corp"}  <- {"v":2,"ok":{"reply":"refreshing","profiles":[...]}}
//! -> {"v":2,"cmd":"rotate-agent-id","profile":"dev"}  <- {"v":2,"ok":{"reply":"agent-id-rotated","profile":"dev"}}
//! -> {"v":2,"cmd":"metrics"}                      <- {"v":2,"ok":{"reply":"metrics","text":"# TYPE ...# EOF\n"}}
//! ```
//!
//! No answer carries an ECS token or an ECS-agent ID: `status` names the files holding them
//! (mode 0600 in the state directory), which only the daemon's user can read.
//!
//! These types are a boundary: they import nothing from the daemon or the minter, so either side
//! can change its insides without changing what travels. A failure carries a [`FailureKind`] the
//! CLI acts on; its message is for people only.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Protocol version. A daemon refuses requests of another version with a message saying to
/// restart it after an upgrade.
pub(crate) const VERSION: u32 = 2;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub(crate) enum Request {
    /// Everything `credvend status` shows.
    Status,
    /// Supply an MFA code.
    Login {
        /// Profile.
        profile: String,
        /// The code.
        #[serde(serialize_with = "expose", deserialize_with = "secret")]
        code: SecretString,
    },
    /// Mint now.
    Refresh {
        /// Profile, or every profile.
        profile: Option<String>,
    },
    /// Forget credentials.
    Lock {
        /// Profile, or every profile.
        profile: Option<String>,
    },
    /// The current credentials of a profile (never long-term keys).
    Credentials {
        /// Profile.
        profile: String,
    },
    /// Whether the daemon serves a profile (over the ECS endpoint when `container`), and if
    /// not, why (`credvend env`, `exec`).
    Check {
        /// Profile.
        profile: String,
        /// Over the ECS endpoint.
        container: bool,
    },
    /// The keys stored for a profile were added or replaced (`add`, `import`, `rotate`) or
    /// removed (`remove`).
    KeysChanged {
        /// The profile the keys are stored under.
        profile: String,
        /// Removed (else added or replaced).
        removed: bool,
    },
    /// The IAM Identity Center sign-in of an SSO session changed in the keyring (`credvend login`
    /// stored a new one, `credvend remove` deleted it): every profile of that session reads it
    /// again and mints now.
    SignInChanged {
        /// The session's keyring name (the `sso-session` name, or the SHA-1 of a legacy start URL).
        session: String,
    },
    /// Give a profile a new ECS-agent ID and refuse the old one from now on.
    RotateAgentId {
        /// Profile.
        profile: String,
    },
    /// The daemon's metrics (`credvend metrics`).
    Metrics,
    /// Serve `profile`'s credentials minted with this session policy too, as a unit of its own
    /// over the ECS endpoint (`credvend exec --policy`); minted before the answer.
    Scope {
        /// Profile.
        profile: String,
        /// Inline JSON policy document.
        policy: Option<String>,
        /// Managed session policy ARNs.
        #[serde(default)]
        policy_arns: Vec<String>,
    },
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub(crate) enum Reply {
    /// To `status`.
    Status(StatusReport),
    /// To `login`: the MFA session's expiry.
    LoggedIn {
        /// When the session ends.
        #[serde(with = "aws_time")]
        session_expiration: OffsetDateTime,
    },
    /// To `refresh` and `signed-in`: the profiles that mint now.
    Refreshing {
        /// Their names.
        profiles: Vec<String>,
    },
    /// To `lock`: the profiles whose credentials were forgotten.
    Locked {
        /// Their names.
        profiles: Vec<String>,
        /// Those among them that need `credvend login` again (their MFA session was forgotten).
        #[serde(default)]
        needs_login: Vec<String>,
    },
    /// To `credentials`.
    Credentials(Credentials),
    /// To `check`: the profile is served.
    Served,
    /// To `keys-changed`: the profiles whose credentials are affected.
    Affected {
        /// Their names.
        profiles: Vec<String>,
    },
    /// To `rotate-agent-id`: the new ID is in the profile's ID file.
    AgentIdRotated {
        /// The profile.
        profile: String,
    },
    /// To `scope`: the unit serving the scoped session (`PROFILE~ID`), its ECS token in its file.
    Scoped {
        /// The unit's name, served under `/credentials/UNIT`.
        unit: String,
    },
    /// To `metrics`: the OpenMetrics text exposition, `# EOF` line included.
    Metrics {
        /// The text.
        text: String,
    },
}

/// What kind of failure: what the CLI decides on. Messages are for people only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailureKind {
    /// The daemon does not serve the profile (config.toml does not name it); the profile itself
    /// may be fine.
    NotServed,
    /// The profile cannot be served: its configuration, keys, or an MFA code is the problem.
    Unservable,
    /// The profile is served but has nothing valid now.
    Unavailable,
    /// The request makes no sense for the profile (`login` without `mfa_serial`).
    NotApplicable,
    /// The request could not be read (version, shape).
    BadRequest,
}

/// A failed answer.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    /// What kind.
    pub kind: FailureKind,
    /// One line naming the fix.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// Temporary credentials as `credential_process` Version 1 needs them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub secret_access_key: SecretString,
    /// Session token.
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub session_token: SecretString,
    /// Expiry.
    #[serde(with = "aws_time")]
    pub expiration: OffsetDateTime,
    /// Account, when known.
    pub account_id: Option<String>,
    /// The profile's region (what SDKs need besides the credentials).
    #[serde(default)]
    pub region: Option<String>,
}

/// `status`: the daemon and everything it serves.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StatusReport {
    /// Daemon version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// STS's clock minus this machine's, in seconds, as last measured from an STS answer.
    pub clock_skew_seconds: Option<i64>,
    /// The last reload that failed, while the configuration before it keeps serving.
    #[serde(default)]
    pub reload_error: Option<ReloadError>,
    /// Listeners.
    pub listeners: Vec<ListenerStatus>,
    /// Profiles.
    pub profiles: Vec<ProfileStatus>,
}

/// A reload that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReloadError {
    /// When.
    #[serde(with = "aws_time")]
    pub at: OffsetDateTime,
    /// Why (one line naming the file and the fix).
    pub message: String,
}

/// A listener in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListenerStatus {
    /// `imds`, `ecs` or `ecs-agent`.
    pub kind: String,
    /// Bound address.
    pub address: String,
    /// Served profile (IMDS) or profiles (ECS, ECS agent); with routes, every route's.
    pub profiles: Vec<String>,
    /// The listener's routes, in configuration order (empty without routes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteStatus>,
    /// With routes: requests refused because no route names the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrouted_refused: Option<u64>,
}

/// A listener's route in `status`: who, which profile, and its requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteStatus {
    /// The network its clients come from (a CIDR), for containers and VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The uid of its local clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The profile they get.
    pub profile: String,
    /// The scoped session of `profile` they get (the route's `policy`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Credential requests served.
    pub served: u64,
    /// Requests refused (nothing to serve, another route's role or ID).
    pub refused: u64,
}

/// What a profile is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// Minting the first credentials.
    Starting,
    /// Serving; the next rotation is scheduled.
    Fresh,
    /// A rotation is in progress (current credentials still served).
    Refreshing,
    /// Waiting for `credvend login`.
    NeedsMfa,
    /// Waiting for `credvend login` (an IAM Identity Center sign-in).
    NeedsLogin,
    /// The last attempt failed; retrying with backoff.
    Error,
    /// `credvend lock` forgot the credentials.
    Locked,
    /// Minted on demand and not asked for lately: nothing held until the next request.
    Idle,
}

/// A recorded failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProblemStatus {
    /// IMDS-style code.
    pub code: String,
    /// One line naming the fix.
    pub message: String,
    /// When it was recorded.
    #[serde(with = "aws_time")]
    pub since: OffsetDateTime,
}

/// A profile in `status`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProfileStatus {
    /// Name.
    pub name: String,
    /// How its credentials are made (`keyring:u -> AssumeRole(a)`), or the configuration error.
    pub source: String,
    /// Phase.
    pub phase: Phase,
    /// The last failure (kept while credentials are still served).
    pub last_error: Option<ProblemStatus>,
    /// Next rotation or retry.
    #[serde(with = "aws_time::option")]
    pub next_refresh: Option<OffsetDateTime>,
    /// Last successful mint.
    #[serde(with = "aws_time::option")]
    pub last_refresh: Option<OffsetDateTime>,
    /// Successful mints.
    pub refreshes: u64,
    /// Expiry of the credentials being served.
    #[serde(with = "aws_time::option")]
    pub expiration: Option<OffsetDateTime>,
    /// Access key id being served.
    pub access_key_id: Option<String>,
    /// Who the served credentials are (assumed-role or federated-user ARN), when STS said.
    #[serde(default)]
    pub identity: Option<String>,
    /// How much of STS's limit for session policies and tags they use, in percent.
    #[serde(default)]
    pub packed_policy_size: Option<u32>,
    /// When the mint in progress started (an STS call, the keyring or a process in flight).
    #[serde(default, with = "aws_time::option")]
    pub minting_since: Option<OffsetDateTime>,
    /// The profile's region (what `credvend env` exports as AWS_REGION).
    pub region: Option<String>,
    /// Credential responses served.
    pub requests: u64,
    /// Minted on its first request (else at start-up: an `[[imds]]` or `[refresh] prewarm`
    /// profile), and idle after `[refresh] idle_after_seconds` without one.
    #[serde(default)]
    pub on_demand: bool,
    /// When credentials were last asked for (by a client, `exec` or `env`).
    #[serde(default, with = "aws_time::option")]
    pub last_use: Option<OffsetDateTime>,
    /// MFA device, when the profile needs one.
    pub mfa_serial: Option<String>,
    /// ECS token file, when ECS serves the profile.
    pub ecs_token_file: Option<String>,
    /// Settings of the profile that have no effect or conflict (file and line included).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The file holding the profile's ECS-agent ID, when the `[ecs_agent]` listener serves it.
    #[serde(default)]
    pub ecs_agent_id_file: Option<String>,
}

/// Timestamps on the wire as every AWS tool writes them: `YYYY-MM-DDTHH:MM:SSZ`, whole seconds,
/// truncated; any RFC 3339 form is read.
mod aws_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, ser: S) -> Result<S::Ok, S::Error> {
        let text = t
            .to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .map_err(serde::ser::Error::custom)?;
        ser.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(de)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            ser: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, ser),
                None => ser.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            de: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(de)? {
                Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn secret<'de, D: serde::Deserializer<'de>>(de: D) -> Result<SecretString, D::Error> {
    String::deserialize(de).map(SecretString::from)
}

/// The envelope of every line.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope<T> {
    /// Protocol version.
    pub v: u32,
    /// The request or answer.
    #[serde(flatten)]
    pub body: T,
}

/// An answer: exactly one of `ok` and `err`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Answer {
    /// Success.
    Ok(Reply),
    /// Failure.
    Err(Failure),
}

impl From<Result<Reply, Failure>> for Answer {
    fn from(r: Result<Reply, Failure>) -> Answer {
        match r {
            Ok(reply) => Answer::Ok(reply),
            Err(f) => Answer::Err(f),
        }
    }
}

/// Parses one request line (pure; fuzzed).
pub(crate) fn parse_request(line: &str) -> Result<Request, Failure> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    match serde_json::from_str::<Version>(line) {
        Ok(Version { v }) if v != VERSION => {
            return Err(Failure::new(
                FailureKind::BadRequest,
                format!(
                    "control protocol version {v} is not supported (this daemon speaks {VERSION}); restart the daemon after upgrading credvend"
                ),
            ));
        }
        Ok(_) => {}
        Err(_) => {
            return Err(Failure::new(
                FailureKind::BadRequest,
                "malformed control request",
            ));
        }
    }
    serde_json::from_str::<Envelope<Request>>(line)
        .map(|e| e.body)
        .map_err(|_| Failure::new(FailureKind::BadRequest, "malformed control request"))
}

/// One line (with its newline) for `body`.
pub(crate) fn line<T: Serialize>(body: T) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(&Envelope { v: VERSION, body }).expect("protocol values serialize");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hide_codes_in_debug() {
        let req = Request::Login {
            profile: "dev".into(),
            code: SecretString::from("123456"),
        };
        let text = String::from_utf8(line(&req)).unwrap();
        assert_eq!(
            text,
            "{\"v\":2,\"cmd\":\"login\",\"profile\":\"dev\",\"code\":\"123456\"}\n"
        );
        let back = parse_request(&text).unwrap();
        assert!(!format!("{back:?}").contains("123456"));
        let lock = parse_request(r#"{"v":2,"cmd":"lock","profile":null}"#).unwrap();
        assert!(matches!(lock, Request::Lock { profile: None }));
        assert_eq!(
            parse_request(r#"{"v":2,"cmd":"format-disk"}"#)
                .unwrap_err()
                .kind,
            FailureKind::BadRequest
        );
        let signed = parse_request(r#"{"v":2,"cmd":"sign-in-changed","session":"corp"}"#).unwrap();
        assert!(matches!(signed, Request::SignInChanged { session } if session == "corp"));
        let rotate = parse_request(r#"{"v":2,"cmd":"rotate-agent-id","profile":"dev"}"#).unwrap();
        assert!(matches!(rotate, Request::RotateAgentId { profile } if profile == "dev"));
        let scope =
            parse_request(r#"{"v":2,"cmd":"scope","profile":"dev","policy":"{}"}"#).unwrap();
        assert!(
            matches!(scope, Request::Scope { profile, policy: Some(_), policy_arns } if profile == "dev" && policy_arns.is_empty())
        );
        let metrics = parse_request(r#"{"v":2,"cmd":"metrics"}"#).unwrap();
        assert!(matches!(metrics, Request::Metrics));
        let old = parse_request(r#"{"v":1,"cmd":"status"}"#).unwrap_err();
        assert!(old.message.contains("restart the daemon"), "{old}");
    }

    #[test]
    fn answers_are_ok_or_err() {
        let ok: Answer = Ok(Reply::Locked {
            profiles: vec!["a".into()],
            needs_login: vec![],
        })
        .into();
        let text = String::from_utf8(line(&ok)).unwrap();
        assert_eq!(
            text,
            "{\"v\":2,\"ok\":{\"reply\":\"locked\",\"profiles\":[\"a\"],\"needs_login\":[]}}\n"
        );
        let err: Answer = Err(Failure::new(FailureKind::NotServed, "no")).into();
        let text = String::from_utf8(line(&err)).unwrap();
        let back: Envelope<Answer> = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.body, Answer::Err(f) if f.kind == FailureKind::NotServed));
    }
}
