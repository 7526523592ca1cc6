//! Access tokens: short-lived JWTs signed with Ed25519 (`EdDSA`), each naming its key (`kid`).
//! Keys rotate: the newest key signs, every key still listed verifies, and all public keys are
//! published as a JWKS. Validation is strict: the algorithm is pinned, `exp`, `nbf`, `iss`,
//! `aud` and `sub` are required, and a token naming an unknown key is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The login session (refresh-token family) the token belongs to.
    pub sid: String,
}

/// Why a token was refused; the API answers 401 for each alike.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token has no key id")]
    NoKeyId,
    #[error("token names an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

struct Key {
    kid: String,
    public: Vec<u8>,
    decoding: DecodingKey,
    /// Only the keys this process holds privately can sign; published old keys only verify.
    signing: Option<(EncodingKey, Ed25519KeyPair)>,
    /// The root of secrets derived from this private key ([`TokenKeys::derived_secret`]).
    seed: [u8; 32],
}

/// Name of the key an empty key directory gets; operators add later keys with later names.
const INITIAL_KEY: &str = "00000000T000000Z";

pub struct TokenKeys {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway_s: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// A new Ed25519 private key, as PKCS#8 (v2) DER.
pub fn generate_pkcs8() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("the system RNG works")
        .as_ref()
        .to_vec()
}

impl TokenKeys {
    /// Keys from PKCS#8 DER private keys, newest last (the last one signs).
    pub fn from_pkcs8(
        private_keys: &[Vec<u8>],
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
    ) -> anyhow_like::Result<Self> {
        let mut keys = Vec::new();
        for der in private_keys {
            let pair = Ed25519KeyPair::from_pkcs8(der)
                .map_err(|e| anyhow_like::Error(format!("not an Ed25519 PKCS#8 key: {e}")))?;
            let public = pair.public_key().as_ref().to_vec();
            let mut hasher = Sha256::new();
            hasher.update(b"gpuaas-key-derivation.v1");
            hasher.update(der);
            keys.push(Key {
                kid: key_id(&public),
                decoding: DecodingKey::from_ed_der(&public),
                public,
                signing: Some((EncodingKey::from_ed_der(der), pair)),
                seed: hasher.finalize().into(),
            });
        }
        if keys.is_empty() {
            return Err(anyhow_like::Error("no signing key".into()));
        }
        Ok(Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl,
            leeway_s: 5,
        })
    }

    /// Keys for a process that signs but issues no access tokens (the worker signs node
    /// commands with the same keys the API publishes in its JWKS).
    pub fn load_signer(dir: &Path) -> anyhow_like::Result<Self> {
        Self::load_dir(dir, "gpuaas", "gpuaas", Duration::ZERO)
    }

    /// One fresh key, held only in memory (tokens die with the process).
    pub fn ephemeral(issuer: &str, audience: &str, access_ttl: Duration) -> Self {
        Self::from_pkcs8(&[generate_pkcs8()], issuer, audience, access_ttl).expect("fresh key")
    }

    /// Keys from a directory of `*.key` files (base64 PKCS#8), in name order, the last signing.
    /// An empty or missing directory gets one new key, written with mode 0600.
    pub fn load_dir(
        dir: &Path,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
    ) -> anyhow_like::Result<Self> {
        std::fs::create_dir_all(dir).map_err(anyhow_like::io(dir))?;
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(anyhow_like::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "key"))
            .collect();
        names.sort();
        if names.is_empty() {
            // A fixed name, so processes starting together on an empty directory (the API and
            // the worker) agree on one key: the first link wins, the others read it.
            let path = dir.join(format!("{INITIAL_KEY}.key"));
            let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
            write_private(&tmp, &generate_pkcs8())?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(anyhow_like::io(&path)(e)),
            }
            names.push(path);
        }
        let mut ders = Vec::new();
        for path in &names {
            let text = std::fs::read_to_string(path).map_err(anyhow_like::io(path))?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| anyhow_like::Error(format!("{}: {e}", path.display())))?;
            ders.push(der);
        }
        Self::from_pkcs8(&ders, issuer, audience, access_ttl)
    }

    fn signing_key(&self) -> &Key {
        self.keys.last().expect("at least one key")
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A new access token for `user` in login session `session`.
    pub fn issue_access(&self, user: Uuid, session: Uuid) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.to_string(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
            jti: Uuid::now_v7().to_string(),
            sid: session.to_string(),
        };
        let key = self.signing_key();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let (encoding, _) = key.signing.as_ref().expect("the newest key signs");
        jsonwebtoken::encode(&header, &claims, encoding).expect("EdDSA signing")
    }

    /// Validates a token: signature by a listed key, algorithm, expiry, not-before, issuer and
    /// audience.
    pub fn validate(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_s;
        Ok(jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)?.claims)
    }

    /// The public keys, as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": URL_SAFE_NO_PAD.encode(&k.public),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// A 32-byte secret for `purpose`, derived (HKDF-SHA256) from the private key `kid`, or the
    /// newest: every process holding the key directory derives the same one, so no second key
    /// file is needed (the workers' reply key for sealed workload output).
    pub fn derived_secret(&self, kid: Option<&str>, purpose: &str) -> Option<(String, [u8; 32])> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid == kid)?,
            None => self.signing_key(),
        };
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"gpuaas-derived.v1");
        let prk = salt.extract(&key.seed);
        let info = [purpose.as_bytes()];
        let okm = prk.expand(&info, ring::hkdf::HKDF_SHA256).ok()?;
        let mut out = [0u8; 32];
        okm.fill(&mut out).ok()?;
        Some((key.kid.clone(), out))
    }

    /// The id of the key [`TokenKeys::sign`] signs with.
    pub fn signing_key_id(&self) -> String {
        self.signing_key().kid.clone()
    }

    /// Signs `message` with the newest key (audit chain anchors, node commands): `(kid,
    /// signature)`.
    pub fn sign(&self, message: &[u8]) -> (String, Vec<u8>) {
        let key = self.signing_key();
        let (_, pair) = key.signing.as_ref().expect("the newest key signs");
        (key.kid.clone(), pair.sign(message).as_ref().to_vec())
    }

    /// Checks a signature made by [`TokenKeys::sign`] with any listed key.
    pub fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> bool {
        self.keys.iter().find(|k| k.kid == kid).is_some_and(|k| {
            UnparsedPublicKey::new(&ED25519, &k.public)
                .verify(message, signature)
                .is_ok()
        })
    }
}

