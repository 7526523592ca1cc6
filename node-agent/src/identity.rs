//! The node's identity: an Ed25519 keypair (it signs assertions and every report) and an X25519
//! keypair (commands are sealed for it), generated on the host and kept in the state directory
//! (mode 0600); the private keys never leave the host. The agent joins once with an operator's
//! join token and its public keys, and afterwards proves itself with a short-lived assertion
//! signed by the key (`Authorization: Node <node>.<unix seconds>.<nonce>.<signature>`).
//!
//! Rotation: when the key is older than the rotation age, the agent writes a next pair
//! (`*.next`), registers it with an assertion of the current key, and then renames it into
//! place. A crash in between is safe: a next pair the API already took is tried first.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{Ed25519KeyPair, KeyPair};
use shared_ids::NodeId;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const SIGNING_KEY: &str = "node.key";
const ENCRYPTION_KEY: &str = "node-encryption.key";
const NEXT: &str = ".next";

pub struct Identity {
    pair: Ed25519KeyPair,
    encryption: x25519_dalek::StaticSecret,
    dir: PathBuf,
    /// File suffix of this pair: "" (current) or ".next".
    suffix: &'static str,
}

impl Identity {
    /// The current keys in `dir`, created on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Self::load(dir, "", true).map(|id| id.expect("created"))
    }

    /// The next keys of a rotation in progress, if any (`create`: start one).
    pub fn next(dir: &Path, create: bool) -> anyhow::Result<Option<Self>> {
        Self::load(dir, NEXT, create)
    }

    fn load(dir: &Path, suffix: &'static str, create: bool) -> anyhow::Result<Option<Self>> {
        let Some(der) =
            read_or_create(&dir.join(format!("{SIGNING_KEY}{suffix}")), create, || {
                Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map(|d| d.as_ref().to_vec())
                    .map_err(|_| anyhow::anyhow!("could not generate the node key"))
            })?
        else {
            return Ok(None);
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("{SIGNING_KEY}{suffix} is not an Ed25519 key: {e}"))?;
        let secret = read_or_create(&dir.join(format!("{ENCRYPTION_KEY}{suffix}")), true, || {
            Ok(contract_node::envelope::new_encryption_secret()
                .to_bytes()
                .to_vec())
        })?
        .expect("created");
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| anyhow::anyhow!("{ENCRYPTION_KEY}{suffix} is not a 32-byte key"))?;
        Ok(Some(Self {
            pair,
            encryption: x25519_dalek::StaticSecret::from(secret),
            dir: dir.to_path_buf(),
            suffix,
        }))
    }

    /// Whether the current key is older than `max_age` (0: never rotate).
    pub fn rotation_due(&self, max_age: Duration) -> bool {
        let age = std::fs::metadata(self.dir.join(SIGNING_KEY))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        !max_age.is_zero() && age >= max_age
    }

    /// Makes this (next) pair the current one, after the API took it.
    pub fn commit(self) -> anyhow::Result<Self> {
        for name in [ENCRYPTION_KEY, SIGNING_KEY] {
            let next = self.dir.join(format!("{name}{NEXT}"));
            if next.exists() {
                std::fs::rename(&next, self.dir.join(name))
                    .with_context(|| format!("rename {}", next.display()))?;
            }
        }
        tracing::info!("node keys rotated");
        Ok(Self { suffix: "", ..self })
    }

    /// Forgets a next pair the API never took (so a later rotation starts afresh).
    pub fn discard(self) {
        for name in [SIGNING_KEY, ENCRYPTION_KEY] {
            let _ = std::fs::remove_file(self.dir.join(format!("{name}{}", self.suffix)));
        }
    }

    /// The public key, as registration sends it (base64url).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// The X25519 public key commands are sealed for (base64url).
    pub fn encryption_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(contract_node::envelope::encryption_public_key(
            &self.encryption,
        ))
    }

    pub fn encryption_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.encryption
    }

    /// Signs a report (`contract_node::SignedReport::sign`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The node id the API gave this key at join, if it joined.
    pub fn node_id(&self) -> Option<NodeId> {
        std::fs::read_to_string(self.dir.join("node.id"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn remember(&self, node: NodeId) -> anyhow::Result<()> {
        let path = self.dir.join("node.id");
        std::fs::write(&path, node.to_string()).with_context(|| format!("write {}", path.display()))
    }

    /// A fresh assertion for `node` (the `Authorization: Node …` value, without the scheme).
    pub fn assertion(&self, node: NodeId) -> String {
        let issued_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let nonce = URL_SAFE_NO_PAD.encode(rand_bytes());
        // The same message the API verifies (platform_iam::nodes::Assertion::message).
        let message = format!("gpuaas-node-assertion.v1.{node}.{issued_at}.{nonce}");
        let signature = URL_SAFE_NO_PAD.encode(self.pair.sign(message.as_bytes()).as_ref());
        format!("{node}.{issued_at}.{nonce}.{signature}")
    }
}

/// A key file's bytes (base64 text), created with mode 0600 by `generate` when missing (and
/// `create`).
fn read_or_create(
    path: &Path,
    create: bool,
    generate: impl FnOnce() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(STANDARD.decode(text.trim()).with_context(|| {
                format!("{} is not base64", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let bytes = generate()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("create {}", path.display()))?;
            file.write_all(STANDARD.encode(&bytes).as_bytes())?;
            file.sync_all()?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn rand_bytes() -> [u8; 12] {
    let mut out = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .expect("the system RNG works");
    out
}
