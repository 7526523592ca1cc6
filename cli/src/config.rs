//! The CLI's config file: named profiles, each an API URL and a credential (a login session or an
//! API key), and optionally the project and org commands act in. `$GPUAAS_CONFIG`, else
//! `$XDG_CONFIG_HOME/gpuaas/config.json`, else `~/.config/gpuaas/config.json`; written with mode
//! 0600 (it holds secrets), replaced atomically, and rewritten under a lock when a session's
//! tokens rotate (two CLIs refreshing one refresh token at once would end the session).
//!
//! ```json
//! {"current": "default",
//!  "profiles": {"default": {"api_url": "http://127.0.0.1:8080", "access_token": "…",
//!               "refresh_token": "gpr_…", "access_expires_at": 1767225600,
//!               "project": "my-project", "org": "0190…"}}}
//! ```

use crate::client::CliError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds at which `access_token` expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<i64>,
    /// The project requests act in (`?project=`, an id or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The org org-scoped commands act in by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Profile {
    /// What kind of credential it holds, for people: never the secret.
    pub fn credential_kind(&self) -> &'static str {
        if self.api_key.is_some() {
            "api key"
        } else if self.refresh_token.is_some() || self.access_token.is_some() {
            "login"
        } else {
            "none"
        }
    }

    pub fn clear_credentials(&mut self) {
        self.api_key = None;
        self.access_token = None;
        self.refresh_token = None;
        self.access_expires_at = None;
    }
}

/// Where the config file is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("GPUAAS_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("gpuaas").join("config.json")
}

impl Config {
    /// Reads the file; a missing file is an empty config, an unreadable one an error.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Other(format!(
                    "{} is not a valid config file: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Writes the file (mode 0600, its folder 0700 when created), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail =
            |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(fail)?;
        }
        let mut text = serde_json::to_string_pretty(self).expect("the config serialises");
        text.push('\n');
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        // A temp file left by a killed run may have any mode (and an open mode applies only to
        // a file the call creates): remove it, then create the file anew, 0600 from its first
        // byte, never an existing one.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
        let written = (|| {
            let mut file = open_private(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(fail)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
}

/// Creates `path` (it must not exist) readable and writable by its owner only: the mode is set
/// by the `open` that creates it, so no other user can open it in between.
#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// An exclusive lock on the config file (on a `.lock` file beside it), held while a profile's
/// tokens are read, rotated and written back. Released on drop.
pub struct Lock {
    _file: std::fs::File,
}

pub fn lock(path: &Path) -> Result<Lock, CliError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let fail =
        |e: std::io::Error| CliError::Other(format!("cannot lock {}: {e}", lock_path.display()));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(fail)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(fail)?;
    file.lock().map_err(fail)?;
    Ok(Lock { _file: file })
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_privately_and_keeps_what_it_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("config.json");
        assert!(
            Config::load(&path).unwrap().profiles.is_empty(),
            "missing: empty"
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"current": "a", "future": 1,
                "profiles": {"a": {"api_url": "http://x", "refresh_token": "gpr_1", "color": "red"}}}"#,
        )
        .unwrap();
        let mut cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.profile("a").unwrap().credential_kind(), "login");
        cfg.profiles.get_mut("a").unwrap().clear_credentials();
        cfg.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"future\": 1") && text.contains("\"color\": \"red\""),
            "{text}"
        );
        assert!(!text.contains("gpr_1"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _lock = lock(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap().current.as_deref(), Some("a"));
    }

    /// A profile file others could read (an older CLI's, an editor's copy) and a temp file a
    /// killed run left with a loose mode: saving replaces both with a file that is 0600 from its
    /// creation, and leaves no temp file behind.
    #[cfg(unix)]
    #[test]
    fn a_save_never_writes_secrets_into_a_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let loose = std::fs::Permissions::from_mode(0o644);
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, loose.clone()).unwrap();
        let tmp = dir
            .path()
            .join(format!("config.json.tmp{}", std::process::id()));
        std::fs::write(&tmp, "stale").unwrap();
        std::fs::set_permissions(&tmp, loose).unwrap();
        let mut cfg = Config::default();
        cfg.profiles.insert(
            "dev".into(),
            Profile {
                refresh_token: Some("gpr_secret".into()),
                ..Profile::default()
            },
        );
        cfg.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(!tmp.exists(), "the temp file is renamed into place");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("gpr_secret")
        );
        // The primitive itself: it creates with 0600 and refuses an existing file.
        let fresh = dir.path().join("fresh");
        drop(open_private(&fresh).unwrap());
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(
            open_private(&fresh).is_err(),
            "never reuses an existing file"
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(Config::load(&path).is_err());
    }
}
