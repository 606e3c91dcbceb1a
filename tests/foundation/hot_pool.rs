//! The hot paths' connections (`db::HotPool`): given back at once after their work, tested
//! (a queued rollback sent) whenever they come back any other way, and bounded.

use std::time::Duration;

use nongsan_shared::db::{HotConn, HotPool};
use sqlx::Connection;

use crate::support::{TestDb, eventually};

/// Whether another session can take advisory lock `key` now (and lets it go again).
async fn free(pool: &sqlx::PgPool, key: i64) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if taken {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    taken
}

/// Waits (10 s at most) until advisory lock `key` can be taken by another session.
async fn until_free(pool: &sqlx::PgPool, key: i64) {
    eventually(Duration::from_secs(10), "the lock let go", || async {
        free(pool, key).await.then_some(())
    })
    .await;
}

/// A connection whose transaction took advisory lock `key` and was dropped without ending:
/// its rollback is queued, not sent.
async fn locked_in_a_dropped_transaction(hot: &HotPool, key: i64) -> HotConn {
    let mut conn = hot.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    conn
}

#[tokio::test]
async fn a_connection_given_back_after_its_work_is_handed_out_again_at_once() {
    let db = TestDb::new().await;
    let pool = db.pool("listing").await;
    let hot = HotPool::beside(&pool, 2);
    let mut conn = hot.acquire().await.unwrap();
    let (pid, path): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), current_setting('search_path')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(path, "listing", "opened as its sqlx pool opens its own");
    conn.release();
    // Idle before anything else runs: no round trip, no task of its own.
    assert_eq!(hot.idle(), 1);
    let mut again = hot.acquire().await.unwrap();
    let same: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *again)
        .await
        .unwrap();
    assert_eq!(same, pid, "the same connection");
    again.release();
}

#[tokio::test]
async fn a_connection_that_comes_back_from_a_transaction_not_ended_lets_its_locks_go() {
    let db = TestDb::new().await;
    let pool = db.pool("listing").await;
    let hot = HotPool::beside(&pool, 2);
    // Released with the rollback of a dropped transaction still queued.
    let conn = locked_in_a_dropped_transaction(&hot, 7101).await;
    assert!(!free(&pool, 7101).await, "held until the rollback is sent");
    conn.release();
    until_free(&pool, 7101).await;
    // Dropped mid-transaction (an error returned early, a request cancelled).
    drop(locked_in_a_dropped_transaction(&hot, 7102).await);
    until_free(&pool, 7102).await;
    // It came back once tested (the second time too: the first time's test had given it
    // back, and it was handed out again), and is idle.
    eventually(Duration::from_secs(10), "the connection idle", || async {
        (hot.idle() == 1).then_some(())
    })
    .await;
}

/// What `settle` asks a connection that comes back unreleased: through sqlx (prepared on first
/// use, then bound and executed), the statement says whether a transaction begun before it
/// is open.
#[tokio::test]
async fn a_statement_tells_whether_a_transaction_begun_before_it_is_open() {
    let db = TestDb::new().await;
    async fn open(conn: &mut sqlx::PgConnection) -> bool {
        let row = sqlx::Executor::fetch_one(conn, "SELECT now() <> statement_timestamp()")
            .await
            .unwrap();
        sqlx::Row::get(&row, 0)
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for _ in 0..3 {
        assert!(!open(&mut conn).await, "no transaction open");
    }
    sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
    assert!(open(&mut conn).await, "one begun before");
    sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
    assert!(!open(&mut conn).await, "ended");
}

/// A transaction sqlx does not count (its `BEGIN` cancelled before the answer came, which
/// sqlx counts only once answered; here a `BEGIN` sent as plain SQL) is rolled back when its
/// connection comes back, before anyone else uses it.
#[tokio::test]
async fn a_transaction_sqlx_does_not_count_is_rolled_back_when_its_connection_comes_back() {
    let db = TestDb::new().await;
    let pool = db.pool("listing").await;
    let hot = HotPool::beside(&pool, 1);
    let mut conn = hot.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7103)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    until_free(&pool, 7103).await;
    // Handed out again, outside any transaction: a lock it takes for its transaction ends
    // with its statement.
    let mut again = hot.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7104)")
        .execute(&mut *again)
        .await
        .unwrap();
    assert!(free(&pool, 7104).await, "not inside the first transaction");
    again.release();
}

#[tokio::test]
async fn no_more_connections_are_open_than_the_bound() {
    let db = TestDb::new().await;
    let pool = db.pool("listing").await;
    let hot = HotPool::beside(&pool, 1);
    let conn = hot.acquire().await.unwrap();
    let waiting = tokio::spawn({
        let hot = hot.clone();
        async move { hot.acquire().await.map(HotConn::release) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second waits for the first");
    conn.release();
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("handed out once the first came back")
        .unwrap()
        .unwrap();
}
