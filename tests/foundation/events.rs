//! Events from an outbox to an inbox: exactly once in effect, through a relay that stops at
//! the worst moment, through a Redis restart, and onto the dead-letter list when a handler
//! keeps failing; and what is done with removed once old, what is not kept.

use std::{sync::Arc, time::Duration};

use nongsan_shared::{
    auth::Role,
    db,
    events::{
        self, Bus, Envelope, Handler, InProcessBus, Inbox, Pruned, RedisBus, Relay, Retention,
    },
    failpoint,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool, migrate::Migrator};

use crate::support::{
    RedisServer, TestDb,
    client::{Client, Request},
    eventually, keys, servers,
    user::User,
};

/// A service schema with only the shared event tables.
static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

/// The producing schema ("listing") and a consuming schema ("probe") with a table the
/// handler writes one row to per handling.
struct Fixture {
    producer: PgPool,
    consumer: PgPool,
}

impl Fixture {
    async fn new(db: &TestDb) -> Self {
        let opts = db.url.parse().unwrap();
        let producer = db::connect(&opts, "listing", 5).await.unwrap();
        db::migrate(&producer, &NO_MIGRATIONS, "listing")
            .await
            .unwrap();
        let consumer = db::connect(&opts, "probe", 5).await.unwrap();
        db::migrate(&consumer, &NO_MIGRATIONS, "probe")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE effects (event_id uuid NOT NULL, seq int NOT NULL)")
            .execute(&consumer)
            .await
            .unwrap();
        Self { producer, consumer }
    }

    /// Writes `n` events in one transaction, numbered from `from`.
    async fn emit(&self, from: i32, n: i32) {
        let mut tx = self.producer.begin().await.unwrap();
        for i in from..from + n {
            events::emit_named(
                &mut tx,
                "probe.happened",
                &format!("agg-{i}"),
                1,
                &json!({ "seq": i }),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Waits until `n` distinct events took effect, then checks none took effect twice.
    async fn assert_each_handled_once(&self, n: i64) {
        eventually(
            Duration::from_secs(20),
            "every event to be handled",
            || async {
                let c: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
                    .fetch_one(&self.consumer)
                    .await
                    .unwrap();
                (c >= n).then_some(())
            },
        )
        .await;
        // Give any duplicate a chance to show up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (total, distinct, seqs): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id), count(DISTINCT seq) FROM effects",
        )
        .fetch_one(&self.consumer)
        .await
        .unwrap();
        assert_eq!(
            (total, distinct, seqs),
            (n, n, n),
            "each event must take effect exactly once"
        );
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.producer)
                .await
                .unwrap();
        assert_eq!(unpublished, 0);
    }

    fn inbox(&self, settings: events::Settings) -> Arc<Inbox> {
        Arc::new(
            Inbox::new("probe", self.consumer.clone(), settings)
                .on_named("probe.happened", Recorder),
        )
    }
}

/// Records each handling; fails for no one.
struct Recorder;

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, e: &Envelope) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
            .bind(e.id)
            .bind(i32::try_from(e.data["seq"].as_i64().unwrap())?)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Writes, then always fails: its writes must be undone.
struct AlwaysFails;

#[async_trait::async_trait]
impl Handler for AlwaysFails {
    async fn handle(&self, tx: &mut PgConnection, e: &Envelope) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, 0)")
            .bind(e.id)
            .execute(tx)
            .await?;
        anyhow::bail!("the warehouse API said no")
    }
}

/// Writes, then fails for the event numbered 2 only.
struct FailsOnTwo;

#[async_trait::async_trait]
impl Handler for FailsOnTwo {
    async fn handle(&self, tx: &mut PgConnection, e: &Envelope) -> anyhow::Result<()> {
        let seq = i32::try_from(e.data["seq"].as_i64().unwrap())?;
        sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
            .bind(e.id)
            .bind(seq)
            .execute(tx)
            .await?;
        anyhow::ensure!(seq != 2, "the warehouse API said no to 2");
        Ok(())
    }
}

/// Writes, then fails in the database for the event numbered 2 (a division by zero), which
/// aborts the transaction it runs in unless a savepoint holds it.
struct DatabaseFailsOnTwo;

