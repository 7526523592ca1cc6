//! What crosses a node's task queue, protected in the application because Temporal does not
//! authenticate workers (doc/architecture/0010-hosts-that-lie.md): any host that reaches the
//! frontend can poll another host's queue or complete its activities.
//!
//! - A command to a node is **sealed** for that node's X25519 key (an ephemeral key agreement,
//!   HKDF-SHA256, ChaCha20-Poly1305): only that node can read it. It is **signed** by the control
//!   plane (Ed25519, a key of its published JWKS): no host can write one.
//! - A node's reply is **signed** with the node's Ed25519 credential over the command's fresh
//!   challenge: no other host can write one, and an old reply cannot answer a new command. The
//!   workflow checks it ([`NodeCall::open`]) before it acts on it.
//!
//! Every signed message starts with its own label, so no signature is valid for another purpose.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared_ids::{InstanceId, NodeId};

use crate::vocabulary::activity;
use crate::{SessionInput, SessionReport, WorkloadReport, WorkloadSpec, WorkloadStatus};

const COMMAND_LABEL: &str = "gpuaas-node-command.v1";
const REPORT_LABEL: &str = "gpuaas-node-report.v1";
const OUTPUT_LABEL: &str = "gpuaas-node-output.v1";

/// A command for one node: readable by that node only, written by the control plane only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCommand {
    pub node_id: NodeId,
    /// The activity it is for: a command sealed for one activity is refused by another.
    pub activity: String,
    /// 16 random bytes (base64url), fresh per command: the reply signs it.
    pub challenge: String,
    /// The sender's one-time X25519 public key (base64url).
    pub ephemeral_key: String,
    /// The command's JSON, encrypted (base64url, tag appended).
    pub ciphertext: String,
    /// Key id (JWKS `kid`) of the control-plane key that signed.
    pub signer: String,
    /// The control plane's X25519 key (base64url) that workload output in the reply is sealed
    /// for ([`SealedText`]), so output never sits in a history in plaintext. Signed with the rest.
    #[serde(default)]
    pub reply_key: String,
    pub signature: String,
}

/// Text only the control plane can read (a workload's last output in a node's reply): sealed
/// like a command, for the control plane's reply key, bound to a context (the instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedText {
    /// The control-plane key (JWKS `kid`) whose derived reply key it is sealed for.
    pub key_id: String,
    pub ephemeral_key: String,
    pub ciphertext: String,
}

/// A node's signed reply to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    pub node_id: NodeId,
    pub activity: String,
    pub challenge: String,
    /// The reply's JSON.
    pub body: String,
    pub signature: String,
}

/// A sealed command and what its reply must be signed with: the output of the control-plane
/// step that sealed it, so the workflow can check the reply without a key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCall {
    pub command: SealedCommand,
    /// The node's Ed25519 public key (base64url) when the command was sealed.
    pub node_key: String,
}

/// A command's plaintext type, its activity and its reply type.
pub trait NodeCommand: Serialize + DeserializeOwned {
    const ACTIVITY: &'static str;
    type Reply: Serialize + DeserializeOwned;
}

/// Wait until the instance's workload has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitRunning(pub InstanceId);

/// Stop the instance's workload, whatever is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopWorkload(pub InstanceId);

/// List every workload the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListWorkloads;

impl NodeCommand for WorkloadSpec {
    const ACTIVITY: &'static str = activity::START_WORKLOAD;
    type Reply = WorkloadStatus;
}
impl NodeCommand for AwaitRunning {
    const ACTIVITY: &'static str = activity::AWAIT_WORKLOAD_RUNNING;
    type Reply = WorkloadStatus;
}
impl NodeCommand for StopWorkload {
    const ACTIVITY: &'static str = activity::STOP_WORKLOAD;
    type Reply = WorkloadStatus;
}
impl NodeCommand for SessionInput {
    const ACTIVITY: &'static str = activity::SESSION;
    type Reply = SessionReport;
}
impl NodeCommand for ListWorkloads {
    const ACTIVITY: &'static str = activity::LIST_WORKLOADS;
    type Reply = Vec<WorkloadReport>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the command is for node {0}, not this one")]
    WrongNode(NodeId),
    #[error("the command is for {got}, not {expected}")]
    WrongActivity { expected: String, got: String },
    #[error("the command is signed by unknown control-plane key {0}")]
    UnknownSigner(String),
    #[error("the command's signature is not the control plane's")]
    BadSignature,
    #[error("the command cannot be decrypted with this node's key")]
    Undecryptable,
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

/// Why a workflow refused a node's reply. Nothing is released on a refused reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the reply to {activity} on node {node_id} failed verification: {why}")]
pub struct ForgedReport {
    pub node_id: NodeId,
    pub activity: String,
    pub why: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str, what: &str) -> Result<Vec<u8>, EnvelopeError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| EnvelopeError::Malformed(format!("{what} is not base64url")))
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], EnvelopeError> {
    bytes
        .try_into()
        .map_err(|_| EnvelopeError::Malformed(format!("{what} is not 32 bytes")))
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the system RNG works");
    out
}