/// A key's id: the first 16 characters of the base64url SHA-256 of its public key.
pub fn key_id(public: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(public))[..16].to_string()
}

fn write_private(path: &Path, der: &[u8]) -> anyhow_like::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(anyhow_like::io(path))?;
    file.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(der)
            .as_bytes(),
    )
    .map_err(anyhow_like::io(path))
}

/// A plain error for key loading (the domain keeps no anyhow dependency).
pub mod anyhow_like {
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |e| Error(format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::ephemeral(
            "https://issuer.test",
            "gpuaas-api",
            Duration::from_secs(900),
        )
    }

    #[test]
    fn issued_tokens_validate() {
        let k = keys();
        let user = Uuid::now_v7();
        let claims = k.validate(&k.issue_access(user, Uuid::now_v7())).unwrap();
        assert_eq!(claims.sub, user.to_string());
    }

    #[test]
    fn another_keyset_and_tampering_are_refused() {
        let a = keys();
        let b = keys();
        let token = a.issue_access(Uuid::now_v7(), Uuid::now_v7());
        assert!(matches!(b.validate(&token), Err(TokenError::UnknownKey)));
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[2] = "";
        assert!(a.validate(&parts.join(".")).is_err(), "stripped signature");
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_newest() {
        let old = generate_pkcs8();
        let before = TokenKeys::from_pkcs8(
            std::slice::from_ref(&old),
            "i",
            "a",
            Duration::from_secs(60),
        )
        .unwrap();
        let token = before.issue_access(Uuid::now_v7(), Uuid::now_v7());
        let after =
            TokenKeys::from_pkcs8(&[old, generate_pkcs8()], "i", "a", Duration::from_secs(60))
                .unwrap();
        assert!(after.validate(&token).is_ok());
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 2);
        let fresh = after.issue_access(Uuid::now_v7(), Uuid::now_v7());
        assert!(matches!(
            before.validate(&fresh),
            Err(TokenError::UnknownKey)
        ));
        let (kid, sig) = after.sign(b"head");
        assert!(after.verify(&kid, b"head", &sig));
        assert!(!after.verify(&kid, b"other", &sig));
    }

    #[test]
    fn keys_load_from_a_directory_and_persist() {
        let dir = std::env::temp_dir().join(format!("gpuaas-keys-{}", Uuid::new_v4()));
        let a = TokenKeys::load_dir(&dir, "i", "a", Duration::from_secs(60)).unwrap();
        let b = TokenKeys::load_dir(&dir, "i", "a", Duration::from_secs(60)).unwrap();
        let token = a.issue_access(Uuid::now_v7(), Uuid::now_v7());
        assert!(b.validate(&token).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
