//! What sealing actuator secrets at rest costs (`secrets`): the AEAD per value, and listing a
//! user's actuators through the store (what picking a task's actuator does at every start)
//! with sealed secrets, beside the same list of rows stored in clear (the old way) measured in
//! the same run on the same database.

use engine::secrets::SecretBox;
use engine::store::models::Actuator;
use engine::store::{self, Db};
use std::time::Instant;

const ACTUATORS: usize = 50;
const LISTS: usize = 300;

fn spec(name: &str, key: &str) -> String {
    serde_json::json!({
        "name": name,
        "os": {"user": "runner", "ip": "10.0.0.7", "port": 22, "privateKey": key},
        "tags": [name],
    })
    .to_string()
}

fn row(creator: &str, name: &str, spec: String) -> Actuator {
    let now = store::now_ms();
    Actuator {
        id: store::new_id(),
        creator: creator.into(),
        name: name.into(),
        kind: "os".into(),
        spec,
        tunnel_client_id: None,
        tunnel_token_hash: None,
        created_at: now,
        updated_at: now,
    }
}

pub fn run() {
    let key = SecretBox::from_text(&SecretBox::generate_key_text()).expect("key");
    // an ed25519 OpenSSH private key is ~400 bytes; an RSA-4096 one ~3.4 KB
    let private_key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n".repeat(5)
    );
    for (what, plain) in [
        ("password", "S3cr3t-pw".to_string()),
        ("private key", private_key.clone()),
    ] {
        let n = 20_000;
        let t = Instant::now();
        let mut sealed = String::new();
        for _ in 0..n {
            sealed = key
                .seal(&plain, "eventops actuator 1 os.password")
                .expect("seal");
        }
        let seal_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let _ = key
                .open(&sealed, "eventops actuator 1 os.password")
                .expect("open");
        }
        let open_ns = t.elapsed().as_nanos() as f64 / n as f64;
        // baseline: parsing the spec the value sits in, which every read does anyway
        let s = spec("a", &plain);
        let t = Instant::now();
        for _ in 0..n {
            let _: serde_json::Value = serde_json::from_str(&s).expect("json");
        }
        let json_ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "secrets: {what} ({} B): seal {seal_ns:.0} ns, open {open_ns:.0} ns; baseline: parsing its spec JSON {json_ns:.0} ns",
            plain.len()
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/eventops.db", dir.path().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let db = Db::connect(&url, 1).await.expect("db").with_secrets(key.clone());
        let clear_db = Db::connect(&url, 1).await.expect("db");
        for i in 0..ACTUATORS {
            let name = format!("a{i}");
            let sealed = row("sealed", &name, spec(&name, &private_key));
            store::actuators::upsert(&db, &sealed, std::slice::from_ref(&name))
                .await
                .expect("sealed upsert");
            // the old way: the spec in clear (written through a handle with no key would fail,
            // so write it as an older version did)
            insert_clear(&clear_db, row("clear", &name, spec(&name, &private_key)))
                .await
                .expect("clear insert");
        }
        let time = |user: &'static str| {
            let db = db.clone();
            async move {
                let t = Instant::now();
                for _ in 0..LISTS {
                    let l = store::actuators::list(&db, user).await.expect("list");
                    assert_eq!(l.len(), ACTUATORS);
                }
                t.elapsed().as_secs_f64() * 1e6 / LISTS as f64
            }
        };
        let clear = time("clear").await;
        let sealed = time("sealed").await;
        let clear2 = time("clear").await;
        println!(
            "secrets: listing {ACTUATORS} actuators (SQLite, what an os task's start does): sealed {sealed:.0} µs; \
             baseline in clear {:.0} µs (+{:.0} µs, {:.1} µs per actuator)",
            (clear + clear2) / 2.0,
            sealed - (clear + clear2) / 2.0,
            (sealed - (clear + clear2) / 2.0) / ACTUATORS as f64
        );
    });
}

async fn insert_clear(db: &Db, row: Actuator) -> Result<(), store::StoreError> {
    use engine::store::models::ActuatorTag;
    use engine::store::schema::{actuator_tags, actuators};
    let tag = ActuatorTag {
        actuator_id: row.id,
        creator: row.creator.clone(),
        tag: row.name.clone(),
    };
    engine::db_run!(db, |c| {
        diesel_async::RunQueryDsl::execute(diesel::insert_into(actuators::table).values(&row), c)
            .await?;
        diesel_async::RunQueryDsl::execute(
            diesel::insert_into(actuator_tags::table).values(&tag),
            c,
        )
        .await?;
        Ok(())
    })
}
