//! File values (SPEC §8): objects in one S3 bucket (MinIO, or any server speaking the S3 API).
//!
//! - A file value is an object **key**. Passing it along (a context, a child pipeline's input,
//!   a pipeline output) passes the key: nothing is copied.
//! - Tasks move files themselves, with **presigned URLs** in their `run.sh` (curl or wget):
//!   a GET per file the commands use, a PUT per file output. The actuator gets no credential,
//!   only URLs for one object each that expire with the task.
//! - The server signs its own requests the same way (rusty-s3 presigns, reqwest sends): one
//!   signing code for everything, and the S3 server checks it each time.
//!
//! Keys name their owner where eventops made them, so a user cannot reach another user's files
//! by naming their key ([`KeyOwner`]): `pipeline-<run>/task-<task>/<output>` (a task output),
//! `uploads/<user>/<random>/<file name>` (uploaded with `eoctl event send --attach`). Other keys
//! are the operator's objects (put in the bucket by other means; the seed's events name such
//! keys) and may be used by anyone who may send events.

use futures_util::TryStreamExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::Duration;

/// The `minio:` section of the configuration, as the engine uses it.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// `host:port` (or a URL) of the S3 server; actuators must reach the same address.
    pub server: String,
    pub ssl: bool,
    pub access_key: String,
    pub secret_key: String,
    /// The bucket (`basePath`).
    pub bucket: String,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The S3 server could not be reached or did not answer in time.
    #[error("the file store at {server} is unreachable: {why}")]
    Unreachable { server: String, why: String },
    /// The S3 server answered with an error.
    #[error("the file store refused {what}: HTTP {status}{detail}")]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<FileError> for crate::Error {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Invalid(m) => crate::Error::Validation(m),
            e @ FileError::Unreachable { .. } => crate::Error::Unavailable(e.to_string()),
            e => crate::Error::Internal(e.to_string()),
        }
    }
}

/// Who may use an object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner<'a> {
    /// `pipeline-<id>/…`: the owner of run `id`.
    Run(i64),
    /// `uploads/<user>/…`: that user (and the runs of the events that user sends).
    Upload(&'a str),
    /// Anything else: the operator's objects.
    Shared,
}

/// The longest key S3 allows.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks that `key` can name an object (no empty, `.` or `..` segment, no control character,
/// not too long) and says whose it is.
pub fn parse_key(key: &str) -> Result<KeyOwner<'_>, String> {
    if key.is_empty() {
        return Err("a file key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("a file key is longer than {MAX_KEY_BYTES} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(format!("file key {key:?} holds a control character"));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "file key {key:?} has an empty, '.' or '..' segment"
        ));
    }
    let mut parts = key.splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    if let Some(id) = first.strip_prefix("pipeline-") {
        return id
            .parse::<i64>()
            .map(KeyOwner::Run)
            .map_err(|_| format!("file key {key:?}: pipeline-<id> needs a number"));
    }
    if first == "uploads" {
        return match (parts.next(), parts.next()) {
            (Some(user), Some(_)) => Ok(KeyOwner::Upload(user)),
            _ => Err(format!(
                "file key {key:?}: uploads/<user>/<name> is made by the server"
            )),
        };
    }
    Ok(KeyOwner::Shared)
}

/// Where a task's file output goes (SPEC §8).
pub fn output_key(pipeline_id: i64, task_id: i64, name: &str) -> String {
    format!("pipeline-{pipeline_id}/task-{task_id}/{name}")
}

/// The prefix of every object a run made.
pub fn run_prefix(pipeline_id: i64) -> String {
    format!("pipeline-{pipeline_id}/")
}

/// A new key for a file `user` uploads: `uploads/<user>/<random>/<name>`. The name keeps its
/// characters (spaces, quotes: a task gets it back as it was) but loses any folder part.
pub fn upload_key(user: &str, file_name: &str) -> Result<String, String> {
    let name = file_name.rsplit(['/', '\\']).next().unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." || name.chars().any(char::is_control) {
        return Err(format!("file name {file_name:?} cannot name an object"));
    }
    let random: u64 = rand::random();
    let key = format!("uploads/{user}/{random:016x}/{name}");
    parse_key(&key)?;
    Ok(key)
}

/// The file name a key's object gets in a task's work directory: its last segment.
pub fn local_name(key: &str) -> &str {
    key.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("file")
}

