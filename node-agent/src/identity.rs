//! The node's identity: an Ed25519 keypair generated on the host at first start and kept in the
//! state directory (mode 0600); the private key never leaves the host. The agent joins once with
//! an operator's join token and its public key, and afterwards proves itself with a short-lived
//! assertion signed by the key (`Authorization: Node <node>.<unix seconds>.<nonce>.<signature>`).

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{Ed25519KeyPair, KeyPair};
use shared_ids::NodeId;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct Identity {
    pair: Ed25519KeyPair,
    id_file: PathBuf,
}

impl Identity {
    /// The key in `dir`, created on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let key_file = dir.join("node.key");
        let der = match std::fs::read_to_string(&key_file) {
            Ok(text) => STANDARD
                .decode(text.trim())
                .context("node.key is not base64")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("could not generate the node key"))?
                    .as_ref()
                    .to_vec();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_file)
                    .with_context(|| format!("create {}", key_file.display()))?;
                file.write_all(STANDARD.encode(&der).as_bytes())?;
                der
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", key_file.display())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("node.key is not an Ed25519 key: {e}"))?;
        Ok(Self {
            pair,
            id_file: dir.join("node.id"),
        })
    }

    /// The public key, as registration sends it (base64url).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// The node id the API gave this key at join, if it joined.
    pub fn node_id(&self) -> Option<NodeId> {
        std::fs::read_to_string(&self.id_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn remember(&self, node: NodeId) -> anyhow::Result<()> {
        std::fs::write(&self.id_file, node.to_string())
            .with_context(|| format!("write {}", self.id_file.display()))
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

fn rand_bytes() -> [u8; 12] {
    let mut out = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .expect("the system RNG works");
    out
}
