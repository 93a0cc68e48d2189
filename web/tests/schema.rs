//! The migrations of every backend agree with `engine/src/store/schema.rs`: a row of every
//! table is written and read back through the diesel models on each real database server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use engine::store::models::*;
use engine::store::schema::*;
use engine::store::{Db, StoreError};
use web::testing::TestDb;

async fn round_trip(db: &Db) -> Result<(), StoreError> {
    let id = engine::store::new_id();
    let s = |x: &str| x.to_string();
    engine::db_run!(db, |c| {
        diesel::insert_into(users::table)
            .values(&User {
                id,
                name: s("u"),
                email: s("e"),
                password_hash: s("h"),
                created_at: 1,
                token_generation: 0,
            })
            .execute(c)
            .await?;
        diesel::insert_into(actuators::table)
            .values(&Actuator {
                id,
                creator: s("u"),
                name: s("a"),
                kind: s("os"),
                spec: s("{}"),
                tunnel_client_id: Some(s("c")),
                tunnel_token_hash: None,
                created_at: 1,
                updated_at: 2,
            })
            .execute(c)
            .await?;
        diesel::insert_into(actuator_tags::table)
            .values(&ActuatorTag {
                actuator_id: id,
                creator: s("u"),
                tag: s("t"),
            })
            .execute(c)
            .await?;
        diesel::insert_into(pipeline_definitions::table)
            .values(&PipelineDefinition {
                id,
                creator: s("u"),
                name: s("p"),
                version: s("1.0"),
                latest: true,
                content: s("{}"),
                created_at: 1,
                updated_at: 2,
            })
            .execute(c)
            .await?;
        diesel::insert_into(trigger_definitions::table)
            .values(&TriggerDefinition {
                id,
                creator: s("u"),
                name: s("t"),
                event_name: s("e"),
                event_version: s("1"),
                event_creator: s("u"),
                content: s("{}"),
                created_at: 1,
                updated_at: 2,
            })
            .execute(c)
            .await?;
        diesel::insert_into(events::table)
            .values(&Event {
                id,
                creator: s("u"),
                name: s("e"),
                version: s("1"),
                content: s("{}"),
                status: s("created"),
                message: s(""),
                owner: s(""),
                created_at: 1,
                updated_at: 2,
            })
            .execute(c)
            .await?;
        diesel::insert_into(event_triggers::table)
            .values(&EventTrigger {
                id,
                event_id: id,
                trigger_id: id,
                trigger_name: s("t"),
                pipeline_index: 0,
                pipeline_image: s("p:1"),
                status: s("pass"),
                reason: s(""),
                pipeline_id: Some(id),
                created_at: 1,
            })
            .execute(c)
            .await?;
        diesel::insert_into(pipelines::table)
            .values(&Pipeline {
                id,
                creator: s("u"),
                event_id: Some(id),
                event_trigger_id: Some(id),
                definition_creator: s("u"),
                definition_name: s("p"),
                definition_version: s("1"),
                trigger_name: s("t"),
                event_name: s("e"),
                event_version: s("1"),
                event_creator: s("u"),
                status: s("running"),
                definition_snapshot: s("{}"),
                event_snapshot: s("{}"),
                trigger_snapshot: s("{}"),
                inputs: s("{}"),
                contexts: s("{}"),
                outputs: s("{}"),
                error: s(""),
                owner: s("o"),
                lease_until: 3,
                created_at: 1,
                started_at: Some(1),
                ended_at: None,
                updated_at: 2,
                lease_epoch: 0,
            })
            .execute(c)
            .await?;
        diesel::insert_into(tasks::table)
            .values(&Task {
                id,
                pipeline_id: id,
                parent_task_id: 0,
                alias: s("a"),
                task_type: s("os"),
                status: s("created"),
                actuator_name: s("a"),
                actuator_tag: s("t"),
                inputs: s("{}"),
                outputs: s("{}"),
                error: s(""),
                contexts: s("{}"),
                definition_snapshot: s(""),
                exit_code: Some(3),
                job_id: s(""),
                secret_hash: s("h"),
                timeout_secs: 3600,
                file_sizes: None,
                created_at: 1,
                started_at: None,
                ended_at: None,
                updated_at: 2,
            })
            .execute(c)
            .await?;
        assert_eq!(
            users::table.select(User::as_select()).load(c).await?.len(),
            1
        );
        assert_eq!(
            actuators::table
                .select(Actuator::as_select())
                .load(c)
                .await?[0]
                .tunnel_client_id
                .as_deref(),
            Some("c")
        );
        assert_eq!(
            actuator_tags::table
                .select(ActuatorTag::as_select())
                .load(c)
                .await?
                .len(),
            1
        );
        assert!(
            pipeline_definitions::table
                .select(PipelineDefinition::as_select())
                .load(c)
                .await?[0]
                .latest
        );
        assert_eq!(
            trigger_definitions::table
                .select(TriggerDefinition::as_select())
                .load(c)
                .await?
                .len(),
            1
        );
        assert_eq!(
            events::table
                .select(Event::as_select())
                .load(c)
                .await?
                .len(),
            1
        );
        assert_eq!(
            event_triggers::table
                .select(EventTrigger::as_select())
                .load(c)
                .await?[0]
                .pipeline_id,
            Some(id)
        );
        assert_eq!(
            pipelines::table
                .select(Pipeline::as_select())
                .load(c)
                .await?[0]
                .ended_at,
            None
        );
        assert_eq!(
            tasks::table.select(Task::as_select()).load(c).await?[0].timeout_secs,
            3600
        );
        // the unique identity constraints exist on every backend
        let dup = diesel::insert_into(pipeline_definitions::table)
            .values(&PipelineDefinition {
                id: id + 1,
                creator: s("u"),
                name: s("p"),
                version: s("1.0"),
                latest: false,
                content: s("{}"),
                created_at: 1,
                updated_at: 2,
            })
            .execute(c)
            .await;
        assert!(
            matches!(
                dup,
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                ))
            ),
            "{dup:?}"
        );
        Ok(())
    })
}

fn check(backend: TestDb) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(url) = backend.fresh_url(tmp.path()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = Db::connect(&url, 1).await.expect("connect + migrate");
        round_trip(&db).await.expect("round trip");
        // migrations are idempotent: a second start applies nothing and fails nothing
        engine::store::migrate(&url).await.expect("second migrate");
        db.ping().await.expect("ping");
    });
}

#[test]
fn schema_matches_on_sqlite() {
    check(TestDb::Sqlite);
}

#[test]
fn schema_matches_on_mariadb() {
    check(TestDb::Mysql);
}

#[test]
fn schema_matches_on_postgres() {
    check(TestDb::Postgres);
}
