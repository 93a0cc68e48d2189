//! Server configuration (SPEC §3): embedded defaults → YAML file → `EVENTOPS_*` environment →
//! command-line flags, into one typed struct that refuses unknown keys. A bad value stops
//! start-up with one line naming the key. Secrets never appear in `Debug` or in messages.

// Text settings may be written as bare numbers or booleans (`password: 123456`, `db: 2024`),
// as in definitions: their text is kept.
use engine::document::stringish::{deserialize as text, vec as texts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where `--configFile` points when not given; a missing file there means embedded defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/eventops/config.yaml";

/// A secret value: deserializes from a string or a bare scalar (`password: 123456`), prints
/// as `***`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(#[serde(deserialize_with = "text")] pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("***")
        }
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// HTTP port (0 = any free port).
    pub port: u16,
    /// Address to listen on.
    #[serde(deserialize_with = "text")]
    pub bind_address: String,
    /// Debug logging.
    pub debug: bool,
    /// The address tasks call back to; defaults to `http://127.0.0.1:{port}`.
    #[serde(deserialize_with = "text")]
    pub callback_address: String,
    /// Folder for the default SQLite database and the generated token signature.
    pub data_dir: PathBuf,
    /// The key that encrypts actuator secrets at rest (32 bytes: 64 hex digits or base64);
    /// generated and kept in `dataDir/secret-key` when empty.
    pub secret_key: Secret,
    pub database: DatabaseConfig,
    /// The seed's MySQL block; means `database.url = mysql://…` when `database.url` is unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MysqlConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minio: Option<MinioConfig>,
    pub event: EventConfig,
    pub uc: UcConfig,
    pub http: HttpConfig,
    pub tunnel: TunnelConfig,
    pub actuators: ActuatorsConfig,
    pub runs: RunsConfig,
    pub cluster: ClusterConfig,
}

