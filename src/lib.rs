//! nongsan: the backend of a rural e-commerce marketplace for Vietnamese farm produce.
//!
//! This crate composes the three services into one process (`nongsan up`) or runs one of
//! them alone (`nongsan serve listing|order|payment`). `main.rs` only parses the command
//! line and calls [`build`]; the tests call the same [`build`] on port 0.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::Router;
use nongsan_shared::{
    client::PeerReadiness,
    config::Settings,
    embedded_pg::Released,
    http::{self, Readiness},
    runtime::{FINISH_WITHIN, Platform, Service, StopStep},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use utoipa::OpenApi;

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// Identity, sellers, catalog, inventory, search, traceability.
    Listing,
    /// Checkout, orders, the reservation saga.
    Order,
    /// Payments, webhooks, refunds, ledger, payouts.
    Payment,
}

impl ServiceName {
    /// All three, in start order.
    pub const ALL: [ServiceName; 3] = [
        ServiceName::Listing,
        ServiceName::Order,
        ServiceName::Payment,
    ];

    /// Its name: its schema, its `nongsan serve <name>` and its processes' name.
    pub fn name(self) -> &'static str {
        match self {
            ServiceName::Listing => nongsan_listing::NAME,
            ServiceName::Order => nongsan_order::NAME,
            ServiceName::Payment => nongsan_payment::NAME,
        }
    }

    /// The service that serves `path` (a path with or without its query) in the split shape:
    /// checkouts and orders are the order service's, payments the payment service's,
    /// everything else (and every path outside `/v1/`) the listing service's. Callers of the
    /// split shape (the tests, the benchmark) route by it; a test checks it against every
    /// path in each service's OpenAPI document.
    pub fn serving(path: &str) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
        };
        if [
            "/v1/checkouts",
            "/v1/orders",
            "/v1/ops/order",
            "/v1/internal/checkouts",
        ]
        .into_iter()
        .any(under)
        {
            Self::Order
        } else if ["/v1/payments", "/v1/internal/payments", "/v1/ops/payment"]
            .into_iter()
            .any(under)
        {
            Self::Payment
        } else {
            Self::Listing
        }
    }

    async fn start(self, platform: &Platform) -> anyhow::Result<Service> {
        match self {
            ServiceName::Listing => nongsan_listing::start(platform).await,
            ServiceName::Order => nongsan_order::start(platform).await,
            ServiceName::Payment => nongsan_payment::start(platform).await,
        }
        .with_context(|| format!("starting the {self:?} service"))
    }

    /// The service's part of the OpenAPI document, with its dead-letter routes: taken from
    /// the same routers the service serves (see [`Service::new`]).
    fn openapi(self) -> utoipa::openapi::OpenApi {
        let mut doc = match self {
            ServiceName::Listing => nongsan_listing::routes().into_openapi(),
            ServiceName::Order => nongsan_order::routes().into_openapi(),
            ServiceName::Payment => nongsan_payment::routes().into_openapi(),
        };
        doc.merge(nongsan_shared::events::ops_routes(self.name()).into_openapi());
        doc
    }

    /// Runs this service's migrations.
    async fn migrate(self, platform: &Platform) -> anyhow::Result<()> {
        let migrator = match self {
            ServiceName::Listing => &nongsan_listing::MIGRATOR,
            ServiceName::Order => &nongsan_order::MIGRATOR,
            ServiceName::Payment => &nongsan_payment::MIGRATOR,
        };
        platform
            .open_schema(self.name(), migrator)
            .await?
            .close()
            .await;
        Ok(())
    }
}

/// The part of the OpenAPI document that is not any route's: its info, shared schemas, the
/// `ops` tag and the `bearer` scheme. The operations come from the routers ([`openapi`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "nongsan",
        description = "Backend of a rural e-commerce marketplace for Vietnamese farm produce. Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`; `Accept-Language: vi` or `en` picks the language of `detail`.",
        license(name = "AGPL-3.0-or-later")
    ),
    components(schemas(nongsan_shared::error::ProblemSchema, nongsan_shared::error::ProblemFieldSchema, nongsan_shared::events::DeadLetter)),
    tags((name = "ops", description = "Health, readiness, metrics and the dead-letter lists")),
    modifiers(&BearerAuth)
)]
struct BaseDoc;

