//! Accounts: registration, password checks (argon2id) and token revocation. Tokens themselves
//! are the web layer's job.
//!
//! Every argon2 computation (19 MiB and tens of milliseconds each) goes through a [`Hasher`]:
//! a fixed pool of threads (as many as cores unless configured) fed by a short bounded queue.
//! When the queue is full the caller gets [`Error::Unavailable`] (503 with `Retry-After`)
//! at once instead of one more 19 MiB hash, so a flood of logins cannot grow the server's
//! memory or starve its other work.

use crate::definition::check_name;
use crate::store::{self, models::User, Db};
use crate::{Error, Result};
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

pub const MIN_PASSWORD: usize = 6;
pub const MAX_PASSWORD: usize = 256;

/// Working memory for one argon2 computation of `blocks` blocks (19 MiB with the default
/// parameters). Its capacity is above 32 MiB, glibc's largest dynamic mmap threshold
/// (mallopt(3)), so the allocator always maps it afresh and unmaps it when the hash is done:
/// a hash's memory goes back to the system instead of staying in a thread's arena (which took
/// the idle server from 16 to 245 MiB after 100 logins). Only the `blocks` used are touched.
fn argon2_memory(blocks: usize) -> Vec<Block> {
    let above_threshold = (32 << 20) / Block::SIZE + 1;
    let mut memory = Vec::with_capacity(blocks.max(above_threshold));
    memory.resize(blocks, Block::default());
    memory
}

/// The argon2 output for these parameters, computed in memory from [`argon2_memory`].
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: Salt<'_>,
) -> std::result::Result<Output, argon2::password_hash::Error> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut memory = argon2_memory(params.block_count());
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory)
            .map_err(Into::into)
    })
}

/// An argon2id hash of `password` (PHC string). Synchronous and expensive: async callers go
/// through [`Hasher::hash`].
pub fn hash_password(password: &str) -> Result<String> {
    let err = |e: argon2::password_hash::Error| Error::Internal(format!("password hash: {e}"));
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(err)?;
    let params = Params::default();
    let output = compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        salt.as_salt(),
    )
    .map_err(err)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(err)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC hash string (constant-time comparison). Synchronous and
/// expensive: async callers go through [`Hasher::verify`].
pub fn verify_password(password: &str, hash: &str) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm) else {
        return false;
    };
    let Ok(version) = phc
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    compute(algorithm, version, params, password.as_bytes(), salt)
        .is_ok_and(|output| output == expected)
}

/// A hash of a random password with the default parameters, checked against when there is no
/// real hash (an unknown user or client id), so such a check costs the same time as a real one.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw: [u8; 16] = rand::random();
        hash_password(&crate::runtime::hex(&pw)).unwrap_or_default()
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// The bounded password hasher: `threads` workers, at most `queue` jobs waiting. Cheap to
/// clone (all clones share the pool); the workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    tx: SyncSender<Job>,
    threads: usize,
}