/// The S3 bucket of this server.
pub struct FileStore {
    bucket: Bucket,
    creds: Credentials,
    http: reqwest::Client,
    server: String,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("server", &self.server)
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

/// The longest validity S3 allows a presigned URL.
pub const MAX_URL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Small requests (HEAD, DELETE, LIST, bucket checks) get this long in all.
const SMALL_REQUEST: Duration = Duration::from_secs(30);

impl FileStore {
    pub fn new(c: &FileConfig) -> Result<FileStore, String> {
        let server = c.server.trim_end_matches('/');
        let endpoint = if server.contains("://") {
            server.to_string()
        } else {
            format!("{}://{server}", if c.ssl { "https" } else { "http" })
        };
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| format!("minio.server {server:?}: {e}"))?;
        let bucket = Bucket::new(url, UrlStyle::Path, c.bucket.clone(), c.region.clone())
            .map_err(|e| format!("minio.basePath {:?}: {e}", c.bucket))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("the file store's HTTP client: {e}"))?;
        Ok(FileStore {
            bucket,
            creds: Credentials::new(c.access_key.clone(), c.secret_key.clone()),
            http,
            server: server.to_string(),
        })
    }

    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    /// A URL that downloads `key` for `ttl` (at most 7 days).
    pub fn presign_get(&self, key: &str, ttl: Duration) -> String {
        self.bucket
            .get_object(Some(&self.creds), key)
            .sign(ttl.min(MAX_URL_VALIDITY))
            .to_string()
    }

    /// A URL that uploads `key` (a plain `PUT` of the bytes) for `ttl` (at most 7 days).
    pub fn presign_put(&self, key: &str, ttl: Duration) -> String {
        self.bucket
            .put_object(Some(&self.creds), key)
            .sign(ttl.min(MAX_URL_VALIDITY))
            .to_string()
    }

    /// Sends a request; no answer is [`FileError::Unreachable`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, FileError> {
        req.send().await.map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: reqwest::Error) -> FileError {
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why = format!("{why}: {s}");
            src = s.source();
        }
        FileError::Unreachable {
            server: self.server.clone(),
            why,
        }
    }

    async fn refused(what: String, r: reqwest::Response) -> FileError {
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        // S3 errors: <Error><Code>NoSuchBucket</Code><Message>…</Message>…
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = body.find(&open)? + open.len();
            let end = body[start..].find(&format!("</{tag}>"))?;
            Some(body[start..start + end].to_string())
        };
        let detail = match (field("Code"), field("Message")) {
            (Some(c), Some(m)) => format!(" ({c}: {m})"),
            (Some(c), None) => format!(" ({c})"),
            _ => String::new(),
        };
        FileError::Refused {
            what,
            status,
            detail,
        }
    }

    /// Creates the bucket when it does not exist. Unreachable and refused are told apart: a
    /// server starts without its file store reachable, not with one that refuses it.
    pub async fn ensure_bucket(&self) -> Result<(), FileError> {
        let url = self
            .bucket
            .head_bucket(Some(&self.creds))
            .sign(SMALL_REQUEST);
        let r = self
            .send(self.http.head(url).timeout(SMALL_REQUEST))
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        if r.status().as_u16() != 404 {
            let what = format!("access to bucket {:?}", self.bucket.name());
            return Err(Self::refused(what, r).await);
        }
        let action = self.bucket.create_bucket(&self.creds);
        let body = action.body();
        let url = action.sign(SMALL_REQUEST);
        let r = self
            .send(self.http.put(url).body(body).timeout(SMALL_REQUEST))
            .await?;
        if r.status().is_success() {
            log::info!(
                "files: created bucket {:?} on {}",
                self.bucket.name(),
                self.server
            );
            return Ok(());
        }
        let what = format!("creating bucket {:?}", self.bucket.name());
        Err(Self::refused(what, r).await)
    }

    /// The size of `key`'s object, `None` when there is none.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, FileError> {
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(SMALL_REQUEST);
        let r = self
            .send(self.http.head(url).timeout(SMALL_REQUEST))
            .await?;
        match r.status().as_u16() {
            200..=299 => Ok(Some(r.content_length().unwrap_or(0))),
            404 => Ok(None),
            _ => Err(Self::refused(format!("reading {key:?}"), r).await),
        }
    }

    /// Uploads `len` bytes from `body` to `key`.
    pub async fn put<S>(&self, key: &str, len: u64, body: S) -> Result<(), FileError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    {
        let body = reqwest::Body::wrap_stream(body);
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(Duration::from_secs(3600));
        let r = self
            .send(
                self.http
                    .put(url)
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .body(body),
            )
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Self::refused(format!("storing {key:?}"), r).await)
        }
    }

    /// `key`'s object as a stream of bytes with its length, `None` when there is none.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<
        Option<(
            Option<u64>,
            impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
        )>,
        FileError,
    > {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(Duration::from_secs(3600));
        let r = self.send(self.http.get(url)).await?;
        match r.status().as_u16() {
            200..=299 => {
                let len = r.content_length();
                Ok(Some((len, r.bytes_stream().map_err(std::io::Error::other))))
            }
            404 => Ok(None),
            _ => Err(Self::refused(format!("reading {key:?}"), r).await),
        }
    }

    /// Deletes every object under `prefix`; answers how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, FileError> {
        let mut deleted = 0;
        let mut token: Option<String> = None;
        loop {
            let mut list = self.bucket.list_objects_v2(Some(&self.creds));
            list.with_prefix(prefix);
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let url = list.sign(SMALL_REQUEST);
            let r = self.send(self.http.get(url).timeout(SMALL_REQUEST)).await?;
            if !r.status().is_success() {
                return Err(Self::refused(format!("listing {prefix:?}"), r).await);
            }
            let text = r.text().await.map_err(|e| self.unreachable(e))?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
                .map_err(|e| FileError::Invalid(format!("listing {prefix:?}: {e}")))?;
            for obj in &page.contents {
                let url = self
                    .bucket
                    .delete_object(Some(&self.creds), &obj.key)
                    .sign(SMALL_REQUEST);
                let r = self
                    .send(self.http.delete(url).timeout(SMALL_REQUEST))
                    .await?;
                if !r.status().is_success() && r.status().as_u16() != 404 {
                    return Err(Self::refused(format!("deleting {:?}", obj.key), r).await);
                }
                deleted += 1;
            }
            match page.next_continuation_token {
                Some(t) if !page.contents.is_empty() => token = Some(t),
                _ => return Ok(deleted),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_say_whose_they_are_and_refuse_what_cannot_name_an_object() {
        assert_eq!(parse_key("pipeline-12/task-3/out"), Ok(KeyOwner::Run(12)));
        assert_eq!(
            parse_key("uploads/kakj/ab12/a b.txt"),
            Ok(KeyOwner::Upload("kakj"))
        );
        assert_eq!(parse_key("test/echo_value"), Ok(KeyOwner::Shared));
        assert_eq!(parse_key("x"), Ok(KeyOwner::Shared));
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "../b",
            "a/.",
            "a/",
            "pipeline-x/y",
            "uploads/kakj",
            "a\nb",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
        assert!(parse_key(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn upload_keys_keep_the_name_but_not_its_folders() {
        let k = upload_key("kakj", "/home/me/it's $(x).txt").unwrap();
        assert!(k.starts_with("uploads/kakj/"), "{k}");
        assert_eq!(local_name(&k), "it's $(x).txt");
        assert_eq!(parse_key(&k), Ok(KeyOwner::Upload("kakj")));
        assert!(upload_key("kakj", "dir/..").is_err());
        assert!(upload_key("kakj", "").is_err());
        assert_eq!(output_key(4, 9, "report"), "pipeline-4/task-9/report");
    }

    #[test]
    fn presigned_urls_name_the_object_and_expire() {
        let s = FileStore::new(&FileConfig {
            server: "127.0.0.1:9000".into(),
            ssl: false,
            access_key: "AK".into(),
            secret_key: "very-secret".into(),
            bucket: "eventops".into(),
            region: "us-east-1".into(),
        })
        .unwrap();
        let u = s.presign_put("pipeline-1/task-2/a b", Duration::from_secs(600));
        assert!(
            u.starts_with("http://127.0.0.1:9000/eventops/pipeline-1/task-2/a%20b?"),
            "{u}"
        );
        assert!(u.contains("X-Amz-Expires=600"), "{u}");
        assert!(!u.contains("very-secret"), "{u}");
        let u = s.presign_get("k", Duration::from_secs(30 * 24 * 3600));
        assert!(u.contains("X-Amz-Expires=604800"), "{u}");
    }
}