#[async_trait::async_trait]
impl Handler for DatabaseFailsOnTwo {
    async fn handle(&self, tx: &mut PgConnection, e: &Envelope) -> anyhow::Result<()> {
        let seq = i32::try_from(e.data["seq"].as_i64().unwrap())?;
        sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
            .bind(e.id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT 1 / ($1 - 2)")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn fast() -> events::Settings {
    events::Settings {
        max_attempts: 3,
        retry_base: Duration::from_millis(10),
        poll: Duration::from_millis(50),
        pace: Duration::ZERO,
        keep: None,
    }
}

async fn start(
    bus: Arc<dyn Bus>,
    fx: &Fixture,
    inbox: Arc<Inbox>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = bus
        .subscribe("listing", inbox.clone())
        .await
        .into_iter()
        .collect();
    tasks.push(tokio::spawn(inbox.run()));
    tasks.push(tokio::spawn(
        Relay::new(
            fx.producer.clone(),
            "listing",
            bus,
            Duration::from_millis(50),
        )
        .run(),
    ));
    tasks
}

async fn xlen(url: &str, stream: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_outbox_event_reaches_a_consumer_exactly_once_through_redis() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let bus = Arc::new(
        RedisBus::connect(&servers().await.redis, &db.name)
            .await
            .unwrap(),
    );
    let tasks = start(bus, &fx, fx.inbox(fast())).await;
    fx.emit(0, 25).await;
    fx.assert_each_handled_once(25).await;
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test]
async fn an_outbox_event_reaches_a_consumer_exactly_once_in_process() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let tasks = start(Arc::new(InProcessBus::default()), &fx, fx.inbox(fast())).await;
    fx.emit(0, 25).await;
    fx.assert_each_handled_once(25).await;
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test]
async fn a_relay_stopped_between_publishing_and_marking_publishes_again_and_the_inbox_drops_the_copies()
 {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let redis_url = servers().await.redis.clone();
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(&redis_url, &db.name).await.unwrap());
    let inbox = fx.inbox(fast());
    let consumer = bus.subscribe("listing", inbox.clone()).await;
    let worker = tokio::spawn(inbox.run());
    fx.emit(0, 10).await;

    // The first relay publishes and then dies before it marks anything published.
    let first = Relay::new(
        fx.producer.clone(),
        "listing",
        bus.clone(),
        Duration::from_millis(50),
    );
    failpoint::set("relay.after_publish", failpoint::Action::Error { times: 1 });
    assert!(first.relay_once().await.is_err());
    drop(first);
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&fx.producer)
            .await
            .unwrap();
    assert_eq!(unpublished, 10, "nothing may be marked published");

    // The next relay publishes the same events again.
    let second = Relay::new(
        fx.producer.clone(),
        "listing",
        bus.clone(),
        Duration::from_millis(50),
    );
    assert_eq!(second.relay_once().await.unwrap(), 10);
    assert_eq!(
        xlen(&redis_url, &events::stream_name(&db.name, "listing")).await,
        20,
        "each event was published twice"
    );
    fx.assert_each_handled_once(10).await;
    consumer.into_iter().for_each(|t| t.abort());
    worker.abort();
}

#[tokio::test]
async fn events_keep_flowing_exactly_once_when_redis_restarts_in_the_middle() {
    let redis = RedisServer::start_private().await;
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let bus = Arc::new(RedisBus::connect(&redis.url(), &db.name).await.unwrap());
    let tasks = start(bus, &fx, fx.inbox(fast())).await;

    fx.emit(0, 10).await;
    fx.assert_each_handled_once(10).await;

    redis.kill().await;
    // Written while Redis is down: they wait in the outbox.
    fx.emit(10, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&fx.producer)
        .await
        .unwrap();
    assert_eq!(
        waiting, 10,
        "events written while Redis is down stay in the outbox"
    );

    redis.restart().await;
    fx.emit(20, 10).await;
    fx.assert_each_handled_once(30).await;
    tasks.iter().for_each(|t| t.abort());
}

