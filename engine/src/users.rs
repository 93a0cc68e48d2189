//! Accounts: registration and password checks (argon2id). Tokens are the web layer's job.

use crate::definition::check_name;
use crate::store::{self, models::User, Db};
use crate::{Error, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub const MIN_PASSWORD: usize = 6;
pub const MAX_PASSWORD: usize = 256;

pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hash: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates an account; the name must be free.
pub async fn register(db: &Db, name: &str, password: &str, email: &str) -> Result<User> {
    check_name("user name", name).map_err(Error::Validation)?;
    if name.chars().count() > 64 {
        return Err(Error::Validation(
            "user name is longer than 64 characters".into(),
        ));
    }
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(Error::Validation(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    if email.len() > 255 || (!email.is_empty() && !email.contains('@')) {
        return Err(Error::Validation(format!(
            "email {email:?} is not an address"
        )));
    }
    let user = User {
        id: store::new_id(),
        name: name.to_string(),
        email: email.to_string(),
        password_hash: hash_password(password)?,
        created_at: store::now_ms(),
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
pub async fn authenticate(db: &Db, name: &str, password: &str) -> Result<User> {
    let bad = || Error::Unauthorized("wrong user name or password".into());
    let Some(user) = store::users::by_name(db, name).await? else {
        // spend the same time as a real check so names cannot be probed by timing
        let _ = verify_password(password, DUMMY_HASH);
        return Err(bad());
    };
    if verify_password(password, &user.password_hash) {
        Ok(user)
    } else {
        Err(bad())
    }
}

pub async fn get(db: &Db, name: &str) -> Result<User> {
    store::users::by_name(db, name)
        .await?
        .ok_or_else(|| Error::Unauthorized(format!("user {name:?} no longer exists")))
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3vx2pFpGq0t0CzZr2I0nW6bJ1X3U8bZ1tqf3mJk2Z5Q";