/// Declares the `bearer` security scheme the operations refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the given services, with the health, readiness and metrics routes
/// every process serves.
pub fn openapi(services: &[ServiceName]) -> utoipa::openapi::OpenApi {
    let mut doc = BaseDoc::openapi();
    doc.merge(http::ops_routes().into_openapi());
    for s in services {
        doc.merge(s.openapi());
    }
    http::document_body_limit(&mut doc);
    http::document_common_responses(&mut doc);
    doc
}

/// A running nongsan process (or an in-process app in tests).
pub struct Running {
    /// The address it serves on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// The services' last steps on a graceful stop ([`Service::on_stop`]); in a mutex, which
    /// is never contended, only so that `Running` is `Sync` (a future is not).
    on_stop: std::sync::Mutex<Vec<(&'static str, StopStep)>>,
    platform: Platform,
    /// The router the services call each other through (held weakly by their clients).
    router: Arc<Router>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The platform (database, bus, keys) the services run on.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Stops serving (open requests finish), stops the workers, has the services finish what
    /// the workers left in memory (each step bounded by [`FINISH_WITHIN`]), and leaves the
    /// private PostgreSQL cluster, stopping it unless another process still uses it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server failed"),
            Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
        }
        // Checkouts whose buyers left before their answer run on; the workers and peers they
        // need are still there.
        if !nongsan_shared::telemetry::runs_completed(FINISH_WITHIN).await {
            tracing::warn!(
                within = ?FINISH_WITHIN,
                "work that runs to its end without its request did not end in time; stopping without it"
            );
        }
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let steps = self
            .on_stop
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (service, step) in steps {
            // A task of its own: a step that panics does not keep the rest from stopping.
            let task = tokio::spawn(step);
            let abort = task.abort_handle();
            match tokio::time::timeout(FINISH_WITHIN, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(service, error = %e, "a service's last step before stopping failed")
                }
                Err(_) => {
                    abort.abort();
                    tracing::warn!(
                        service,
                        within = ?FINISH_WITHIN,
                        "a service's last step before stopping did not finish in time; stopping without it"
                    );
                }
            }
        }
        // The services' state, the search index's writer with it, goes with the last router:
        // requests and workers called their peers through it until now.
        drop(self.router);
        close(self.platform).await;
    }
}

/// `/docs`: Swagger UI reading `/openapi.json`, served from the files `utoipa-swagger-ui`
/// vendors (embedded in release builds; no CDN, so it works offline). `/docs` redirects to
/// `/docs/`.
fn docs_page() -> Router {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into()
}

/// Closes the platform's pools and leaves its private PostgreSQL cluster, which is stopped
/// only when no other process uses it (a `nongsan seed` run while `nongsan up` serves must
/// not stop the server's database).
async fn close(mut platform: Platform) {
    let embedded = platform.embedded.take();
    platform.shutdown().await;
    let Some(pg) = embedded else { return };
    match pg.release().await {
        Ok(Released::Stopped) => tracing::info!("stopped the private PostgreSQL cluster"),
        Ok(Released::InUse) => tracing::info!(
            "left the private PostgreSQL cluster running: another nongsan process uses it"
        ),
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "could not stop the private PostgreSQL cluster"
        ),
    }
}