#[tokio::test]
async fn an_event_whose_handler_keeps_failing_ends_on_the_dead_letter_list() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let inbox = Arc::new(
        Inbox::new("probe", fx.consumer.clone(), fast()).on_named("probe.happened", AlwaysFails),
    );
    let tasks = start(Arc::new(InProcessBus::default()), &fx, inbox).await;
    fx.emit(0, 1).await;

    let (attempts, last_error): (i32, String) =
        eventually(Duration::from_secs(20), "the event to be dead", || async {
            sqlx::query_as("SELECT attempts, last_error FROM inbox WHERE status = 'dead'")
                .fetch_optional(&fx.consumer)
                .await
                .unwrap()
        })
        .await;
    assert_eq!(attempts, 3);
    assert!(
        last_error.contains("the warehouse API said no"),
        "{last_error}"
    );
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&fx.consumer)
        .await
        .unwrap();
    assert_eq!(effects, 0, "a failed handler's writes are rolled back");
    tasks.iter().for_each(|t| t.abort());

    // An operator reads the list and queues the event again.
    let router = nongsan_shared::http::with_common_layers(events::ops_router(
        "probe",
        fx.consumer.clone(),
        keys(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = Client::new(&format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let operator = User::minted(Role::Operator);
    let (_, list) = ops.get("/v1/ops/probe/dead-letters", Some(&operator)).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["event_type"], "probe.happened");
    assert_eq!(list[0]["attempts"], 3);
    let id = list[0]["event_id"].as_str().unwrap();
    let res = ops
        .send(Request::post(format!("/v1/ops/probe/dead-letters/{id}/retry")).by(&operator))
        .await;
    assert_eq!(res.status, 202);
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM inbox WHERE event_id = $1::uuid")
            .bind(id)
            .fetch_one(&fx.consumer)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("pending", 0));
}

/// The inbox handles a batch in one transaction: when one event of it fails, only that
/// event's writes are undone (its attempt recorded, to be tried again), and each of the
/// others takes effect once and is done.
#[tokio::test]
async fn one_failing_event_in_a_batch_undoes_only_its_own_writes_and_the_others_take_effect_once() {
    the_event_numbered_two_fails_alone(FailsOnTwo, "said no to 2").await;
}

/// The same when the failure is the database's: the batch's transaction is aborted by it, so
/// the first events' writes cannot stay in it; still each other event takes effect once and
/// the failing one is recorded, to be tried again.
#[tokio::test]
async fn an_event_failing_in_the_database_mid_batch_undoes_only_its_own_writes() {
    the_event_numbered_two_fails_alone(DatabaseFailsOnTwo, "division by zero").await;
}

/// Five events in one batch, the one numbered 2 failing in `handler` with `error`: the other
/// four take effect once and are done; the failing one is pending, with one attempt and its
/// error.
async fn the_event_numbered_two_fails_alone(handler: impl Handler + 'static, error: &str) {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let inbox =
        Inbox::new("probe", fx.consumer.clone(), fast()).on_named("probe.happened", handler);
    let batch = probe_events(&[0, 1, 2, 3, 4]);
    assert_eq!(inbox.ingest_many(&batch).await.unwrap(), 5);
    assert_eq!(
        inbox.work_batch(100).await.unwrap(),
        5,
        "one batch takes all five"
    );

    assert_eq!(
        effects(&fx).await,
        [0, 1, 3, 4],
        "each other event once, the failing one's undone"
    );
    let inbox_rows: Vec<(i32, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT (event->'data'->>'seq')::int, status, attempts, last_error FROM inbox ORDER BY 1",
    )
    .fetch_all(&fx.consumer)
    .await
    .unwrap();
    for (seq, status, attempts, last_error) in &inbox_rows {
        if *seq == 2 {
            assert_eq!((status.as_str(), *attempts), ("pending", 1));
            assert!(
                last_error.as_deref().is_some_and(|e| e.contains(error)),
                "{last_error:?}"
            );
        } else {
            assert_eq!((status.as_str(), *attempts, last_error), ("done", 1, &None));
        }
    }
    assert_eq!(inbox_rows.len(), 5);
}

/// Events numbered `seqs`, in that order, for the probe inbox.
fn probe_events(seqs: &[i32]) -> Vec<Envelope> {
    seqs.iter()
        .map(|&i| Envelope {
            id: nongsan_shared::EventId::new(),
            event_type: "probe.happened".to_owned(),
            source: "listing".to_owned(),
            aggregate_id: format!("agg-{i}"),
            version: 1,
            occurred_at: chrono::Utc::now(),
            data: json!({ "seq": i }),
        })
        .collect()
}

/// The inbox's rows, by number: (number, status, attempts, handled).
async fn inbox_rows(fx: &Fixture) -> Vec<(i32, String, i32, bool)> {
    sqlx::query_as(
        "SELECT (event->'data'->>'seq')::int, status, attempts, handled_at IS NOT NULL FROM inbox ORDER BY 1",
    )
    .fetch_all(&fx.consumer)
    .await
    .unwrap()
}

async fn effects(fx: &Fixture) -> Vec<i32> {
    sqlx::query_scalar("SELECT seq FROM effects ORDER BY seq")
        .fetch_all(&fx.consumer)
        .await
        .unwrap()
}

/// When nothing waits in the inbox, events are handled as they are received, once each (a
/// copy, in the same batch or later, is dropped); when a handler fails on receipt, its
/// batch is stored for the worker with nothing of it written; and while an event waits, a
/// newer one is not handled on receipt but stored for the worker, as every event was before.
#[tokio::test]
async fn events_are_handled_on_receipt_unless_an_earlier_one_waits() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let inbox =
        Inbox::new("probe", fx.consumer.clone(), fast()).on_named("probe.happened", FailsOnTwo);
    let first = probe_events(&[0, 1]);
    let with_a_copy = [first.clone(), vec![first[0].clone()]].concat();
    assert_eq!(inbox.ingest_many(&with_a_copy).await.unwrap(), 2);
    assert_eq!(effects(&fx).await, [0, 1], "handled on receipt, once each");
    assert_eq!(inbox.ingest_many(&first).await.unwrap(), 0, "copies");
    assert_eq!(effects(&fx).await, [0, 1]);
    assert_eq!(
        inbox_rows(&fx).await,
        [
            (0, "done".to_owned(), 1, true),
            (1, "done".to_owned(), 1, true)
        ]
    );

    // The handler fails on the event numbered 2: the batch (3 with it) is stored for the worker.
    assert_eq!(inbox.ingest_many(&probe_events(&[3, 2])).await.unwrap(), 2);
    assert_eq!(
        effects(&fx).await,
        [0, 1],
        "nothing of the failed batch stays"
    );
    // 2 waits, so 4 is not handled on receipt: it is stored for the worker.
    assert_eq!(inbox.ingest_many(&probe_events(&[4])).await.unwrap(), 1);
    assert_eq!(
        effects(&fx).await,
        [0, 1],
        "not handled on receipt while an event waits"
    );
    let waiting: Vec<(i32, String)> = inbox_rows(&fx)
        .await
        .into_iter()
        .filter(|(seq, ..)| *seq >= 2)
        .map(|(seq, status, ..)| (seq, status))
        .collect();
    assert_eq!(
        waiting,
        [
            (2, "pending".to_owned()),
            (3, "pending".to_owned()),
            (4, "pending".to_owned())
        ]
    );

    // The worker takes the three: 3 and 4 take effect, 2 fails again and is recorded.
    assert_eq!(inbox.work_batch(100).await.unwrap(), 3);
    assert_eq!(effects(&fx).await, [0, 1, 3, 4]);
    let rows = inbox_rows(&fx).await;
    assert_eq!(rows[2], (2, "pending".to_owned(), 1, false));
    assert_eq!(rows[3], (3, "done".to_owned(), 1, true));
    assert_eq!(rows[4], (4, "done".to_owned(), 1, true));
}