impl Hasher {
    /// `threads` = 0 means one per core.
    pub fn new(threads: usize, queue: usize) -> Hasher {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&rx));
            if let Err(e) = spawned {
                log::error!("password hasher: cannot start a worker thread: {e}");
            }
        }
        Hasher { tx, threads }
    }

    /// How many hashes may run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a worker, or refuses at once when the queue is full. The job runs to its end
    /// even if the caller stops waiting, so the bound holds against clients that hang up.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Error::Unavailable(
                    "too many password checks in progress; retry shortly".into(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Internal("password hasher stopped".into()))
            }
        }
        answer
            .await
            .map_err(|_| Error::Internal("password hasher dropped a job".into()))
    }

    /// An argon2id hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_string();
        self.run(move || hash_password(&password)).await?
    }

    /// Whether `password` matches `hash`.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.run(move || verify_password(&password, &hash)).await
    }

    /// The index of the first of `hashes` that `secret` matches, checked in one job; with no
    /// hashes, one check against a dummy hash, so that "nothing to match" costs the same time.
    pub async fn find(&self, secret: &str, hashes: Vec<String>) -> Result<Option<usize>> {
        let secret = secret.to_string();
        self.run(move || {
            if hashes.is_empty() {
                let _ = verify_password(&secret, dummy_hash());
                return None;
            }
            hashes.iter().position(|h| verify_password(&secret, h))
        })
        .await
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

fn check_password(what: &str, password: &str) -> Result<()> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(Error::Validation(format!(
            "{what} must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Creates an account; the name must be free.
pub async fn register(
    db: &Db,
    hasher: &Hasher,
    name: &str,
    password: &str,
    email: &str,
) -> Result<User> {
    check_name("user name", name).map_err(Error::Validation)?;
    if name.chars().count() > 64 {
        return Err(Error::Validation(
            "user name is longer than 64 characters".into(),
        ));
    }
    check_password("password", password)?;
    if email.len() > 255 || (!email.is_empty() && !email.contains('@')) {
        return Err(Error::Validation(format!(
            "email {email:?} is not an address"
        )));
    }
    let user = User {
        id: store::new_id(),
        name: name.to_string(),
        email: email.to_string(),
        password_hash: hasher.hash(password).await?,
        created_at: store::now_ms(),
        token_generation: 0,
    };
    match store::users::insert(db, &user).await {
        Ok(()) => Ok(user),
        Err(e) if e.is_unique_violation() => {
            Err(Error::Conflict(format!("user {name:?} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks a name and password; the same message whether the name or the password is wrong.
pub async fn authenticate(db: &Db, hasher: &Hasher, name: &str, password: &str) -> Result<User> {
    let bad = || Error::Unauthorized("wrong user name or password".into());
    // names longer than any account's, or passwords longer than any accepted, cannot match
    if name.chars().count() > 64 || password.chars().count() > MAX_PASSWORD {
        return Err(bad());
    }
    let user = store::users::by_name(db, name).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // an unknown name costs a check against a dummy hash, so names cannot be probed by timing
    match hasher.find(password, hash.into_iter().collect()).await? {
        Some(_) => user.ok_or_else(bad),
        None => Err(bad()),
    }
}

/// Changes a password after checking the old one; raises the token generation, so every
/// token issued before is revoked. Returns the updated user.
pub async fn change_password(
    db: &Db,
    hasher: &Hasher,
    name: &str,
    old: &str,
    new: &str,
) -> Result<User> {
    check_password("new password", new)?;
    let user = authenticate(db, hasher, name, old)
        .await
        .map_err(|e| match e {
            Error::Unauthorized(_) => Error::Unauthorized("wrong current password".into()),
            e => e,
        })?;
    let new_hash = hasher.hash(new).await?;
    if !store::users::set_password(db, name, &user.password_hash, &new_hash).await? {
        return Err(Error::Conflict(
            "the password was changed meanwhile; log in again".into(),
        ));
    }
    get(db, name).await
}

/// Revokes every login token of the user (raises the token generation).
pub async fn revoke_tokens(db: &Db, name: &str) -> Result<()> {
    if store::users::bump_generation(db, name).await? {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!(
            "user {name:?} no longer exists"
        )))
    }
}

/// The token generation of a user, `None` when the user does not exist.
pub async fn token_generation(db: &Db, name: &str) -> Result<Option<i64>> {
    Ok(store::users::generation(db, name).await?)
}

pub async fn get(db: &Db, name: &str) -> Result<User> {
    store::users::by_name(db, name)
        .await?
        .ok_or_else(|| Error::Unauthorized(format!("user {name:?} no longer exists")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("secret-1").unwrap_or_default();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        // the argon2 crate's own verifier accepts ours, and ours accepts its hashes
        let phc = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"secret-1", &phc).is_ok());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"secret-2", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("secret-2", &theirs));
        assert!(!verify_password("secret-3", &theirs));
        assert!(!verify_password("secret-2", "not a hash"));
    }

    #[tokio::test]
    async fn hashes_verify_and_a_full_queue_refuses_at_once() {
        let h = Hasher::new(1, 1);
        let hash = h.hash("secret-1").await.unwrap_or_default();
        assert!(h.verify("secret-1", &hash).await.unwrap_or(false));
        assert!(!h.verify("secret-2", &hash).await.unwrap_or(true));
        assert_eq!(h.find("x", vec![]).await.ok(), Some(None));
        // one running + one queued: the rest are refused without waiting
        let jobs: Vec<_> = (0..8).map(|_| h.verify("secret-2", &hash)).collect();
        let results = futures_util::future::join_all(jobs).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Unavailable(_))))
            .count();
        assert!(refused >= 5, "{refused} of 8 refused");
    }
}
