//! The store on both backends: migrations, the one SQL dialect, concurrent writers, and the bus
//! over NATS.

use sqlx::Row;
use volley_store::testing::{nats_url, TestDb};
use volley_store::{Backend, Bus};

async fn migrations_and_dialect(backend: Backend) {
    let t = TestDb::new(backend).await.unwrap();
    let db = &t.db;
    let latest = volley_store::schema::MIGRATIONS.last().unwrap().version;
    assert_eq!(volley_store::schema::version(db).await.unwrap(), latest);
    // Migrating again is a no-op.
    volley_store::schema::migrate(db).await.unwrap();
    assert_eq!(volley_store::schema::version(db).await.unwrap(), latest);

    // Auto-increment ids, RETURNING, $n placeholders out of order, floats, NULLs.
    let mut ids = Vec::new();
    for i in 0..3i64 {
        let row = sqlx::query(
            "INSERT INTO accounts (display_name, status, created_ms, updated_ms) \
             VALUES ($2, 0, $1, $1) RETURNING id",
        )
        .bind(1000 + i)
        .bind(format!("p{i}"))
        .fetch_one(db.writer())
        .await
        .unwrap();
        ids.push(row.try_get::<i64, _>("id").unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    sqlx::query(
        "INSERT INTO ratings (account_id, pool, rating, deviation, volatility, games) \
         VALUES ($1, 'duel', $2, 350.5, 0.06, 0)",
    )
    .bind(ids[0])
    .bind(1500.25f64)
    .execute(db.writer())
    .await
    .unwrap();
    let r = sqlx::query("SELECT rating, deviation FROM ratings WHERE account_id = $1")
        .bind(ids[0])
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(r.try_get::<f64, _>("rating").unwrap(), 1500.25);
    assert_eq!(r.try_get::<f64, _>("deviation").unwrap(), 350.5);

    // A duplicate key is recognised as such.
    let dup = sqlx::query(
        "INSERT INTO auth_ids (kind, external_id, account_id, created_ms) VALUES ('device', 'd', $1, 0)",
    )
    .bind(ids[0]);
    dup.execute(db.writer()).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO auth_ids (kind, external_id, account_id, created_ms) VALUES ('device', 'd', $1, 0)",
    )
    .bind(ids[1])
    .execute(db.writer())
    .await
    .unwrap_err();
    assert!(volley_store::StoreError::from(err).is_unique_violation());

    // Concurrent writers all land (SQLite queues them on its one writer connection).
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.writer().begin().await.unwrap();
            sqlx::query(
                "INSERT INTO chat_messages (channel, sender_id, body, created_ms) VALUES ('c', $1, 'x', 0)",
            )
            .bind(i)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM chat_messages")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 50);
}

#[tokio::test]
async fn sqlite_migrations_and_dialect() {
    migrations_and_dialect(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_migrations_and_dialect() {
    migrations_and_dialect(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_nodes_starting_together_migrate_once() {
    let url = volley_store::testing::empty_postgres().await.unwrap();
    // Three nodes open the same empty database at once; all must succeed.
    let opens = (0..3).map(|_| volley_store::Db::open_postgres(&url, 2));
    let results = futures_util::future::join_all(opens).await;
    for r in results {
        assert!(r.is_ok(), "{r:?}");
    }
}

#[tokio::test]
async fn sqlite_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    {
        let db = volley_store::Db::open_sqlite(&path).await.unwrap();
        sqlx::query("INSERT INTO accounts (display_name, status, created_ms, updated_ms) VALUES ('a', 0, 1, 1)")
            .execute(db.writer())
            .await
            .unwrap();
        db.close().await;
    }
    let db = volley_store::Db::open_sqlite(&path).await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(n, 1);
    assert!(volley_store::Db::open("mysql://x").await.is_err());
}

#[tokio::test]
async fn nats_bus_crosses_clients() {
    let cluster = format!("test-{}", std::process::id());
    let a = Bus::nats(&nats_url(), &cluster).await.unwrap();
    let b = Bus::nats(&nats_url(), &cluster).await.unwrap();
    // Another deployment on the same NATS server, listening to everything it can.
    let elsewhere = Bus::nats(&nats_url(), &format!("{cluster}-other"))
        .await
        .unwrap();
    let mut stray = elsewhere.subscribe(">").await.unwrap();
    let subject = "test.bus";
    let mut sub = b.subscribe(&format!("{subject}.>")).await.unwrap();
    a.publish(&format!("{subject}.x.y"), b"hello".to_vec())
        .await
        .unwrap();
    a.flush().await.unwrap();
    let m = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, b"hello");
    assert_eq!(m.subject, format!("{subject}.x.y"));
    elsewhere.flush().await.unwrap();
    let leaked = tokio::time::timeout(std::time::Duration::from_millis(300), stray.next()).await;
    assert!(leaked.is_err(), "another cluster saw {leaked:?}");
    assert!(Bus::nats("nats://127.0.0.1:1", "x").await.is_err());
    assert!(Bus::nats(&nats_url(), "Bad.Name").await.is_err());
}