/// Records the batches it is given (one call number per batch) in `prelocked`.
struct RecordsBatches(std::sync::atomic::AtomicI32);

#[async_trait::async_trait]
impl events::Prelock for RecordsBatches {
    async fn lock(&self, tx: &mut PgConnection, events: &[Envelope]) -> anyhow::Result<()> {
        let call = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for e in events {
            sqlx::query("INSERT INTO prelocked (event_id, call) VALUES ($1, $2)")
                .bind(e.id)
                .bind(call)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// Records its event, failing when the batch's locks were not taken first in its transaction.
struct AfterThePrelock;

#[async_trait::async_trait]
impl Handler for AfterThePrelock {
    async fn handle(&self, tx: &mut PgConnection, e: &Envelope) -> anyhow::Result<()> {
        let prelocked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM prelocked WHERE event_id = $1")
                .bind(e.id)
                .fetch_one(&mut *tx)
                .await?;
        anyhow::ensure!(prelocked == 1, "handled before the batch's locks");
        anyhow::ensure!(e.data["seq"] != 8, "the event numbered 8 fails");
        Recorder.handle(tx, e).await
    }
}

/// An inbox's batch locks are taken once per batch, for all of its events whatever their
/// type, before any of them is handled: on receipt, by the worker, and by the worker again
/// when it handles a failed batch event by event.
#[tokio::test]
async fn a_batch_takes_its_locks_first_for_all_its_events_on_receipt_and_in_the_worker() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    sqlx::query("CREATE TABLE prelocked (event_id uuid NOT NULL, call int NOT NULL)")
        .execute(&fx.consumer)
        .await
        .unwrap();
    let inbox = Inbox::new("probe", fx.consumer.clone(), fast())
        .on_named("probe.happened", AfterThePrelock)
        .on_named("probe.other", AfterThePrelock)
        .prelocking(RecordsBatches(0.into()));
    // Two types in three runs: happened, other, happened.
    let batch = |seqs: &[i32]| {
        let mut events = probe_events(seqs);
        events[1].event_type = "probe.other".to_owned();
        events
    };
    let calls = || async {
        sqlx::query_scalar::<_, i32>("SELECT call FROM prelocked ORDER BY call, event_id")
            .fetch_all(&fx.consumer)
            .await
            .unwrap()
    };

    assert_eq!(inbox.ingest_many(&batch(&[0, 1, 2])).await.unwrap(), 3);
    assert_eq!(effects(&fx).await, [0, 1, 2], "handled on receipt");
    assert_eq!(calls().await, [0, 0, 0], "one call for the three");

    // An event waiting for a retry sends the next batch to the worker.
    sqlx::query(
        "INSERT INTO inbox (event_id, event_type, source, event, next_attempt_at)
         VALUES (gen_random_uuid(), 'probe.stuck', 'listing', '{}', now() + interval '1 hour')",
    )
    .execute(&fx.consumer)
    .await
    .unwrap();
    assert_eq!(inbox.ingest_many(&batch(&[3, 4, 5])).await.unwrap(), 3);
    assert_eq!(effects(&fx).await, [0, 1, 2]);
    assert_eq!(inbox.work_batch(100).await.unwrap(), 3);
    assert_eq!(
        effects(&fx).await,
        [0, 1, 2, 3, 4, 5],
        "handled by the worker"
    );
    assert_eq!(calls().await, [0, 0, 0, 1, 1, 1]);

    // The event numbered 8 fails: the worker's whole batch is undone (call 2), and the batch
    // handled event by event takes its locks first again (call 3).
    assert_eq!(inbox.ingest_many(&batch(&[6, 7, 8])).await.unwrap(), 3);
    assert_eq!(inbox.work_batch(100).await.unwrap(), 3);
    assert_eq!(effects(&fx).await, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(calls().await, [0, 0, 0, 1, 1, 1, 3, 3, 3]);
}

/// Passes of a paced relay that found events are at least its pace apart, so that each
/// carries what many commits wrote; an event after a quiet spell still goes at once.
#[tokio::test]
async fn a_paced_relay_takes_the_events_of_its_pause_together_and_a_lone_event_at_once() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    // Woken only by the commits' notifications: its poll is ten minutes away.
    let relay = Relay::new(
        fx.producer.clone(),
        "listing",
        Arc::new(InProcessBus::default()),
        Duration::from_secs(600),
    )
    // A pace far longer than the steps below take on a loaded machine.
    .with_pace(Duration::from_secs(10));
    let task = tokio::spawn(relay.run());
    let unpublished = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&fx.producer)
            .await
            .unwrap()
    };
    // The first pass finds nothing; a lone event after it goes well within the pace.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fx.emit(0, 1).await;
    eventually(
        Duration::from_secs(5),
        "the lone event published",
        || async { (unpublished().await == 0).then_some(()) },
    )
    .await;
    // Events written during the pause wait for its end, and go in one pass.
    fx.emit(1, 3).await;
    fx.emit(4, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unpublished().await, 5, "published during the pause");
    eventually(
        Duration::from_secs(30),
        "the pause's events published",
        || async { (unpublished().await == 0).then_some(()) },
    )
    .await;
    let passes: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT published_at) FROM outbox WHERE aggregate_id <> 'agg-0'",
    )
    .fetch_one(&fx.producer)
    .await
    .unwrap();
    assert_eq!(passes, 1, "the pause's events in one pass");
    task.abort();
}

