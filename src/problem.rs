//! Why a profile has no credentials to give: one closed list of problem codes, and for each the
//! IMDS `Code` it appears as, the ECS status code, whether it passes without anyone doing anything,
//! and what a client of an endpoint (who may not be the user) may be told. Pure.
//!
//! The ECS status follows `docs/sdk-behaviour.md` section 7: the Rust, Go and Java SDKs retry 5xx,
//! so 503 is reserved for what passes by itself (STS down, first mint in progress) and 403 is
//! for what only the user can fix (an MFA code, a key, the configuration).

use time::OffsetDateTime;

/// Every reason a profile can have nothing to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ProblemCode {
    /// The chain needs an MFA code: `credvend login`.
    NeedsMfa,
    /// The chain needs an IAM Identity Center sign-in: `credvend login`.
    NeedsLogin,
    /// The keyring holds no keys for the profile the chain starts with.
    MissingKeys,
    /// The keyring cannot be reached or is locked; retried.
    KeyringUnavailable,
    /// The keyring answered with something only the user can fix (a malformed entry...).
    KeyringError,
    /// STS does not accept the stored keys.
    InvalidKeys,
    /// STS refused `AssumeRole` (trust policy, external id, MFA).
    AssumeRoleUnauthorizedAccess,
    /// STS refused the request for another reason the user must fix.
    StsError,
    /// STS throttled the request; retried.
    StsThrottled,
    /// STS could not be reached, timed out, or failed on its side; retried.
    StsUnavailable,
    /// STS answered with something that is not an STS document.
    StsBadResponse,
    /// The profile's configuration cannot be used.
    InvalidConfiguration,
    /// The `credential_process` failed or printed something unusable; retried.
    CredentialProcessFailed,
    /// The web identity token file cannot be read; retried.
    WebIdentityTokenUnreadable,
    /// `credvend lock` forgot the credentials.
    CredentialsLocked,
    /// The first credentials are still being minted.
    CredentialsPending,
    /// STS (or the `credential_process`) handed out credentials that were already expired or
    /// about to be: usually this machine's clock is wrong.
    CredentialsTooShort,
    /// The credentials expired and no new ones could be minted.
    CredentialsExpired,
}

impl ProblemCode {
    /// Every code, in declaration order (`ALL[c.index()] == c`): what the per-code counters of
    /// the metrics are indexed by.
    pub const ALL: [ProblemCode; 18] = [
        ProblemCode::NeedsMfa,
        ProblemCode::NeedsLogin,
        ProblemCode::MissingKeys,
        ProblemCode::KeyringUnavailable,
        ProblemCode::KeyringError,
        ProblemCode::InvalidKeys,
        ProblemCode::AssumeRoleUnauthorizedAccess,
        ProblemCode::StsError,
        ProblemCode::StsThrottled,
        ProblemCode::StsUnavailable,
        ProblemCode::StsBadResponse,
        ProblemCode::InvalidConfiguration,
        ProblemCode::CredentialProcessFailed,
        ProblemCode::WebIdentityTokenUnreadable,
        ProblemCode::CredentialsLocked,
        ProblemCode::CredentialsPending,
        ProblemCode::CredentialsTooShort,
        ProblemCode::CredentialsExpired,
    ];

    /// The position of this code in [`ProblemCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The IMDS `Code` value (and ECS `code`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::NeedsMfa => "NeedsMfa",
            ProblemCode::NeedsLogin => "NeedsLogin",
            ProblemCode::MissingKeys => "MissingKeys",
            ProblemCode::KeyringUnavailable => "KeyringUnavailable",
            ProblemCode::KeyringError => "KeyringError",
            ProblemCode::InvalidKeys => "InvalidKeys",
            ProblemCode::AssumeRoleUnauthorizedAccess => "AssumeRoleUnauthorizedAccess",
            ProblemCode::StsError => "StsError",
            ProblemCode::StsThrottled => "StsThrottled",
            ProblemCode::StsUnavailable => "StsUnavailable",
            ProblemCode::StsBadResponse => "StsBadResponse",
            ProblemCode::InvalidConfiguration => "InvalidConfiguration",
            ProblemCode::CredentialProcessFailed => "CredentialProcessFailed",
            ProblemCode::WebIdentityTokenUnreadable => "WebIdentityTokenUnreadable",
            ProblemCode::CredentialsLocked => "CredentialsLocked",
            ProblemCode::CredentialsPending => "CredentialsPending",
            ProblemCode::CredentialsTooShort => "CredentialsTooShort",
            ProblemCode::CredentialsExpired => "CredentialsExpired",
        }
    }

    /// Whether waiting and retrying may help without the user doing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProblemCode::KeyringUnavailable
                | ProblemCode::StsThrottled
                | ProblemCode::StsUnavailable
                | ProblemCode::CredentialProcessFailed
                | ProblemCode::WebIdentityTokenUnreadable
                | ProblemCode::CredentialsPending
                | ProblemCode::CredentialsExpired
        )
    }

    /// The ECS endpoint's status code: 503 for what passes by itself (SDKs retry it), 403 for
    /// what only the user can fix (SDKs give up at once).
    pub fn ecs_status(self) -> u16 {
        if self.is_transient() { 503 } else { 403 }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a profile cannot be served, as recorded for `status` and the endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub code: ProblemCode,
    /// One line naming the fix, for the user (`credvend status`): may quote what a
    /// `credential_process` printed.
    pub message: String,
    /// When it was recorded.
    pub since: OffsetDateTime,
}

impl Problem {
    /// A problem recorded now.
    pub fn new(code: ProblemCode, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into().replace('\n', " "),
            since: OffsetDateTime::now_utc(),
        }
    }

    /// The message for a client of an endpoint, who may be someone the user lets fetch
    /// credentials (a container) but not read what the user's own helper printed: a failing
    /// `credential_process`'s output stays with `credvend status`.
    pub fn public_message(&self, profile: &str) -> String {
        match self.code {
            ProblemCode::CredentialProcessFailed => format!(
                "the credential_process of profile `{profile}` failed; `credvend status` shows why"
            ),
            _ => self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_problems_are_503_and_the_rest_403() {
        assert_eq!(ProblemCode::StsUnavailable.ecs_status(), 503);
        assert_eq!(ProblemCode::CredentialsPending.ecs_status(), 503);
        assert_eq!(ProblemCode::NeedsMfa.ecs_status(), 403);
        assert_eq!(ProblemCode::NeedsLogin.ecs_status(), 403);
        assert!(!ProblemCode::NeedsLogin.is_transient());
        assert_eq!(ProblemCode::CredentialsLocked.ecs_status(), 403);
        assert_eq!(ProblemCode::InvalidKeys.ecs_status(), 403);
    }

    #[test]
    fn all_lists_every_code_at_its_index() {
        for (i, c) in ProblemCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c}");
        }
        let names: std::collections::HashSet<&str> =
            ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ProblemCode::ALL.len());
    }

    #[test]
    fn process_output_stays_private() {
        let p = Problem::new(
            ProblemCode::CredentialProcessFailed,
            "credential_process `x` failed: secret-ish stderr",
        );
        assert!(!p.public_message("dev").contains("stderr"));
        let p = Problem::new(ProblemCode::NeedsMfa, "run `credvend login dev`");
        assert_eq!(p.public_message("dev"), "run `credvend login dev`");
    }
}
