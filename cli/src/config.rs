//! The `~/.eoctl.yaml` store: the users `eoctl login` logged in as, and which one is current.
//!
//! The file holds bearer tokens, so it is only ever written with mode `0600` (a fresh temporary
//! file created with that mode, then renamed over the old one, which also repairs a file whose
//! mode had been loosened). Its path is `$EOCTL_CONFIG` when set, `~/.eoctl.yaml` otherwise.
//!
//! ```yaml
//! current: kakj
//! users:
//!   - name: kakj
//!     server: http://127.0.0.1:8080
//!     token: eyJ0eXAiOiJKV1Qi...
//!     expiresAt: 1977000000
//! ```
//!
//! There is one entry per user name: logging in again as the same name (on any server)
//! replaces that entry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variable overriding the config file path.
pub const CONFIG_ENV: &str = "EOCTL_CONFIG";

/// Default file name, in the home directory.
const FILE_NAME: &str = ".eoctl.yaml";

/// One logged-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredUser {
    pub name: String,
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`, without a trailing `/`.
    pub server: String,
    pub token: String,
    /// Unix seconds at which the token expires (as the server said at login), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Name of the current user; empty when nobody is logged in.
    #[serde(default)]
    pub current: String,
    #[serde(default)]
    pub users: Vec<StoredUser>,
}

impl Config {
    /// The path of the config file: `$EOCTL_CONFIG`, else `~/.eoctl.yaml`.
    pub fn default_path() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let home = dirs::home_dir().ok_or_else(|| {
            anyhow!("cannot find the home directory; set {CONFIG_ENV} to the config file path")
        })?;
        Ok(home.join(FILE_NAME))
    }

    /// Reads the file; a missing (or empty) file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let cfg: Self = serde_norway::from_str(&text).map_err(|e| {
            anyhow!(
                "config file {} is not valid: {e}; fix it or delete it and run `eoctl login` again",
                path.display()
            )
        })?;
        Ok(cfg)
    }

    /// Writes the file with mode 0600, atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        // Write through a symlink (e.g. a dotfiles manager's) rather than replacing it.
        let target = match fs::canonicalize(path) {
            Ok(p) => p,
            Err(_) => path.to_path_buf(),
        };
        let text = serde_norway::to_string(self).context("cannot serialize the config")?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| FILE_NAME.to_string());
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let result = write_private(&tmp, text.as_bytes()).and_then(|()| {
            fs::rename(&tmp, &target)
                .with_context(|| format!("cannot replace {}", target.display()))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The current user, if any.
    pub fn current_user(&self) -> Option<&StoredUser> {
        if self.current.is_empty() {
            return None;
        }
        self.users.iter().find(|u| u.name == self.current)
    }

    /// Adds or replaces the entry for `user.name` and makes it current.
    pub fn upsert_and_use(&mut self, user: StoredUser) {
        self.current = user.name.clone();
        match self.users.iter_mut().find(|u| u.name == user.name) {
            Some(existing) => *existing = user,
            None => self.users.push(user),
        }
    }

    /// Makes the stored user `name` current.
    pub fn use_user(&mut self, name: &str) -> Result<()> {
        if !self.users.iter().any(|u| u.name == name) {
            if self.users.is_empty() {
                bail!("no stored user \"{name}\": nobody is logged in; run `eoctl login`");
            }
            let known: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
            bail!(
                "no stored user \"{name}\" (stored: {}); run `eoctl login` to add it",
                known.join(", ")
            );
        }
        self.current = name.to_string();
        Ok(())
    }
}

/// Creates `path` (which must not exist) readable and writable by the owner only, and fills it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // The umask can only remove bits, but be explicit in case the file system added some.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(name: &str, server: &str) -> StoredUser {
        StoredUser {
            name: name.into(),
            server: server.into(),
            token: format!("token-{name}"),
            expires_at: Some(42),
        }
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load(&dir.path().join("nope.yaml")).unwrap();
        assert_eq!(cfg, Config::default());
        assert!(cfg.current_user().is_none());
    }

    #[test]
    fn several_users_round_trip_and_switch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eoctl.yaml");
        let mut cfg = Config::default();
        cfg.upsert_and_use(user("kakj", "http://a:8080"));
        cfg.upsert_and_use(user("bob", "http://b:8080"));
        assert_eq!(cfg.current_user().unwrap().name, "bob");
        cfg.save(&path).unwrap();

        let mut back = Config::load(&path).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.users.len(), 2);
        back.use_user("kakj").unwrap();
        back.save(&path).unwrap();
        let again = Config::load(&path).unwrap();
        let cur = again.current_user().unwrap();
        assert_eq!(cur.name, "kakj");
        assert_eq!(cur.server, "http://a:8080");
        assert_eq!(cur.token, "token-kakj");

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("current: kakj"), "{text}");
        assert!(text.contains("expiresAt: 42"), "{text}");
    }

    #[test]
    fn login_again_replaces_the_entry() {
        let mut cfg = Config::default();
        cfg.upsert_and_use(user("kakj", "http://a:8080"));
        cfg.upsert_and_use(user("bob", "http://b:8080"));
        let mut again = user("kakj", "http://c:8080");
        again.token = "new".into();
        cfg.upsert_and_use(again);
        assert_eq!(cfg.users.len(), 2);
        let cur = cfg.current_user().unwrap();
        assert_eq!(
            (cur.server.as_str(), cur.token.as_str()),
            ("http://c:8080", "new")
        );
    }

    #[test]
    fn use_unknown_user_is_an_error_naming_the_known_ones() {
        let mut cfg = Config::default();
        let e = cfg.use_user("ghost").unwrap_err().to_string();
        assert!(e.contains("nobody is logged in"), "{e}");
        cfg.upsert_and_use(user("kakj", "http://a:8080"));
        let e = cfg.use_user("ghost").unwrap_err().to_string();
        assert!(e.contains("\"ghost\"") && e.contains("kakj"), "{e}");
        assert_eq!(cfg.current, "kakj");
    }

    #[cfg(unix)]
    #[test]
    fn file_is_written_with_mode_0600_and_repaired() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eoctl.yaml");
        let mut cfg = Config::default();
        cfg.upsert_and_use(user("kakj", "http://a:8080"));
        cfg.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        cfg.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn saving_through_a_symlink_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("link.yaml");
        fs::write(&real, "").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut cfg = Config::default();
        cfg.upsert_and_use(user("kakj", "http://a:8080"));
        cfg.save(&link).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(Config::load(&real).unwrap(), cfg);
    }

    #[test]
    fn corrupt_file_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eoctl.yaml");
        fs::write(&path, "current: [unclosed\nusers: 3\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("is not valid"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");

        fs::write(&path, "users: 3\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("is not valid") && e.contains("users"), "{e}");
    }

    #[test]
    fn save_creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/eoctl.yaml");
        Config::default().save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }
}