/// A bus that takes its time over each batch: a relay with a backlog stays busy.
struct SlowBus;

#[async_trait::async_trait]
impl Bus for SlowBus {
    async fn publish(&self, _source: &str, _events: &[Envelope]) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
    async fn subscribe(
        &self,
        _source: &str,
        _inbox: Arc<Inbox>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
    fn mode(&self) -> nongsan_shared::http::Mode {
        InProcessBus::default().mode()
    }
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A relay working through a backlog still reads its notifications as they come. One that
/// read them only between backlogs left PostgreSQL's sending backend blocked on a full
/// socket, inside a transaction whose snapshot held back every vacuum of the cluster: at
/// 1,000,000 listings the outbox's dead rows piled up, each pass of the relay read 470,000 of
/// them (332 ms for 100 events), and events fell minutes behind (BENCHMARKS.md, 2026-12-05).
#[tokio::test]
async fn a_busy_relay_keeps_reading_its_notifications_so_its_connection_holds_no_snapshot() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    // A backlog of 30,000 events: 300 passes of at least 100 ms, 30 s in all, longer than the
    // wait below.
    sqlx::query(
        "INSERT INTO outbox (id, event_type, aggregate_id, version, payload)
         SELECT gen_random_uuid(), 'probe.happened', 'agg-' || i, 1, '{}' FROM generate_series(1, 30000) i",
    )
    .execute(&fx.producer)
    .await
    .unwrap();
    let task = tokio::spawn(
        Relay::new(
            fx.producer.clone(),
            "listing",
            Arc::new(SlowBus),
            Duration::from_secs(600),
        )
        .run(),
    );
    // This relay's connection: the cluster is shared with other tests, whose relays listen
    // on the same channel in databases of their own.
    let listening = "SELECT wait_event IS DISTINCT FROM 'ClientWrite' AND backend_xmin IS NULL
                     FROM pg_stat_activity WHERE datname = current_database()
                       AND query = 'LISTEN \"nongsan_outbox_listing\"'";
    eventually(Duration::from_secs(10), "the relay listening", || async {
        sqlx::query_scalar::<_, bool>(&format!("{listening} AND state = 'idle'"))
            .fetch_optional(&fx.producer)
            .await
            .unwrap()
            .filter(|free| *free)
    })
    .await;
    // 200,000 notifications (distinct, so none is folded into another) of 200 bytes each:
    // 40 MB, more than the sockets between PostgreSQL and the relay hold, over TCP as well.
    sqlx::query("SELECT count(pg_notify('nongsan_outbox_listing', i::text || repeat('x', 200))) FROM generate_series(1, 200000) i")
        .execute(&fx.producer)
        .await
        .unwrap();
    let unpublished = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&fx.producer)
            .await
            .unwrap()
    };
    // The connection soon has everything PostgreSQL had to send, while the relay is still at
    // its backlog. Reading 40 MB of notifications is a few seconds of CPU for an unoptimised
    // build on a loaded machine: up to 25 s are allowed.
    let mut free = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        free = sqlx::query_scalar::<_, bool>(listening)
            .fetch_one(&fx.producer)
            .await
            .unwrap();
        if free {
            break;
        }
    }
    let left = unpublished().await;
    assert!(
        left > 0,
        "the relay had finished its backlog: the test proves nothing"
    );
    assert!(
        free,
        "the relay's listening connection still waits to send (or holds a snapshot) with {left} events left"
    );
    task.abort();
}

