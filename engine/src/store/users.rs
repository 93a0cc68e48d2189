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