/// The AEAD key of one message: HKDF-SHA256 over the X25519 shared secret, bound to both public
/// keys and to the challenge. Each message has its own ephemeral key, so a zero nonce is unique.
fn message_key(
    label: &str,
    shared: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
    challenge: &[u8],
) -> LessSafeKey {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, challenge);
    let info = [label.as_bytes(), ephemeral, recipient];
    let prk = salt.extract(shared);
    let okm = prk
        .expand(&info, &CHACHA20_POLY1305)
        .expect("HKDF output of one AEAD key");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// Encrypts `plain` for `recipient` (X25519) with a one-time key: the ephemeral public key and
/// the ciphertext (tag appended), both base64url. `salt` and `aad` bind it to its use.
fn seal_for(
    label: &str,
    recipient: &[u8],
    salt: &[u8],
    aad: &[u8],
    mut plain: Vec<u8>,
) -> Result<(String, String), EnvelopeError> {
    let recipient = x25519_dalek::PublicKey::from(key32(recipient, "recipient key")?);
    let secret = x25519_dalek::StaticSecret::from(random::<32>());
    let ephemeral = x25519_dalek::PublicKey::from(&secret);
    let shared = secret.diffie_hellman(&recipient);
    if !shared.was_contributory() {
        return Err(EnvelopeError::Malformed(
            "the recipient key is a low-order point".into(),
        ));
    }
    let key = message_key(
        label,
        shared.as_bytes(),
        ephemeral.as_bytes(),
        recipient.as_bytes(),
        salt,
    );
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(aad),
        &mut plain,
    )
    .expect("sealing fits");
    Ok((b64(ephemeral.as_bytes()), b64(&plain)))
}

/// The inverse of [`seal_for`], with the recipient's secret.
fn open_with(
    label: &str,
    secret: &x25519_dalek::StaticSecret,
    (ephemeral, ciphertext): (&str, &str),
    salt: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let ephemeral =
        x25519_dalek::PublicKey::from(key32(&unb64(ephemeral, "ephemeral key")?, "ephemeral key")?);
    let shared = secret.diffie_hellman(&ephemeral);
    let recipient = x25519_dalek::PublicKey::from(secret);
    let key = message_key(
        label,
        shared.as_bytes(),
        ephemeral.as_bytes(),
        recipient.as_bytes(),
        salt,
    );
    let mut buf = unb64(ciphertext, "ciphertext")?;
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| EnvelopeError::Undecryptable)?;
    Ok(plain.to_vec())
}

fn aad(node: NodeId, activity: &str, challenge: &str) -> Vec<u8> {
    format!("{COMMAND_LABEL}\n{node}\n{activity}\n{challenge}").into_bytes()
}

impl SealedCommand {
    /// What the control plane signs.
    pub fn signing_message(&self) -> Vec<u8> {
        format!(
            "{COMMAND_LABEL}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.node_id,
            self.activity,
            self.challenge,
            self.ephemeral_key,
            self.ciphertext,
            self.signer,
            self.reply_key
        )
        .into_bytes()
    }