/// An id of an event made `age` ago (UUIDv7 carries its time).
fn id_made(age: Duration) -> uuid::Uuid {
    let at = std::time::SystemTime::now() - age;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        since.as_secs(),
        since.subsec_nanos(),
    ))
}

const DAY: Duration = Duration::from_secs(86_400);

/// `n` outbox rows made `age` ago, published `published_days_ago` (`None`: not yet).
async fn old_outbox_rows(
    pool: &PgPool,
    n: usize,
    age: Duration,
    published_days_ago: Option<f64>,
) -> Vec<uuid::Uuid> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| id_made(age)).collect();
    sqlx::query(
        "INSERT INTO outbox (id, event_type, aggregate_id, payload, occurred_at, published_at)
         SELECT id, 'probe.happened', 'agg', '{}', now() - make_interval(secs => $2),
                now() - make_interval(secs => $3 * 86400)
         FROM unnest($1::uuid[]) id",
    )
    .bind(&ids)
    .bind(age.as_secs_f64())
    .bind(published_days_ago)
    .execute(pool)
    .await
    .unwrap();
    ids
}

/// `n` inbox rows of events made `age` ago, in `status`, handled `handled_days_ago`.
async fn old_inbox_rows(
    pool: &PgPool,
    n: usize,
    age: Duration,
    status: &str,
    handled_days_ago: Option<f64>,
) -> Vec<uuid::Uuid> {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| id_made(age)).collect();
    sqlx::query(
        "INSERT INTO inbox (event_id, event_type, source, event, status, received_at, handled_at)
         SELECT id, 'probe.happened', 'listing', '{}', $2, now() - make_interval(secs => $3),
                now() - make_interval(secs => $4 * 86400)
         FROM unnest($1::uuid[]) id",
    )
    .bind(&ids)
    .bind(status)
    .bind(age.as_secs_f64())
    .bind(handled_days_ago)
    .execute(pool)
    .await
    .unwrap();
    ids
}

