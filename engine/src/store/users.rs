//! Queries on `users`.

use super::models::User;
use super::schema::users;
use super::{db_run, Db, Result};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

/// Inserts a user; a taken name is a unique violation (see `StoreError::is_unique_violation`).
pub async fn insert(db: &Db, user: &User) -> Result<()> {
    db_run!(db, |c| {
        diesel::insert_into(users::table)
            .values(user)
            .execute(c)
            .await?;
        Ok(())
    })
}

pub async fn by_name(db: &Db, name: &str) -> Result<Option<User>> {
    db_run!(db, |c| {
        Ok(users::table
            .filter(users::name.eq(name))
            .select(User::as_select())
            .first(c)
            .await
            .optional()?)
    })
}

/// The user's token generation, `None` when there is no such user.
pub async fn generation(db: &Db, name: &str) -> Result<Option<i64>> {
    db_run!(db, |c| {
        Ok(users::table
            .filter(users::name.eq(name))
            .select(users::token_generation)
            .first::<i64>(c)
            .await
            .optional()?)
    })
}

/// Raises the user's token generation (every token issued before is revoked); false when
/// there is no such user.
pub async fn bump_generation(db: &Db, name: &str) -> Result<bool> {
    db_run!(db, |c| {
        let n = diesel::update(users::table.filter(users::name.eq(name)))
            .set(users::token_generation.eq(users::token_generation + 1))
            .execute(c)
            .await?;
        Ok(n > 0)
    })
}

/// Replaces the password hash and raises the token generation in one statement, on the
/// condition that the hash is still `old_hash` (a concurrent change wins once); false when
/// nothing was updated.
pub async fn set_password(db: &Db, name: &str, old_hash: &str, new_hash: &str) -> Result<bool> {
    db_run!(db, |c| {
        let n = diesel::update(
            users::table
                .filter(users::name.eq(name))
                .filter(users::password_hash.eq(old_hash)),
        )
        .set((
            users::password_hash.eq(new_hash),
            users::token_generation.eq(users::token_generation + 1),
        ))
        .execute(c)
        .await?;
        Ok(n > 0)
    })
}

/// Deletes a user row (no API route does this yet; tests and operators do).
pub async fn delete(db: &Db, name: &str) -> Result<bool> {
    db_run!(db, |c| {
        let n = diesel::delete(users::table.filter(users::name.eq(name)))
            .execute(c)
            .await?;
        Ok(n > 0)
    })
}