/// Binds the port, starts the platform and the given services, and serves them.
pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Running> {
    let client_ip_header = settings
        .client_ip_header
        .as_deref()
        .map(|h| {
            axum::http::HeaderName::try_from(h)
                .map_err(|_| anyhow::anyhow!("NONGSAN_CLIENT_IP_HEADER `{h}` is not a header name"))
        })
        .transpose()?;
    let listener = TcpListener::bind(settings.bind_addr())
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind_addr()))?;
    let addr = listener.local_addr()?;
    let self_url = match addr {
        a if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        a => format!("http://{a}"),
    };
    let platform = Platform::start(settings, &self_url).await?;
    let mut checks: Vec<Arc<dyn Readiness>> = platform.readiness();
    let mut router = Router::new();
    let mut tasks = Vec::new();
    let mut on_stop = Vec::new();
    let mut relays = Vec::new();
    let mut started = Vec::new();
    for name in services {
        let service = match name.start(&platform).await {
            Ok(s) => s,
            Err(e) => {
                close(platform).await;
                return Err(e);
            }
        };
        checks.extend(service.readiness);
        router = router.merge(service.router);
        tasks.extend(service.workers);
        on_stop.extend(service.on_stop.into_iter().map(|step| (service.name, step)));
        relays.push(service.relay);
        started.push(*name);
    }
    // In the split shape, the services this process does not run are peers it must reach.
    if services.len() < ServiceName::ALL.len() {
        for peer in ServiceName::ALL.iter().filter(|s| !services.contains(s)) {
            let client = match peer {
                ServiceName::Listing => platform.peers.listing.clone(),
                ServiceName::Order => platform.peers.order.clone(),
                ServiceName::Payment => platform.peers.payment.clone(),
            };
            if client.base() != self_url {
                checks.push(Arc::new(PeerReadiness(client)));
            }
        }
    }
    // Relays start only now, when every inbox in this process is subscribed.
    tasks.extend(relays.into_iter().map(|r| tokio::spawn(r.run())));
    let router = http::with_common_layers(
        router
            .merge(http::ops_routes().with_state(Arc::new(checks)))
            .merge(http::docs_router(openapi(&started)))
            .merge(docs_page()),
    );
    let router = router.layer(axum::middleware::from_fn_with_state(
        client_ip_header,
        http::record_client_addr,
    ));
    // Calls between the services of this process go through the router in memory from now,
    // for as long as `Running` holds it.
    let router = Arc::new(router);
    platform.local.set(&router);
    let (stop, mut stopped) = watch::channel(false);
    let served = Router::clone(&router);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            served.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
    });
    tracing::info!(%addr, services = ?started, "nongsan is serving");
    Ok(Running {
        addr,
        stop,
        server,
        tasks,
        on_stop: std::sync::Mutex::new(on_stop),
        platform,
        router,
    })
}

/// Runs every service's migrations and exits.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let platform = Platform::start(settings, "http://127.0.0.1:0").await?;
    let mut result = Ok(());
    for s in ServiceName::ALL {
        result = s.migrate(&platform).await;
        if result.is_err() {
            break;
        }
    }
    close(platform).await;
    result
}

/// What `nongsan seed` should create.
#[derive(Debug, Clone, Default)]
pub struct SeedRequest {
    /// The demo catalog: households, a cooperative and the 50 demo products.
    pub demo: bool,
    /// An operator account with this phone number and password.
    pub operator: Option<(nongsan_shared::PhoneNumber, String)>,
}

/// Creates demo data and/or an operator account; says what it did, in lines a shell can
/// `eval`: remarks are `#` comments, and the demo accounts are told as assignments
/// (`DEMO_PASSWORD`, a random password given to the demo accounts this run created, told only
/// then; `DEMO_SELLERS`, a phone number, a tab and a name per line; `DEMO_MANAGER`). The
/// names are not `NONGSAN_` settings, so exporting them does not upset the configuration.
pub async fn seed(settings: Settings, request: SeedRequest) -> anyhow::Result<Vec<String>> {
    let platform = Platform::start(settings, "http://127.0.0.1:0").await?;
    let result = async {
        let pool = platform
            .open_schema(nongsan_listing::NAME, &nongsan_listing::MIGRATOR)
            .await?;
        let mut said = Vec::new();
        if request.demo {
            said.extend(seed_demo(&pool).await?);
        }
        if let Some((phone, password)) = request.operator {
            let id = nongsan_listing::identity::roles::upsert_operator(&pool, &phone, password)
                .await
                .map_err(|e| anyhow::anyhow!("creating the operator: {e}"))?;
            said.push(format!("# operator {} is account {id}", phone.masked()));
        }
        // Relays are not running here; the events wait in the outbox for the next start.
        pool.close().await;
        anyhow::Ok(said)
    }
    .await;
    close(platform).await;
    result
}

/// Seeds the demo data and tells its accounts (see [`seed`]).
async fn seed_demo(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    use nongsan_listing::seed;
    let password = seed::new_demo_password();
    let made = seed::seed_demo_with_password(pool, &password).await?;
    let sellers = seed::demo_households()?;
    let mut said = Vec::new();
    if made == 0 {
        said.push(
            "# demo data is already there: nothing changed; its accounts' password \
             (DEMO_PASSWORD) was printed when it was created"
                .to_owned(),
        );
    } else {
        said.push(format!(
            "# created {made} demo listings of {} demo households and a demo cooperative",
            sellers.len()
        ));
        said.push(
            "# every demo account signs in with its phone number and this password, which only \
             `nongsan seed --demo` sets, on the demo accounts it creates"
                .to_owned(),
        );
        said.push(format!("DEMO_PASSWORD={}", shell_quote(&password)));
    }
    let lines: Vec<String> = sellers
        .iter()
        .map(|s| format!("{}\t{}", s.phone.as_str(), s.name))
        .collect();
    said.push("# the demo households: phone number, a tab, name".to_owned());
    said.push(format!("DEMO_SELLERS={}", shell_quote(&lines.join("\n"))));
    said.push("# the demo cooperative's manager".to_owned());
    said.push(format!(
        "DEMO_MANAGER={}",
        shell_quote(seed::demo_manager_phone().as_str())
    ));
    Ok(said)
}