#[tokio::test]
async fn events_older_than_the_retention_are_removed_once_published_or_handled_and_the_rest_stay() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    // Kept a week. More old rows than one statement deletes (5,000), in both tables.
    old_outbox_rows(&fx.producer, 12_000, 9 * DAY, Some(9.0)).await;
    let unpublished = old_outbox_rows(&fx.producer, 1, 9 * DAY, None).await;
    let published_lately = old_outbox_rows(&fx.producer, 1, 9 * DAY, Some(6.0)).await;
    let recent = old_outbox_rows(&fx.producer, 1, DAY, Some(1.0)).await;
    old_inbox_rows(&fx.consumer, 6_000, 10 * DAY, "done", Some(9.0)).await;
    // Handled seven and a half days ago: past the week, not past the inbox's extra day.
    let within_margin = old_inbox_rows(&fx.consumer, 1, 10 * DAY, "done", Some(7.5)).await;
    let pending = old_inbox_rows(&fx.consumer, 1, 10 * DAY, "pending", None).await;
    let dead = old_inbox_rows(&fx.consumer, 1, 10 * DAY, "dead", None).await;
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());

    let producer = Retention::new(fx.producer.clone(), "listing", bus.clone(), 7 * DAY);
    let consumer = Retention::new(fx.consumer.clone(), "probe", bus, 7 * DAY);
    assert_eq!(
        producer.prune_once().await.unwrap(),
        Pruned {
            outbox: 12_000,
            inbox: 0,
            stream: 0
        }
    );
    assert_eq!(
        consumer.prune_once().await.unwrap(),
        Pruned {
            outbox: 0,
            inbox: 6_000,
            stream: 0
        }
    );

    let mut left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id")
        .fetch_all(&fx.producer)
        .await
        .unwrap();
    let mut expected = [unpublished, published_lately, recent].concat();
    expected.sort();
    left.sort();
    assert_eq!(
        left, expected,
        "an unpublished event and those published within the week stay"
    );
    let mut left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM inbox")
        .fetch_all(&fx.consumer)
        .await
        .unwrap();
    let mut expected = [within_margin, pending, dead].concat();
    expected.sort();
    left.sort();
    assert_eq!(
        left, expected,
        "pending and dead-lettered events stay, and a handled one a day past the week"
    );
    assert_eq!(producer.prune_once().await.unwrap(), Pruned::default());
}

/// Reads up to `count` new entries of `stream` for `group`; answers their ids.
async fn read_as(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    count: usize,
) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::AsyncCommands::xread_options(
        con,
        &[stream],
        &[">"],
        &redis::streams::StreamReadOptions::default()
            .group(group, "reader")
            .count(count),
    )
    .await
    .unwrap();
    reply
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|m| m.id)
        .collect()
}

