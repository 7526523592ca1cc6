//! The control plane's public keys, which every command to this node must be signed with:
//! the API's JSON Web Key Set (`/.well-known/jwks.json`), read at start and again when a command
//! names a key the agent does not know yet (a rotation), at most once per `REFRESH_EVERY`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REFRESH_EVERY: Duration = Duration::from_secs(5);

pub struct ControlPlaneKeys {
    url: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Vec<u8>>,
    fetched_at: Option<Instant>,
}

#[derive(serde::Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(serde::Deserialize)]
struct Jwk {
    kid: String,
    kty: String,
    crv: Option<String>,
    x: Option<String>,
}

impl ControlPlaneKeys {
    pub fn new(api_url: &str, http: reqwest::Client) -> Self {
        Self {
            url: format!("{}/.well-known/jwks.json", api_url.trim_end_matches('/')),
            http,
            state: Mutex::new(State::default()),
        }
    }

    /// Keys given up front, never fetched (tests that run activities without an API).
    pub fn pinned(keys: HashMap<String, Vec<u8>>) -> Self {
        Self {
            url: String::new(),
            http: reqwest::Client::new(),
            state: Mutex::new(State {
                keys,
                fetched_at: Some(Instant::now() + Duration::from_secs(365 * 24 * 3600)),
            }),
        }
    }

    /// The Ed25519 public key of `kid`, fetching the key set again if it is unknown.
    pub async fn get(&self, kid: &str) -> Option<Vec<u8>> {
        if let Some(key) = self.known(kid) {
            return Some(key);
        }
        let due = self
            .state
            .lock()
            .expect("keys poisoned")
            .fetched_at
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if due && let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, url = %self.url, "could not read the control plane's keys");
        }
        self.known(kid)
    }

    fn known(&self, kid: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .expect("keys poisoned")
            .keys
            .get(kid)
            .cloned()
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        let jwks: Jwks = self
            .http
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
            .filter_map(|k| {
                let x =
                    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, k.x?)
                        .ok()?;
                Some((k.kid, x))
            })
            .collect();
        let mut state = self.state.lock().expect("keys poisoned");
        state.keys = keys;
        state.fetched_at = Some(Instant::now());
        Ok(())
    }
}