    /// Seals `command` for `node` (its X25519 public key) and signs it with `sign`, which
    /// returns the signature of the `signer` key over the message. `reply_key` (X25519, of the
    /// same control-plane key) is what workload output in the reply is sealed for.
    pub fn seal<C: NodeCommand>(
        node: NodeId,
        node_encryption_key: &[u8],
        command: &C,
        (signer, reply_key): (&str, &[u8]),
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let challenge_bytes = random::<16>();
        let challenge = b64(&challenge_bytes);
        let (ephemeral_key, ciphertext) = seal_for(
            COMMAND_LABEL,
            node_encryption_key,
            &challenge_bytes,
            &aad(node, C::ACTIVITY, &challenge),
            serde_json::to_vec(command).expect("commands serialise"),
        )?;
        let mut sealed = Self {
            node_id: node,
            activity: C::ACTIVITY.to_string(),
            challenge,
            ephemeral_key,
            ciphertext,
            signer: signer.to_string(),
            reply_key: b64(reply_key),
            signature: String::new(),
        };
        sealed.signature = b64(&sign(&sealed.signing_message()));
        Ok(sealed)
    }

    /// Checks and opens a command on the node: for this node, for this activity, signed by a
    /// trusted control-plane key (`trusted(kid)` gives its Ed25519 public key), readable with
    /// this node's X25519 secret.
    pub fn open<C: NodeCommand>(
        &self,
        node: NodeId,
        node_secret: &x25519_dalek::StaticSecret,
        trusted: impl FnOnce(&str) -> Option<Vec<u8>>,
    ) -> Result<C, EnvelopeError> {
        if self.node_id != node {
            return Err(EnvelopeError::WrongNode(self.node_id));
        }
        if self.activity != C::ACTIVITY {
            return Err(EnvelopeError::WrongActivity {
                expected: C::ACTIVITY.into(),
                got: self.activity.clone(),
            });
        }
        let signer_key = trusted(&self.signer)
            .ok_or_else(|| EnvelopeError::UnknownSigner(self.signer.clone()))?;
        let signature = unb64(&self.signature, "signature")?;
        UnparsedPublicKey::new(&ED25519, &signer_key)
            .verify(&self.signing_message(), &signature)
            .map_err(|_| EnvelopeError::BadSignature)?;
        let plain = open_with(
            COMMAND_LABEL,
            node_secret,
            (&self.ephemeral_key, &self.ciphertext),
            &unb64(&self.challenge, "challenge")?,
            &aad(node, &self.activity, &self.challenge),
        )?;
        serde_json::from_slice(&plain).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

impl SignedReport {
    fn message(node: NodeId, activity: &str, challenge: &str, body: &str) -> Vec<u8> {
        format!("{REPORT_LABEL}\n{node}\n{activity}\n{challenge}\n{body}").into_bytes()
    }

    /// The node's reply to `command`, signed with the node's credential key.
    pub fn sign<T: Serialize>(
        command: &SealedCommand,
        reply: &T,
        sign: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Self {
        let body = serde_json::to_string(reply).expect("replies serialise");
        let signature = b64(&sign(&Self::message(
            command.node_id,
            &command.activity,
            &command.challenge,
            &body,
        )));
        Self {
            node_id: command.node_id,
            activity: command.activity.clone(),
            challenge: command.challenge.clone(),
            body,
            signature,
        }
    }
}

impl SealedText {
    /// Seals `text` for the control plane's reply key `recipient` (X25519) of key `key_id`,
    /// bound to `context` (the instance it is the output of).
    pub fn seal(
        recipient: &[u8],
        key_id: &str,
        context: &str,
        text: &str,
    ) -> Result<Self, EnvelopeError> {
        let (ephemeral_key, ciphertext) = seal_for(
            OUTPUT_LABEL,
            recipient,
            context.as_bytes(),
            format!("{OUTPUT_LABEL}\n{context}").as_bytes(),
            text.as_bytes().to_vec(),
        )?;
        Ok(Self {
            key_id: key_id.to_string(),
            ephemeral_key,
            ciphertext,
        })
    }

    /// The text, with the reply key's secret, for the same context.
    pub fn open(
        &self,
        secret: &x25519_dalek::StaticSecret,
        context: &str,
    ) -> Result<String, EnvelopeError> {
        let plain = open_with(
            OUTPUT_LABEL,
            secret,
            (&self.ephemeral_key, &self.ciphertext),
            context.as_bytes(),
            format!("{OUTPUT_LABEL}\n{context}").as_bytes(),
        )?;
        String::from_utf8(plain).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

impl NodeCall {
    /// The reply's content, if the node that was asked signed it for this very command.
    /// Deterministic (a pure signature check), so workflows may call it.
    pub fn open<C: NodeCommand>(&self, report: &SignedReport) -> Result<C::Reply, ForgedReport> {
        let forged = |why: &str| ForgedReport {
            node_id: self.command.node_id,
            activity: self.command.activity.clone(),
            why: why.to_string(),
        };
        if self.command.activity != C::ACTIVITY {
            return Err(forged("the call was sealed for another activity"));
        }
        if report.node_id != self.command.node_id
            || report.activity != self.command.activity
            || report.challenge != self.command.challenge
        {
            return Err(forged("it answers another node, activity or command"));
        }
        let key = URL_SAFE_NO_PAD
            .decode(&self.node_key)
            .map_err(|_| forged("the node key is not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(&report.signature)
            .map_err(|_| forged("the signature is not base64url"))?;
        let message = SignedReport::message(
            report.node_id,
            &report.activity,
            &report.challenge,
            &report.body,
        );
        UnparsedPublicKey::new(&ED25519, &key)
            .verify(&message, &signature)
            .map_err(|_| forged("the signature is not the node's"))?;
        serde_json::from_str(&report.body).map_err(|e| forged(&format!("unreadable body: {e}")))
    }
}

/// A fresh X25519 secret (a node's encryption key).
pub fn new_encryption_secret() -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from(random::<32>())
}

/// What the control plane's reply key is derived for (`TokenKeys::derived_secret`).
pub const REPLY_KEY_PURPOSE: &str = "gpuaas-node-reply-key.v1";

/// The public half of a reply key given as its 32 secret bytes.
pub fn reply_key_public(secret: [u8; 32]) -> [u8; 32] {
    encryption_public_key(&x25519_dalek::StaticSecret::from(secret))
}

/// Opens workload output with the reply key's 32 secret bytes.
pub fn open_output(
    sealed: &SealedText,
    secret: [u8; 32],
    context: &str,
) -> Result<String, EnvelopeError> {
    sealed.open(&x25519_dalek::StaticSecret::from(secret), context)
}

/// The public half of a node's encryption key, as registration sends it.
pub fn encryption_public_key(secret: &x25519_dalek::StaticSecret) -> [u8; 32] {
    x25519_dalek::PublicKey::from(secret).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair() -> Ed25519KeyPair {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
    }

    struct Fixture {
        node: NodeId,
        node_secret: x25519_dalek::StaticSecret,
        node_pair: Ed25519KeyPair,
        control_plane: Ed25519KeyPair,
    }

    fn fixture() -> Fixture {
        Fixture {
            node: NodeId::new(),
            node_secret: new_encryption_secret(),
            node_pair: pair(),
            control_plane: pair(),
        }
    }

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            instance_id: InstanceId::new(),
            command: "train --token=TOP-SECRET".into(),
            gpu_indices: vec![0, 1],
            gpu_uuids: vec!["GPU-a".into(), "GPU-b".into()],
        }
    }

    impl Fixture {
        fn call(&self, spec: &WorkloadSpec) -> NodeCall {
            let public = x25519_dalek::PublicKey::from(&self.node_secret);
            let command =
                SealedCommand::seal(self.node, public.as_bytes(), spec, ("cp1", &[9; 32]), |m| {
                    self.control_plane.sign(m).as_ref().to_vec()
                })
                .unwrap();
            NodeCall {
                command,
                node_key: b64(self.node_pair.public_key().as_ref()),
            }
        }

        fn trusted(&self) -> impl FnOnce(&str) -> Option<Vec<u8>> + '_ {
            |kid| (kid == "cp1").then(|| self.control_plane.public_key().as_ref().to_vec())
        }
    }

    #[test]
    fn a_sealed_command_hides_its_content_and_opens_only_on_its_node() {
        let f = fixture();
        let spec = spec();
        let call = f.call(&spec);
        let wire = serde_json::to_string(&call.command).unwrap();
        assert!(
            !wire.contains("TOP-SECRET"),
            "plaintext on the wire: {wire}"
        );
        let opened: WorkloadSpec = call
            .command
            .open(f.node, &f.node_secret, f.trusted())
            .unwrap();
        assert_eq!(opened, spec);

        // Another host, even one told it is that node, has the wrong secret.
        let other = new_encryption_secret();
        assert_eq!(
            call.command
                .open::<WorkloadSpec>(f.node, &other, f.trusted())
                .unwrap_err(),
            EnvelopeError::Undecryptable
        );
        // Another node id: refused before any crypto.
        assert!(matches!(
            call.command
                .open::<WorkloadSpec>(NodeId::new(), &f.node_secret, f.trusted()),
            Err(EnvelopeError::WrongNode(_))
        ));
        // The same envelope offered as another activity.
        assert!(matches!(
            call.command
                .open::<StopWorkload>(f.node, &f.node_secret, f.trusted()),
            Err(EnvelopeError::WrongActivity { .. })
        ));
    }

    #[test]
    fn a_command_not_signed_by_the_control_plane_is_refused() {
        let f = fixture();
        let mut call = f.call(&spec());
        // A rogue seals its own command (the node's encryption key is public) and signs it.
        let rogue = pair();
        let public = x25519_dalek::PublicKey::from(&f.node_secret);
        let forged =
            SealedCommand::seal(f.node, public.as_bytes(), &spec(), ("cp1", &[9; 32]), |m| {
                rogue.sign(m).as_ref().to_vec()
            })
            .unwrap();
        assert_eq!(
            forged
                .open::<WorkloadSpec>(f.node, &f.node_secret, f.trusted())
                .unwrap_err(),
            EnvelopeError::BadSignature
        );
        // An unknown key id.
        assert!(matches!(
            forged.open::<WorkloadSpec>(f.node, &f.node_secret, |_| None),
            Err(EnvelopeError::UnknownSigner(_))
        ));
        // A signed envelope whose ciphertext was swapped.
        call.command.ciphertext = forged.ciphertext.clone();
        assert_eq!(
            call.command
                .open::<WorkloadSpec>(f.node, &f.node_secret, f.trusted())
                .unwrap_err(),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn sealed_output_opens_only_with_the_reply_key_and_for_its_instance() {
        let reply = new_encryption_secret();
        let public = encryption_public_key(&reply);
        let sealed = SealedText::seal(&public, "cp1", "instance-a", "TOP-SECRET output").unwrap();
        assert!(
            !serde_json::to_string(&sealed)
                .unwrap()
                .contains("TOP-SECRET")
        );
        assert_eq!(
            sealed.open(&reply, "instance-a").unwrap(),
            "TOP-SECRET output"
        );
        assert!(
            sealed.open(&reply, "instance-b").is_err(),
            "another instance's context"
        );
        assert!(sealed.open(&new_encryption_secret(), "instance-a").is_err());
    }

    #[test]
    fn only_the_nodes_own_signature_on_this_commands_challenge_is_accepted() {
        let f = fixture();
        let call = f.call(&spec());
        let reply = WorkloadStatus::Running { pid: 42 };
        let good = SignedReport::sign(&call.command, &reply, |m| {
            f.node_pair.sign(m).as_ref().to_vec()
        });
        assert_eq!(call.open::<WorkloadSpec>(&good).unwrap(), reply);

        // Signed by another host's key.
        let rogue = pair();
        let forged = SignedReport::sign(&call.command, &WorkloadStatus::Unknown, |m| {
            rogue.sign(m).as_ref().to_vec()
        });
        assert!(call.open::<WorkloadSpec>(&forged).is_err());

        // A genuine reply to an earlier command (replayed).
        let earlier = f.call(&spec());
        let old = SignedReport::sign(&earlier.command, &WorkloadStatus::Unknown, |m| {
            f.node_pair.sign(m).as_ref().to_vec()
        });
        assert!(call.open::<WorkloadSpec>(&old).is_err());

        // A genuine reply whose body was changed.
        let mut tampered = good.clone();
        tampered.body = serde_json::to_string(&WorkloadStatus::Unknown).unwrap();
        assert!(call.open::<WorkloadSpec>(&tampered).is_err());
    }
}