/// Several servers on one database (docs/deployment.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ClusterConfig {
    /// How long a run's lease lasts (renewed every fifth of it): a server that dies has its
    /// runs taken over by the others within this plus a fifth. 3..=600.
    pub lease_secs: u64,
    /// This server's own URL as the other servers and `eoctl cluster status` show it; empty:
    /// the callback address.
    pub address: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            lease_secs: 10,
            address: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RunsConfig {
    /// Runs that ended more than this many days ago (fractions allowed) are deleted, with
    /// their tasks and the files they made; 0 (the default) keeps them all.
    pub retention_days: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ActuatorsConfig {
    /// The unix sockets on this server's host that `docker: {socket: PATH}` actuators may
    /// name (anyone who can apply an actuator drives what is behind it).
    #[serde(deserialize_with = "texts")]
    pub docker_sockets: Vec<String>,
}

impl Default for ActuatorsConfig {
    fn default() -> Self {
        ActuatorsConfig {
            docker_sockets: vec!["/var/run/docker.sock".into(), "/run/docker.sock".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TunnelConfig {
    /// How long a task waits for its offline tunnel client before it errors, in seconds.
    pub offline_wait_secs: u64,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            offline_wait_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`, `mysql://USER:PASS@HOST:PORT/DB` or `postgres://…`.
    pub url: Secret,
    /// Connections in the pool.
    pub pool_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MysqlConfig {
    #[serde(deserialize_with = "text")]
    pub user: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(deserialize_with = "text")]
    pub address: String,
    #[serde(default = "mysql_port")]
    pub port: u16,
    #[serde(deserialize_with = "text")]
    pub db: String,
}

fn mysql_port() -> u16 {
    3306
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MinioConfig {
    #[serde(deserialize_with = "text")]
    pub server: String,
    #[serde(deserialize_with = "text")]
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default)]
    pub ssl: bool,
    /// The bucket of every file value; created at start when missing.
    #[serde(deserialize_with = "text")]
    pub base_path: String,
    /// The region requests are signed for (MinIO and most servers accept any).
    #[serde(default = "default_region", deserialize_with = "text")]
    pub region: String,
    /// The largest file `POST /api/file/upload` (`eoctl event send --attach`) takes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
}

impl MinioConfig {
    /// The engine's view of this section.
    pub fn file_config(&self) -> engine::files::FileConfig {
        engine::files::FileConfig {
            server: self.server.clone(),
            ssl: self.ssl,
            access_key: self.access_key_id.clone(),
            secret_key: self.secret_access_key.0.clone(),
            bucket: self.base_path.clone(),
            region: self.region.clone(),
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

/// 5 GiB: the most one S3 `PUT` stores.
fn default_max_upload() -> u64 {
    5 << 30
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EventConfig {
    pub process: ProcessConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ProcessConfig {
    pub buffer_size: usize,
    pub work_num: usize,
    pub trigger_cache_size: u64,
    /// Seconds between polls of the events table (the safety net; sends are pushed at once).
    pub loop_load_event_interval: u64,
    /// Seconds after which a `processing` event is considered abandoned and taken over.
    pub processing_over_time: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            buffer_size: 500,
            work_num: 5,
            trigger_cache_size: 10_000,
            loop_load_event_interval: 10,
            processing_over_time: 120,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UcConfig {
    /// Seconds a login token stays valid.
    pub login_token_expires_time: u64,
    /// HMAC key of login tokens; generated and kept in `dataDir` when empty.
    pub login_token_signature: Secret,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
}

/// Password hashing and failed-attempt limits (logins, password changes, tunnel handshakes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LimitsConfig {
    /// Password hashes computed at once (argon2id, 19 MiB each); 0 = one per core.
    pub hash_threads: usize,
    /// Password checks waiting for a hasher; beyond it the answer is 503 with Retry-After.
    pub hash_queue: usize,
    /// Failures from one address (all accounts) before that address is locked.
    pub address_failures: u32,
    /// Failures on one account from one address before the account is locked for that address.
    pub account_failures: u32,
    /// Failures on one account from all addresses before it is locked for every address that
    /// has failed on it (addresses that never failed on it still get in).
    pub account_failures_any_address: u32,
    /// The first lock lasts 1 s and doubles with each further failure, up to this many seconds.
    pub max_lock_secs: u64,
    /// Failures are forgotten after this many seconds without another one.
    pub forget_after_secs: u64,
    /// Seconds a token's user (existence and token generation) is remembered between checks.
    pub user_cache_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            hash_threads: 0,
            hash_queue: 16,
            address_failures: 20,
            account_failures: 5,
            account_failures_any_address: 100,
            max_lock_secs: 900,
            forget_after_secs: 3600,
            user_cache_secs: 5,
        }
    }
}

impl Default for UcConfig {
    fn default() -> Self {
        UcConfig {
            login_token_expires_time: 30 * 24 * 3600,
            login_token_signature: Secret::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuthConfig {
    /// Paths that need no login token.
    #[serde(deserialize_with = "texts")]
    pub white_url_list: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            white_url_list: vec![
                "/api/user/register".into(),
                "/api/user/login".into(),
                "/api/dialer/connect".into(),
                "/api/pipeline/callback".into(),
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HttpConfig {
    /// Largest accepted request body (definitions, logins), in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted event, in bytes.
    pub max_event_bytes: usize,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
            workers: 0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8080,
            bind_address: "0.0.0.0".into(),
            debug: false,
            callback_address: String::new(),
            data_dir: PathBuf::from("data"),
            secret_key: Secret::default(),
            database: DatabaseConfig {
                url: Secret::default(),
                pool_size: 8,
            },
            mysql: None,
            minio: None,
            event: EventConfig::default(),
            uc: UcConfig::default(),
            http: HttpConfig::default(),
            tunnel: TunnelConfig::default(),
            actuators: ActuatorsConfig::default(),
            runs: RunsConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// How an environment value is read.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Scalar,
    List,
}

/// Every key an `EVENTOPS_*` variable can set. The variable name is the key path in upper
/// snake case: `event.process.bufferSize` ← `EVENTOPS_EVENT_PROCESS_BUFFER_SIZE`.
const ENV_KEYS: &[(&str, Kind)] = &[
    ("port", Kind::Scalar),
    ("bindAddress", Kind::Text),
    ("debug", Kind::Scalar),
    ("callbackAddress", Kind::Text),
    ("dataDir", Kind::Text),
    ("secretKey", Kind::Text),
    ("database.url", Kind::Text),
    ("database.poolSize", Kind::Scalar),
    ("mysql.user", Kind::Text),
    ("mysql.password", Kind::Text),
    ("mysql.address", Kind::Text),
    ("mysql.port", Kind::Scalar),
    ("mysql.db", Kind::Text),
    ("minio.server", Kind::Text),
    ("minio.accessKeyId", Kind::Text),
    ("minio.secretAccessKey", Kind::Text),
    ("minio.ssl", Kind::Scalar),
    ("minio.basePath", Kind::Text),
    ("minio.region", Kind::Text),
    ("minio.maxUploadBytes", Kind::Scalar),
    ("event.process.bufferSize", Kind::Scalar),
    ("event.process.workNum", Kind::Scalar),
    ("event.process.triggerCacheSize", Kind::Scalar),
    ("event.process.loopLoadEventInterval", Kind::Scalar),
    ("event.process.processingOverTime", Kind::Scalar),
    ("uc.loginTokenExpiresTime", Kind::Scalar),
    ("uc.loginTokenSignature", Kind::Text),
    ("uc.auth.whiteUrlList", Kind::List),
    ("uc.limits.hashThreads", Kind::Scalar),
    ("uc.limits.hashQueue", Kind::Scalar),
    ("uc.limits.addressFailures", Kind::Scalar),
    ("uc.limits.accountFailures", Kind::Scalar),
    ("uc.limits.accountFailuresAnyAddress", Kind::Scalar),
    ("uc.limits.maxLockSecs", Kind::Scalar),
    ("uc.limits.forgetAfterSecs", Kind::Scalar),
    ("uc.limits.userCacheSecs", Kind::Scalar),
    ("http.maxBodyBytes", Kind::Scalar),
    ("http.maxEventBytes", Kind::Scalar),
    ("http.workers", Kind::Scalar),
    ("tunnel.offlineWaitSecs", Kind::Scalar),
    ("actuators.dockerSockets", Kind::List),
    ("runs.retentionDays", Kind::Scalar),
    ("cluster.leaseSecs", Kind::Scalar),
    ("cluster.address", Kind::Text),
];

/// `event.process.bufferSize` → `EVENTOPS_EVENT_PROCESS_BUFFER_SIZE`.
pub fn env_name(path: &str) -> String {
    let mut out = String::from("EVENTOPS");
    for seg in path.split('.') {
        out.push('_');
        for (i, c) in seg.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

/// A configuration problem, one line, naming the key (never its secret value).
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// `EVENTOPS_*` variables that are not server settings but are read by the other binaries or
/// the tests, so that a shell which sets them for those is not warned about.
const OTHER_ENV: &[&str] = &["EVENTOPS_CLIENT_TOKEN", "EVENTOPS_MACHINE_LABEL"];
const OTHER_ENV_PREFIXES: &[&str] = &["EVENTOPS_TEST_"];

impl Config {
    /// Loads the configuration. `path` is `--configFile`; `explicit` says the user gave it (then
    /// a missing file is an error; the default path may be absent).
    pub fn load(
        path: &Path,
        explicit: bool,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_with_warnings(path, explicit, env).map(|(c, _)| c)
    }

    /// [`Config::load`], with what start-up should warn about: `EVENTOPS_*` variables that name
    /// no key (each with the closest key's variable, if one is close), which are ignored.
    pub fn load_with_warnings(
        path: &Path,
        explicit: bool,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let env: Vec<(String, String)> = env.collect();
        let warnings = unknown_env(env.iter().map(|(k, _)| k.as_str()));
        // the keys set from the environment, to name their variable in an error
        let from_env: Vec<(&str, String)> = ENV_KEYS
            .iter()
            .map(|(key, _)| (*key, env_name(key)))
            .filter(|(_, name)| env.iter().any(|(k, _)| k == name))
            .collect();
        let config = Self::load_tree(path, explicit, &env).map_err(|e| name_env(e, &from_env))?;
        Ok((config, warnings))
    }

    fn load_tree(
        path: &Path,
        explicit: bool,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut tree = match std::fs::read_to_string(path) {
            Ok(text) => {
                let v: Value = serde_norway::from_str(&text)
                    .map_err(|e| ConfigError(format!("{}: not valid YAML: {e}", path.display())))?;
                match v {
                    Value::Null => Value::Object(Default::default()),
                    Value::Object(_) => v,
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: expected a mapping of keys at the top",
                            path.display()
                        )))
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Value::Object(Default::default())
            }
            Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
        };
        for (key, kind) in ENV_KEYS {
            let name = env_name(key);
            let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) else {
                continue;
            };
            let value = match kind {
                Kind::Text => Value::String(raw.clone()),
                Kind::Scalar => serde_norway::from_str::<Value>(raw)
                    .unwrap_or_else(|_| Value::String(raw.clone())),
                Kind::List => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ),
            };
            set_path(&mut tree, key, value).map_err(|e| ConfigError(format!("{name}: {e}")))?;
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let msg = redact_serde(&e.into_inner().to_string());
            ConfigError(format!("key {path}: {msg}"))
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let url = self.database_url();
        engine::store::Backend::from_url(&url)
            .map_err(|_| ConfigError("key database.url: unsupported scheme (expected sqlite://, mysql:// or postgres://)".into()))?;
        let scheme_ok = self.callback_address.starts_with("http://")
            || self.callback_address.starts_with("https://");
        if !self.callback_address.is_empty() && !scheme_ok {
            return Err(ConfigError(
                "key callbackAddress: must start with http:// or https://".into(),
            ));
        }
        let p = &self.event.process;
        if p.buffer_size == 0 {
            return Err(ConfigError(
                "key event.process.bufferSize: must be at least 1".into(),
            ));
        }
        if p.work_num == 0 {
            return Err(ConfigError(
                "key event.process.workNum: must be at least 1".into(),
            ));
        }
        if p.loop_load_event_interval == 0 {
            return Err(ConfigError(
                "key event.process.loopLoadEventInterval: must be at least 1".into(),
            ));
        }
        if self.uc.login_token_expires_time == 0 {
            return Err(ConfigError(
                "key uc.loginTokenExpiresTime: must be at least 1".into(),
            ));
        }
        if self.tunnel.offline_wait_secs > 7 * 24 * 3600 {
            return Err(ConfigError(
                "key tunnel.offlineWaitSecs: at most 604800 seconds (7 days)".into(),
            ));
        }
        let l = &self.uc.limits;
        if l.address_failures == 0 || l.account_failures == 0 || l.account_failures_any_address == 0
        {
            return Err(ConfigError(
                "key uc.limits: failure allowances must be at least 1".into(),
            ));
        }
        if l.max_lock_secs == 0 || l.max_lock_secs > 86_400 {
            return Err(ConfigError(
                "key uc.limits.maxLockSecs: must be 1 to 86400".into(),
            ));
        }
        if l.forget_after_secs < l.max_lock_secs {
            return Err(ConfigError(
                "key uc.limits.forgetAfterSecs: must be at least maxLockSecs".into(),
            ));
        }
        if l.hash_threads > 1024 || l.hash_queue > 1_000_000 || l.user_cache_secs > 3600 {
            return Err(ConfigError(
                "key uc.limits: hashThreads at most 1024, hashQueue at most 1000000, userCacheSecs at most 3600".into(),
            ));
        }
        if self.http.max_body_bytes < 1024 || self.http.max_event_bytes < 1024 {
            return Err(ConfigError(
                "key http: body limits must be at least 1024 bytes".into(),
            ));
        }
        let r = self.runs.retention_days;
        if !r.is_finite() || !(0.0..=36_500.0).contains(&r) {
            return Err(ConfigError(format!(
                "key runs.retentionDays: {r} is not between 0 and 36500"
            )));
        }
        if !(3..=600).contains(&self.cluster.lease_secs) {
            return Err(ConfigError(format!(
                "key cluster.leaseSecs: {} is not between 3 and 600",
                self.cluster.lease_secs
            )));
        }
        if let Some(m) = &self.minio {
            if m.server.is_empty() || m.base_path.is_empty() {
                return Err(ConfigError(
                    "key minio: server and basePath are required".into(),
                ));
            }
        }
        Ok(())
    }

    /// The database URL: `database.url`, else the seed's `mysql` block, else SQLite in `dataDir`.
    pub fn database_url(&self) -> String {
        if !self.database.url.0.is_empty() {
            return self.database.url.0.clone();
        }
        if let Some(m) = &self.mysql {
            let pw = if m.password.0.is_empty() {
                String::new()
            } else {
                format!(":{}", pct(&m.password.0))
            };
            return format!(
                "mysql://{}{pw}@{}:{}/{}",
                pct(&m.user),
                m.address,
                m.port,
                m.db
            );
        }
        format!("sqlite://{}", self.data_dir.join("eventops.db").display())
    }

    /// The callback address tasks use.
    pub fn callback(&self, bound_port: u16) -> String {
        if self.callback_address.is_empty() {
            format!("http://127.0.0.1:{bound_port}")
        } else {
            self.callback_address.trim_end_matches('/').to_string()
        }
    }

    /// The login-token key: configured, or read from (or created in) `dataDir/token-signature`.
    pub fn token_signature(&self) -> Result<String, ConfigError> {
        if !self.uc.login_token_signature.0.is_empty() {
            return Ok(self.uc.login_token_signature.0.clone());
        }
        let file = self.data_dir.join("token-signature");
        match std::fs::read_to_string(&file) {
            Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().to_string()),
            Ok(_) | Err(_) => {}
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| ConfigError(format!("dataDir {}: {e}", self.data_dir.display())))?;
        let key: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        write_private(&file, &key).map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        Ok(key)
    }

    /// The key that seals actuator secrets, and where it came from (for messages): the
    /// `secretKey` setting, else `dataDir/secret-key`, created (0600) on first start. A key file
    /// that is there but unreadable or malformed is an error, never replaced.
    pub fn secret_key(&self) -> Result<(engine::secrets::SecretBox, String), ConfigError> {
        use engine::secrets::SecretBox;
        if !self.secret_key.0.is_empty() {
            let key = SecretBox::from_text(&self.secret_key.0)
                .map_err(|e| ConfigError(format!("key secretKey: {e}")))?;
            return Ok((key, "the secretKey setting".into()));
        }
        let file = self.data_dir.join("secret-key");
        let source = format!("the key file {}", file.display());
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let key = SecretBox::from_text(&text)
                    .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
                return Ok((key, source));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConfigError(format!("{}: {e}", file.display()))),
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| ConfigError(format!("dataDir {}: {e}", self.data_dir.display())))?;
        let text = SecretBox::generate_key_text();
        write_private(&file, &format!("{text}\n"))
            .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        let key = SecretBox::from_text(&text)
            .map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        log::info!("generated the actuator secret key in {}", file.display());
        Ok((key, source))
    }

    /// Makes `dataDir` private to the server's user: the folder 0700 (created so if missing),
    /// the files of ours in it 0600. Returns what had to be tightened (older versions left
    /// them 0755/0644).
    pub fn secure_data_dir(&self) -> Result<Vec<PathBuf>, ConfigError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = &self.data_dir;
        let err =
            |p: &Path, e: std::io::Error| ConfigError(format!("dataDir {}: {e}", p.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(dir, e))?;
        let mut tightened = Vec::new();
        if engine::secrets::restrict_mode(dir, 0o700).map_err(|e| err(dir, e))? {
            tightened.push(dir.clone());
        }
        for name in [
            "token-signature",
            "secret-key",
            "instance-id",
            "known_hosts",
        ] {
            let p = dir.join(name);
            if engine::secrets::restrict_mode(&p, 0o600).map_err(|e| err(&p, e))? {
                tightened.push(p);
            }
        }
        Ok(tightened)
    }

    /// This server's identity as the owner of runs: kept in `dataDir/instance-id`.
    pub fn instance_id(&self) -> Result<String, ConfigError> {
        let file = self.data_dir.join("instance-id");
        if let Ok(s) = std::fs::read_to_string(&file) {
            let s = s.trim();
            if !s.is_empty() && s.len() <= 64 {
                return Ok(s.to_string());
            }
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| ConfigError(format!("dataDir {}: {e}", self.data_dir.display())))?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "eventops".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let id = format!("{host}-{:08x}", rand::random::<u32>());
        write_private(&file, &id).map_err(|e| ConfigError(format!("{}: {e}", file.display())))?;
        Ok(id)
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.minio.as_ref().map_or(0, |m| m.max_upload_bytes)
    }

    pub fn files_enabled(&self) -> bool {
        self.minio.is_some()
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, content)
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// serde's messages quote the offending value; drop it so a secret typed in the wrong place
/// never reaches a log.
fn redact_serde(msg: &str) -> String {
    match (msg.find(" \""), msg.rfind('"')) {
        (Some(a), Some(b)) if b > a + 1 && msg.starts_with("invalid") => {
            format!("{}{}", &msg[..a], &msg[b + 1..])
        }
        _ => msg.to_string(),
    }
}

/// `key PATH: …` → `key PATH (from EVENTOPS_VAR): …` when the environment set that key (or,
/// for a message about a section, keys in it).
fn name_env(e: ConfigError, from_env: &[(&str, String)]) -> ConfigError {
    let Some(rest) = e.0.strip_prefix("key ") else {
        return e;
    };
    let Some((path, msg)) = rest.split_once(": ") else {
        return e;
    };
    let key = path.split('[').next().unwrap_or(path);
    let vars: Vec<&str> = from_env
        .iter()
        .filter(|(k, _)| *k == key || k.starts_with(&format!("{key}.")))
        .map(|(_, name)| name.as_str())
        .collect();
    if vars.is_empty() {
        return e;
    }
    ConfigError(format!("key {path} (from {}): {msg}", vars.join(", ")))
}

/// A warning for each `EVENTOPS_*` variable that names no key.
fn unknown_env<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let known: Vec<(String, &str)> = ENV_KEYS
        .iter()
        .map(|(key, _)| (env_name(key), *key))
        .collect();
    let mut warnings = Vec::new();
    for name in names {
        let ours = name.starts_with("EVENTOPS_")
            && !OTHER_ENV.contains(&name)
            && !OTHER_ENV_PREFIXES.iter().any(|p| name.starts_with(p));
        if !ours || known.iter().any(|(k, _)| k == name) {
            continue;
        }
        let closest = known
            .iter()
            .map(|(var, key)| (edit_distance(name, var), var, key))
            .min_by_key(|(d, _, _)| *d)
            .filter(|(d, var, _)| *d <= 3.max(var.len() / 5));
        warnings.push(match closest {
            Some((_, var, key)) => format!(
                "{name} names no configuration key and is ignored; did you mean {var} (key {key})?"
            ),
            None => format!(
                "{name} names no configuration key and is ignored (see `eventops default-config`)"
            ),
        });
    }
    warnings.sort();
    warnings
}

/// Levenshtein distance, over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn set_path(tree: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut cur = tree;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(format!(
                "{} is not a mapping in the file",
                segs[..i].join(".")
            ));
        };
        if i + 1 == segs.len() {
            map.insert((*seg).to_string(), value);
            return Ok(());
        }
        cur = map
            .entry((*seg).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if cur.is_null() {
            *cur = Value::Object(Default::default());
        }
    }
    Ok(())
}

/// The documented default file, as `eventops default-config` prints it.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/config.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        Config::load(
            &p,
            true,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn no_file_means_embedded_defaults() {
        let c = Config::load(
            Path::new("/nonexistent/eventops.yaml"),
            false,
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.database_url(), "sqlite://data/eventops.db");
        assert_eq!(c.callback(8080), "http://127.0.0.1:8080");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e =
            Config::load(Path::new("/nonexistent/x.yaml"), true, std::iter::empty()).unwrap_err();
        assert!(e.0.contains("/nonexistent/x.yaml"), "{e}");
    }

    #[test]
    fn the_documented_default_file_loads() {
        let c = load_str(DEFAULT_CONFIG_YAML, &[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.event.process.work_num, 5);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str(
            "port: 80\nevent:\n  process:\n    bufferSize: 1\n    wokNum: 2\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("event.process") && e.0.contains("wokNum"),
            "{e}"
        );
    }

    #[test]
    fn offline_wait_is_at_most_seven_days() {
        let e = load_str("tunnel:\n  offlineWaitSecs: 18446744073709551615\n", &[]).unwrap_err();
        assert!(
            e.0.contains("tunnel.offlineWaitSecs: at most 604800"),
            "{e}"
        );
        assert!(load_str("tunnel:\n  offlineWaitSecs: 604800\n", &[]).is_ok());
    }

    #[test]
    fn wrong_type_is_named_without_the_value() {
        let e = load_str("uc:\n  loginTokenExpiresTime: hunter2\n", &[]).unwrap_err();
        assert!(e.0.contains("uc.loginTokenExpiresTime"), "{e}");
        assert!(!e.0.contains("hunter2"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load_str(
            "port: 80\n",
            &[
                ("EVENTOPS_PORT", "9090"),
                ("EVENTOPS_DATABASE_URL", "postgres://u:p@h/db"),
                ("EVENTOPS_EVENT_PROCESS_WORK_NUM", "3"),
                ("EVENTOPS_UC_LOGIN_TOKEN_SIGNATURE", "12345"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9090);
        assert_eq!(c.database_url(), "postgres://u:p@h/db");
        assert_eq!(c.event.process.work_num, 3);
        assert_eq!(c.uc.login_token_signature.expose(), "12345");
        let e = load_str("", &[("EVENTOPS_PORT", "eighty")]).unwrap_err();
        assert!(e.0.contains("port"), "{e}");
    }

    #[test]
    fn seed_mysql_block_means_a_mysql_url_and_secrets_stay_hidden() {
        let c = load_str(
            "mysql:\n  user: root\n  password: s3cr@t\n  address: 127.0.0.1\n  port: 3306\n  db: eventops\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.database_url(),
            "mysql://root:s3cr%40t@127.0.0.1:3306/eventops"
        );
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn secret_key_from_the_setting_or_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let mut c = load_str("", &[]).unwrap();
        c.data_dir = data.clone();
        let (k1, src) = c.secret_key().unwrap();
        assert!(src.contains("secret-key"), "{src}");
        let file = data.join("secret-key");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // the same key the next time
        let (k2, _) = c.secret_key().unwrap();
        let sealed = k1.seal("pw", "x").unwrap();
        assert_eq!(k2.open(&sealed, "x").unwrap(), "pw");
        // a damaged file is an error naming it, and is left alone
        std::fs::write(&file, "garbage").unwrap();
        let e = c.secret_key().unwrap_err();
        assert!(e.0.contains("secret-key"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "garbage");
        // the setting wins, is checked, and never printed
        let key = "ab".repeat(32);
        let c = load_str("", &[("EVENTOPS_SECRET_KEY", key.as_str())]).unwrap();
        assert!(c.secret_key().unwrap().1.contains("secretKey"));
        assert!(!format!("{c:?}").contains(&key));
        let c = load_str("secretKey: short\n", &[]).unwrap();
        assert!(c.secret_key().unwrap_err().0.contains("secretKey"));
    }

    /// The seed's config.yaml (eventops-README), pasted as is.
    const SEED_CONFIG: &str = r#"# 启动的端口 (必填)
port: 8080
# 是否是 debug 模式启动
debug: true

# 任务回调的 eventops 地址 (必填)
callbackAddress: http://127.0.0.1:8080

# mysql 连接地址 (必填)
mysql:
  user: root
  password: 123456
  address: 127.0.0.1
  port: 3306
  db: eventops

event:
  process:
    bufferSize: 500
    workNum: 5
    triggerCacheSize: 10000
    loopLoadEventInterval: 300
    processingOverTime: 120

uc:
  loginTokenExpiresTime: 315360000
  loginTokenSignature: MYSQL_SIGNATURE
  auth:
    whiteUrlList:
      - /api/user/register
      - /api/user/login
      - /api/dialer/connect
      - /api/pipeline/callback
"#;

    #[test]
    fn the_seed_config_loads_as_pasted() {
        let c = load_str(SEED_CONFIG, &[]).unwrap();
        assert_eq!(
            c.database_url(),
            "mysql://root:123456@127.0.0.1:3306/eventops"
        );
        assert!(c.debug);
        assert_eq!(c.uc.login_token_signature.expose(), "MYSQL_SIGNATURE");
        // numbers and booleans where text is expected keep their text
        let c = load_str(
            "mysql: {user: 0, password: true, address: 10.0.0.1, db: 2024}
uc: {loginTokenSignature: 12345678}
actuators: {dockerSockets: [1]}
",
            &[],
        )
        .unwrap();
        assert_eq!(c.database_url(), "mysql://0:true@10.0.0.1:3306/2024");
        assert_eq!(c.uc.login_token_signature.expose(), "12345678");
        assert_eq!(c.actuators.docker_sockets, ["1"]);
        // a mapping is still no text, and the message says where
        let e = load_str(
            "mysql: {user: {a: 1}, address: h, db: d}
",
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("key mysql.user: invalid type"), "{e}");
    }

    #[test]
    fn bad_values_from_the_environment_name_the_variable() {
        let e = load_str("", &[("EVENTOPS_PORT", "eighty")]).unwrap_err();
        assert!(e.0.contains("key port (from EVENTOPS_PORT): "), "{e}");
        assert!(!e.0.contains("eighty"), "{e}");
        let e = load_str("", &[("EVENTOPS_EVENT_PROCESS_WORK_NUM", "0")]).unwrap_err();
        assert!(
            e.0.contains("key event.process.workNum (from EVENTOPS_EVENT_PROCESS_WORK_NUM): must be at least 1"),
            "{e}"
        );
        let e = load_str("", &[("EVENTOPS_UC_LIMITS_MAX_LOCK_SECS", "0")]).unwrap_err();
        assert!(
            e.0.contains("(from EVENTOPS_UC_LIMITS_MAX_LOCK_SECS)"),
            "{e}"
        );
        // the same value in the file names the key only
        let e = load_str("port: eighty\n", &[]).unwrap_err();
        assert!(
            e.0.contains("key port: ") && !e.0.contains("EVENTOPS"),
            "{e}"
        );
    }

    #[test]
    fn unknown_environment_variables_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "").unwrap();
        let env = [
            ("EVENTOPS_PROT", "9090"),
            ("EVENTOPS_DATABASE_URL", "sqlite://x.db"),
            ("EVENTOPS_EVENT_PROCESS_WORKNUM", "3"),
            ("EVENTOPS_FROBNICATE", "1"),
            ("EVENTOPS_CLIENT_TOKEN", "t"),
            ("EVENTOPS_MACHINE_LABEL", "web-1"),
            ("EVENTOPS_TEST_MYSQL_URL", "mysql://x"),
            ("HOME", "/root"),
        ];
        let (c, warnings) = Config::load_with_warnings(
            &p,
            true,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(
            warnings,
            [
                "EVENTOPS_EVENT_PROCESS_WORKNUM names no configuration key and is ignored; did you mean EVENTOPS_EVENT_PROCESS_WORK_NUM (key event.process.workNum)?",
                "EVENTOPS_FROBNICATE names no configuration key and is ignored (see `eventops default-config`)",
                "EVENTOPS_PROT names no configuration key and is ignored; did you mean EVENTOPS_PORT (key port)?",
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("event.process.bufferSize"),
            "EVENTOPS_EVENT_PROCESS_BUFFER_SIZE"
        );
        assert_eq!(env_name("database.url"), "EVENTOPS_DATABASE_URL");
    }
}
