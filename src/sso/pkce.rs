//! PKCE (RFC 7636) for the authorization-code sign-in: the code verifier, its S256 challenge, and
//! the random `state` that ties the browser's redirect to this sign-in. Pure apart from drawing
//! random bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A PKCE code verifier: 43 to 128 characters of the unreserved set `A-Z a-z 0-9 - . _ ~`
/// (RFC 7636 4.1). Secret until the token request.
#[derive(Clone, Debug)]
pub struct CodeVerifier(SecretString);

/// Why a string is not a code verifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkceError {
    /// Length outside 43..=128.
    #[error("a PKCE code verifier has 43 to 128 characters, not {0}")]
    Length(usize),
    /// A character outside the unreserved set.
    #[error("a PKCE code verifier holds only A-Z a-z 0-9 - . _ ~")]
    Character,
}

impl CodeVerifier {
    /// A fresh verifier: 48 random bytes in base64url without padding, 64 characters (the length
    /// the AWS CLI uses), all in the unreserved set.
    pub fn generate() -> CodeVerifier {
        let mut bytes = [0u8; 48];
        getrandom::getrandom(&mut bytes).expect("the OS random source works");
        CodeVerifier(SecretString::from(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A verifier from its text, checked against RFC 7636 4.1.
    pub fn new(text: &str) -> Result<CodeVerifier, PkceError> {
        if !(43..=128).contains(&text.len()) {
            return Err(PkceError::Length(text.len()));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(PkceError::Character);
        }
        Ok(CodeVerifier(SecretString::from(text.to_owned())))
    }

    /// The S256 `code_challenge` for this verifier.
    pub fn challenge(&self) -> String {
        s256_challenge(self.0.expose_secret())
    }

    /// The verifier text, for the token request only.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// `BASE64URL-ENCODE(SHA256(ASCII(verifier)))` without padding (RFC 7636 4.2, method S256).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A random `state` for one authorization request: 24 random bytes in base64url (32 characters).
pub fn random_state() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        // RFC 7636 Appendix B: the verifier and the S256 challenge it must give.
        let v = CodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(v.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn generated_verifiers_are_valid_and_distinct() {
        let a = CodeVerifier::generate();
        let b = CodeVerifier::generate();
        let text = a.secret().expose_secret();
        assert_eq!(text.len(), 64);
        CodeVerifier::new(text).unwrap();
        assert_ne!(text, b.secret().expose_secret());
        assert_eq!(a.challenge().len(), 43);
        assert!(!format!("{a:?}").contains(text));
        assert_eq!(random_state().len(), 32);
        assert_ne!(random_state(), random_state());
    }

    #[test]
    fn verifier_rules() {
        assert_eq!(
            CodeVerifier::new(&"a".repeat(42)).unwrap_err(),
            PkceError::Length(42)
        );
        assert_eq!(
            CodeVerifier::new(&"a".repeat(129)).unwrap_err(),
            PkceError::Length(129)
        );
        CodeVerifier::new(&"a".repeat(43)).unwrap();
        CodeVerifier::new(&"~._-Az09".repeat(16)).unwrap();
        assert_eq!(
            CodeVerifier::new(&format!("{}+", "a".repeat(50))).unwrap_err(),
            PkceError::Character
        );
    }
}
