//! Secrets the platform hands out (API keys, refresh tokens, join tokens, invitations): a
//! recognisable prefix, 178 bits of randomness in base62, and a CRC-32 checksum, so a typo or a
//! leaked key is recognisable without a database (in the style of GitHub's tokens). Stored only
//! as a SHA-256 hash: the secrets are random and long, so a fast hash is safe and a lookup is one
//! indexed read.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS: usize = 30; // 30 * log2(62) = 178 bits
const CHECKSUM_CHARS: usize = 6; // 62^6 > 2^32

/// The kinds of secret, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ApiKey,
    RefreshToken,
    JoinToken,
    Invitation,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "gpk_",
            Self::RefreshToken => "gpr_",
            Self::JoinToken => "gpj_",
            Self::Invitation => "gpi_",
        }
    }
}

/// A freshly generated secret: the text (shown once) and its hash (stored).
pub struct NewSecret {
    pub text: String,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSecret(<redacted>)")
    }
}

pub fn generate(kind: SecretKind) -> NewSecret {
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let text = format!("{}{random}{}", kind.prefix(), checksum(&random));
    let hash = hash(&text);
    NewSecret { text, hash }
}

/// Whether `text` is shaped like a secret of `kind` with a valid checksum (no database needed).
pub fn well_formed(kind: SecretKind, text: &str) -> bool {
    let Some(body) = text.strip_prefix(kind.prefix()) else {
        return false;
    };
    if body.len() != RANDOM_CHARS + CHECKSUM_CHARS
        || !body.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_CHARS);
    checksum(random) == sum
}

/// The stored form of a secret.
pub fn hash(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// The part of a secret that may be shown in lists (`gpk_` and 8 characters).
pub fn display_prefix(text: &str) -> String {
    text.chars().take(12).collect()
}

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = generate(SecretKind::ApiKey);
        let b = generate(SecretKind::ApiKey);
        assert!(a.text.starts_with("gpk_") && a.text.len() == 4 + 36);
        assert!(well_formed(SecretKind::ApiKey, &a.text));
        assert_ne!(a.text, b.text);
        assert_eq!(a.hash, hash(&a.text));
        assert!(
            !well_formed(SecretKind::RefreshToken, &a.text),
            "prefix is checked"
        );
    }

    #[test]
    fn a_typo_breaks_the_checksum() {
        let key = generate(SecretKind::ApiKey).text;
        let mut chars: Vec<char> = key.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!well_formed(SecretKind::ApiKey, &typo));
        assert!(!well_formed(SecretKind::ApiKey, &key[..key.len() - 1]));
    }
}