async fn ack(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    ids: &[String],
) {
    let _: i64 = redis::AsyncCommands::xack(con, stream, group, ids)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_is_trimmed_only_below_what_every_consumer_group_has_acknowledged() {
    let db = TestDb::new().await;
    let redis_url = servers().await.redis.clone();
    let bus = RedisBus::connect(&redis_url, &db.name).await.unwrap();
    let events = probe_events(&(0..30).collect::<Vec<_>>());
    bus.publish("listing", &events).await.unwrap();
    let stream = events::stream_name(&db.name, "listing");
    let mut con = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for group in ["ahead", "behind"] {
        let () = redis::AsyncCommands::xgroup_create(&mut con, &stream, group, "0")
            .await
            .unwrap();
    }
    // "ahead" read and acknowledged all 30; "behind" read 20 and acknowledged the first 10.
    let all = read_as(&mut con, &stream, "ahead", 30).await;
    assert_eq!(all.len(), 30);
    ack(&mut con, &stream, "ahead", &all).await;
    let read = read_as(&mut con, &stream, "behind", 20).await;
    ack(&mut con, &stream, "behind", &read[..10]).await;

    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let in_a_minute = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(
        bus.trim("listing", an_hour_ago).await.unwrap(),
        0,
        "nothing is older than the retention"
    );
    assert_eq!(
        bus.trim("listing", in_a_minute).await.unwrap(),
        10,
        "only what both groups acknowledged goes"
    );
    let first: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_count(&mut con, &stream, "-", "+", 1)
            .await
            .unwrap();
    assert_eq!(
        first.ids[0].id, all[10],
        "the oldest entry \"behind\" has not acknowledged stays"
    );

    ack(&mut con, &stream, "behind", &read[10..]).await;
    assert_eq!(
        bus.trim("listing", in_a_minute).await.unwrap(),
        9,
        "the entries \"behind\" has not read yet stay, and the last it was given"
    );
    let rest = read_as(&mut con, &stream, "behind", 30).await;
    assert_eq!(rest, all[20..]);
    ack(&mut con, &stream, "behind", &rest).await;
    assert_eq!(bus.trim("listing", in_a_minute).await.unwrap(), 10);
    assert_eq!(
        xlen(&redis_url, &stream).await,
        1,
        "the last delivered entry stays"
    );
}

/// Puts an entry in `stream` with the id of the moment `age` ago; answers its id.
async fn entry_made(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    age: Duration,
) -> String {
    let at = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap();
    redis::cmd("XADD")
        .arg(stream)
        .arg(format!("{}-0", at.timestamp_millis()))
        .arg("event")
        .arg("{}")
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test]
async fn handled_events_are_kept_while_a_stream_the_inbox_reads_may_still_deliver_them() {
    let db = TestDb::new().await;
    let fx = Fixture::new(&db).await;
    let redis_url = servers().await.redis.clone();
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(&redis_url, &db.name).await.unwrap());
    let mut con = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Handled ten and a half days ago: past the week and the inbox's extra day.
    old_inbox_rows(&fx.consumer, 3, 12 * DAY, "done", Some(10.5)).await;
    // The inbox reads two streams. The first still holds an entry put in it ten days ago (a
    // consumer group that has not acknowledged it keeps it), and one of now; the second,
    // only one of now. Events handled less than a day before that old entry may still be
    // in the first stream.
    let first = events::stream_name(&db.name, "listing");
    let second = events::stream_name(&db.name, "order");
    let old = entry_made(&mut con, &first, 10 * DAY).await;
    entry_made(&mut con, &first, Duration::ZERO).await;
    entry_made(&mut con, &second, Duration::ZERO).await;
    let consumer = Retention::new(fx.consumer.clone(), "probe", bus.clone(), 7 * DAY)
        .reading(&["listing", "order"]);
    assert_eq!(
        consumer.prune_once().await.unwrap().inbox,
        0,
        "handled less than a day before the oldest entry of a stream it reads"
    );
    // A service that does not read those streams is not held back by them.
    let not_reading = Retention::new(fx.consumer.clone(), "probe", bus.clone(), 7 * DAY);
    assert_eq!(not_reading.prune_once().await.unwrap().inbox, 3);
    // Once the old entry is gone, none of them can come again.
    old_inbox_rows(&fx.consumer, 2, 12 * DAY, "done", Some(10.5)).await;
    assert_eq!(consumer.prune_once().await.unwrap().inbox, 0);
    let _: i64 = redis::AsyncCommands::xdel(&mut con, &first, &[&old])
        .await
        .unwrap();
    assert_eq!(consumer.prune_once().await.unwrap().inbox, 2);
    // A retention longer than the calendar removes nothing (and does not fail).
    old_inbox_rows(&fx.consumer, 1, 12 * DAY, "done", Some(10.5)).await;
    let for_ever = Retention::new(fx.consumer.clone(), "probe", bus, Duration::MAX);
    assert_eq!(for_ever.prune_once().await.unwrap(), Pruned::default());
}

/// The consumer groups of `stream`, by name.
async fn groups_of(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await
        .unwrap();
    let mut names: Vec<String> = groups
        .iter()
        .filter_map(|g| redis::from_redis_value(g.get("name")?).ok())
        .collect();
    names.sort();
    names
}

/// A service leaves the streams it no longer reads. The listing service read its own until
/// its changes marked themselves for search; the consumer group an earlier version left
/// there would keep that stream from ever being trimmed.
#[tokio::test]
async fn a_service_leaves_a_stream_it_no_longer_reads() {
    let db = TestDb::new().await;
    let redis_url = servers().await.redis.clone();
    let stream = events::stream_name(&db.name, "listing");
    let mut con = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // As an earlier version left it.
    let (): () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("listing")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(groups_of(&mut con, &stream).await, ["listing"]);
    let settings = crate::support::test_settings(&db).await;
    let app = crate::support::TestApp::spawn_with(settings, db.clone()).await;
    let seller = app.api.register(Role::Household).await;
    app.api.listing_with_stock(&seller, "5").await;
    // The services that read the listing service's events made their groups; the listing
    // service left its own and made none again.
    eventually(
        Duration::from_secs(10),
        "the order and payment services' groups",
        || {
            let (mut con, stream) = (con.clone(), stream.clone());
            async move { (groups_of(&mut con, &stream).await == ["order", "payment"]).then_some(()) }
        },
    )
    .await;
    app.stop().await;
}
