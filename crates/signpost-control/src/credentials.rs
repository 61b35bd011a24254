//! Bearer credentials: API tokens (`spt_…`) and setup link tokens (`spl_…`).
//!
//! 256 bits from the OS RNG, base64url; only the SHA-256 is ever stored. The
//! prefix tells the two kinds apart (and lets secret scanners find leaks).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "spt_";
/// Prefix of setup link tokens.
pub const SETUP_LINK_TOKEN_PREFIX: &str = "spl_";
/// Longest bearer value we look at; longer ones are refused unread.
pub const MAX_TOKEN_LEN: usize = 128;

/// A freshly generated bearer token and its hash.
pub struct NewToken {
    /// The token, to hand out once.
    pub token: String,
    /// Its SHA-256, to store.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(<redacted>)")
    }
}

/// Generates a token with `prefix` and 256 random bits.
pub fn generate(prefix: &str) -> NewToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let sha256 = hash(&token);
    NewToken { token, sha256 }
}

/// The SHA-256 of a token, as stored.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = generate(API_TOKEN_PREFIX);
        let b = generate(API_TOKEN_PREFIX);
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("spt_"));
        assert_eq!(a.token.len(), 4 + 43);
        assert_eq!(hash(&a.token), a.sha256);
        assert_eq!(format!("{a:?}"), "NewToken(<redacted>)");
    }
}
