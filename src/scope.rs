//! Scoped-down sessions: a profile's credentials minted with a session policy of the consumer's
//! (`credvend exec PROFILE --policy … --policy-arn …`, or `policy` / `policy_arns` on an
//! `[[imds]]` listener or one of its routes). STS grants such a session at most the intersection
//! of the role's (or federated user's) permissions and the session policies.
//!
//! A scoped session is a unit of its own, named `PROFILE~ID` (ID: 12 hex digits of the SHA-256
//! of the scope as written), with its own credentials, its own refresher and its own ECS token:
//! the token of a scoped session never unlocks the unscoped one, nor another scope. It is cached
//! and refreshed like any profile, so a second `exec` with the same policy reuses it.
//!
//! A scope only narrows: it is refused on a profile that already sets `credvend_policy` /
//! `credvend_policy_arns` (one AssumeRole carries one set of session policies, and a second set
//! would replace the first, not intersect with it), and on profiles whose last call takes no
//! session policy (GetSessionToken, a credential process or IAM Identity Center without a role).

use sha2::{Digest, Sha256};

/// What separates the profile from the scope's ID in a scoped unit's name.
pub(crate) const SEPARATOR: char = '~';

/// STS's limit on managed session policies per call (`PolicyArns`).
pub(crate) const MAX_POLICY_ARNS: usize = 10;

/// A session policy, as written: `policy` is inline JSON or `file://PATH` (read when the
/// configuration is applied), `policy_arns` managed policies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    /// Inline JSON policy document, or `file://PATH`.
    pub policy: Option<String>,
    /// Managed session policies (ARNs).
    pub policy_arns: Vec<String>,
}

impl Scope {
    /// A scope from its settings; `what` names them in errors. At least one of the two must be
    /// given; ARNs are checked, inline JSON is parsed (files are read later, by
    /// [`Scope::document`]).
    pub fn new(
        policy: Option<String>,
        policy_arns: Vec<String>,
        what: &str,
    ) -> Result<Scope, String> {
        let policy = policy
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        if policy.is_none() && policy_arns.is_empty() {
            return Err(format!(
                "{what}: a scope needs `policy` (inline JSON or file://PATH) or `policy_arns`"
            ));
        }
        if policy_arns.len() > MAX_POLICY_ARNS {
            return Err(format!(
                "{what}: {} policy ARNs; STS takes at most {MAX_POLICY_ARNS}",
                policy_arns.len()
            ));
        }
        if let Some(arn) = policy_arns.iter().find(|a| !a.starts_with("arn:")) {
            return Err(format!(
                "{what}: policy ARN {arn:?} is not an ARN (arn:aws:iam::aws:policy/ReadOnlyAccess)"
            ));
        }
        if let Some(p) = &policy
            && !p.starts_with("file://")
        {
            compact(p).map_err(|e| format!("{what}: the policy is not JSON: {e}"))?;
        }
        Ok(Scope {
            policy,
            policy_arns,
        })
    }

    /// The scope's ID: 12 hex digits of the SHA-256 of the scope as written.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.policy.as_deref().unwrap_or("").as_bytes());
        for arn in &self.policy_arns {
            h.update([0]);
            h.update(arn.as_bytes());
        }
        hex::encode(h.finalize())[..12].to_owned()
    }

    /// The name of `profile`'s session with this scope.
    pub fn unit(&self, profile: &str) -> String {
        format!("{profile}{SEPARATOR}{}", self.id())
    }

    /// The inline policy to send (compact JSON; a `file://` one read with `read`), and the ARNs.
    pub fn document(
        &self,
        read: &dyn Fn(&std::path::Path) -> std::io::Result<String>,
    ) -> Result<(Option<String>, Vec<String>), String> {
        let policy = match self.policy.as_deref() {
            None => None,
            Some(p) => {
                let text = match p.strip_prefix("file://") {
                    Some(path) => read(std::path::Path::new(path))
                        .map_err(|e| format!("the policy file {path} cannot be read: {e}"))?,
                    None => p.to_owned(),
                };
                Some(compact(&text).map_err(|e| format!("the policy is not JSON: {e}"))?)
            }
        };
        Ok((policy, self.policy_arns.clone()))
    }
}

/// `text` as compact JSON (whitespace dropped: STS counts the policy's characters).
pub(crate) fn compact(text: &str) -> Result<String, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    if !v.is_object() {
        return Err(serde::de::Error::custom(
            "a policy document is a JSON object",
        ));
    }
    serde_json::to_string(&v)
}

/// The profile a unit name serves (`dev~0123456789ab` → `dev`).
pub(crate) fn base_profile(unit: &str) -> &str {
    match unit.rsplit_once(SEPARATOR) {
        Some((profile, id)) if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            profile
        }
        _ => unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_checked_named_and_read() {
        let pretty = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": []\n}\n";
        let s = Scope::new(Some(pretty.into()), vec![], "exec").unwrap();
        let unit = s.unit("dev");
        assert!(unit.starts_with("dev~") && unit.len() == 16, "{unit}");
        assert_eq!(base_profile(&unit), "dev");
        assert_eq!(base_profile("odd~name"), "odd~name");
        // Another policy, another unit; the same one, the same unit.
        let other = Scope::new(Some("{}".into()), vec![], "exec").unwrap();
        assert_ne!(other.unit("dev"), unit);
        assert_eq!(
            Scope::new(Some(pretty.into()), vec![], "exec")
                .unwrap()
                .unit("dev"),
            unit
        );
        let (doc, _) = s.document(&|_| unreachable!()).unwrap();
        assert_eq!(doc.unwrap(), r#"{"Statement":[],"Version":"2012-10-17"}"#);
        let f = Scope::new(Some("file:///p.json".into()), vec![], "x").unwrap();
        let (doc, _) = f
            .document(&|p| Ok(format!("{{\"read\": \"{}\"}}", p.display())))
            .unwrap();
        assert_eq!(doc.unwrap(), r#"{"read":"/p.json"}"#);
        for (policy, arns, want) in [
            (None, vec![], "needs `policy`"),
            (Some("{nope"), vec![], "not JSON"),
            (Some("[1]"), vec![], "not JSON"),
            (None, vec!["ReadOnlyAccess".to_owned()], "is not an ARN"),
            (None, vec!["arn:x".to_owned(); 11], "at most 10"),
        ] {
            let e = Scope::new(policy.map(str::to_owned), arns, "exec").unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