/// `s` as one word for a POSIX shell: in single quotes, each `'` written `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Imports a cooperative's stock from a CSV or XLSX file as its manager, all rows or none;
/// the same rows imported before only when `again`. `progress` is told the number of rows,
/// then each row checked (the rows are then taken in together).
pub async fn import_stock(
    settings: Settings,
    cooperative: nongsan_shared::CooperativeId,
    file: &std::path::Path,
    again: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    use nongsan_listing::stock::imports;
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    anyhow::ensure!(
        size <= imports::MAX_IMPORT_BYTES as u64,
        "{} is larger than {} MiB: split it into several imports",
        file.display(),
        imports::MAX_IMPORT_BYTES / (1024 * 1024)
    );
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let kind = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
    {
        imports::FileKind::Xlsx
    } else {
        imports::FileKind::Csv
    };
    let rows = imports::read_file(kind, &bytes).map_err(describe_listing_error)?;
    let platform = Platform::start(settings, "http://127.0.0.1:0").await?;
    let result = async {
        let pool = platform
            .open_schema(nongsan_listing::NAME, &nongsan_listing::MIGRATOR)
            .await?;
        let manager = sqlx::query_scalar!(
            r#"SELECT manager_id AS "manager_id: nongsan_shared::AccountId" FROM cooperatives WHERE id = $1"#,
            cooperative as _,
        )
        .fetch_optional(&pool)
        .await?
                .ok_or_else(|| anyhow::anyhow!("there is no cooperative {cooperative}"))?;
        let actor = nongsan_shared::auth::Actor {
            account_id: manager,
            role: nongsan_shared::auth::Role::CooperativeManager,
            on_behalf_of: None,
        };
        let mut tx = pool.begin().await?;
        progress(rows.len(), 0);
        let report = imports::import_rows(&mut tx, &actor, cooperative, &rows, again, &|n| {
            progress(rows.len(), n)
        })
        .await
        .map_err(describe_listing_error)?;
        tx.commit().await?;
        pool.close().await;
        anyhow::Ok(report.imported)
    }
    .await;
    close(platform).await;
    result
}

/// A listing error as lines for a terminal: each bad field or row on its own line.
fn describe_listing_error(e: nongsan_listing::error::ListingError) -> anyhow::Error {
    match e {
        nongsan_listing::error::ListingError::Invalid(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.text.en))
                .collect();
            anyhow::anyhow!("nothing was imported:\n{}", lines.join("\n"))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

/// Rebuilds the search index from PostgreSQL; `progress(total, done)` after each batch.
pub async fn reindex(
    settings: Settings,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    let engine = nongsan_listing::search::engine_for(&settings).await?;
    let platform = Platform::start(settings, "http://127.0.0.1:0").await?;
    let result = async {
        let pool = platform
            .open_schema(nongsan_listing::NAME, &nongsan_listing::MIGRATOR)
            .await?;
        let n = nongsan_listing::search::indexer::reindex(&pool, engine.as_ref(), progress).await?;
        pool.close().await;
        anyhow::Ok(n)
    }
    .await;
    close(platform).await;
    result
}

#[cfg(test)]
mod tests {
    use super::ServiceName;

    #[test]
    fn every_documented_path_is_routed_to_the_service_that_serves_it() {
        let mut paths = 0;
        for service in ServiceName::ALL {
            for path in service.openapi().paths.paths.keys() {
                assert_eq!(ServiceName::serving(path), service, "{path}");
                paths += 1;
            }
        }
        assert!(paths > 50, "only {paths} paths documented");
        assert_eq!(
            ServiceName::serving("/v1/orders?status=placed"),
            ServiceName::Order
        );
        assert_eq!(
            ServiceName::serving("/v1/ordersomething"),
            ServiceName::Listing
        );
        assert_eq!(ServiceName::serving("/healthz"), ServiceName::Listing);
    }
}
