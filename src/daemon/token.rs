//! Stateless IMDSv2 session tokens: `HMAC-SHA256(key, listener || expiry)`, with the key kept in
//! the state directory (mode 0600). A token therefore stays valid across a daemon restart (the
//! Rust SDK caches its token for up to 6 h and never asks for a new one after a 401), and a token
//! minted for one listener is refused by every other.
//!
//! Wire form: `1` + 16 hex digits of the expiry (Unix seconds) + 40 hex digits of the truncated
//! MAC, 57 characters, all header-safe.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const VERSION: char = '1';
const MAC_BYTES: usize = 20;
const TOKEN_LEN: usize = 1 + 16 + MAC_BYTES * 2;

/// Smallest and largest TTL a client may ask for, in seconds (as EC2).
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 1..=21600;

/// The HMAC key, kept as a keyed HMAC state (cloned per token, which spares re-deriving the inner
/// and outer pads on every request). `Debug` does not print it.
pub struct TokenKey(Hmac<Sha256>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([REDACTED])")
    }
}

impl TokenKey {
    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(Hmac::<Sha256>::new_from_slice(&bytes).expect("any key length"))
    }

    /// Reads the key at `path`, or creates it (32 random bytes, mode 0600) when it is missing or
    /// unusable. Loosened permissions are tightened.
    pub fn load_or_create(path: &Path) -> std::io::Result<TokenKey> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(TokenKey::from_bytes(key));
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "IMDS token key has the wrong size; replacing it (outstanding tokens become invalid)")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(std::io::Error::other)?;
        crate::paths::write_private_file(path, &key)?;
        Ok(TokenKey::from_bytes(key))
    }

    fn mac(&self, listener: &str, expiry: u64) -> [u8; MAC_BYTES] {
        let mut mac = self.0.clone();
        mac.update(b"credvend-imds-token-v1\0");
        mac.update(listener.as_bytes());
        mac.update(b"\0");
        mac.update(&expiry.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }

    /// A token for `listener` valid for `ttl` seconds from `now` (Unix seconds).
    pub fn issue(&self, listener: &str, now: u64, ttl: u64) -> String {
        let expiry = now.saturating_add(ttl);
        format!(
            "{VERSION}{expiry:016x}{}",
            hex::encode(self.mac(listener, expiry))
        )
    }

    /// Whether `token` was issued for `listener` and has not expired at `now`. Constant-time in
    /// the MAC comparison.
    pub fn verify(&self, listener: &str, token: &str, now: u64) -> bool {
        if token.len() != TOKEN_LEN || !token.starts_with(VERSION) || !token.is_ascii() {
            return false;
        }
        let Ok(expiry) = u64::from_str_radix(&token[1..17], 16) else {
            return false;
        };
        let mut given = [0u8; MAC_BYTES];
        if hex::decode_to_slice(&token[17..], &mut given).is_err() {
            return false;
        }
        let expected = self.mac(listener, expiry);
        let mac_ok: bool = expected.ct_eq(&given).into();
        mac_ok && now < expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes([7; 32])
    }

    #[test]
    fn issued_tokens_verify_until_expiry() {
        let k = key();
        let t = k.issue("127.0.0.1:9254", 1000, 60);
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(k.verify("127.0.0.1:9254", &t, 1000));
        assert!(k.verify("127.0.0.1:9254", &t, 1059));
        assert!(!k.verify("127.0.0.1:9254", &t, 1060));
    }

    #[test]
    fn tokens_are_bound_to_listener_and_key() {
        let t = key().issue("127.0.0.1:9254", 1000, 60);
        assert!(!key().verify("127.0.0.1:9255", &t, 1000));
        assert!(!TokenKey::from_bytes([8; 32]).verify("127.0.0.1:9254", &t, 1000));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let k = key();
        let t = k.issue("l", 1000, 21600);
        // Extending the expiry invalidates the MAC.
        let mut forged = t.clone();
        forged.replace_range(1..17, &format!("{:016x}", 99_999_999u64));
        assert!(!k.verify("l", &forged, 1000));
        for bad in [
            "",
            "x",
            &t[..TOKEN_LEN - 1],
            &format!("{t}0"),
            &t.replace('1', "2"),
            "1zzzzzzzzzzzzzzzz0000000000000000000000000000000000000000",
        ] {
            assert!(!k.verify("l", bad, 1000), "{bad:?}");
        }
        let multibyte = format!("1{}", "é".repeat(28));
        assert!(!k.verify("l", &multibyte, 1000));
    }

    #[test]
    fn key_persists_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = TokenKey::load_or_create(&path).unwrap();
        let b = TokenKey::load_or_create(&path).unwrap();
        let t = a.issue("l", 1, 100);
        assert!(b.verify("l", &t, 2), "the same key is read back");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(format!("{a:?}"), "TokenKey([REDACTED])");
    }
}
