//! The management HTTP API (RabbitMQ's shapes, the subset common tools call), Prometheus
//! metrics and the web dashboard, served by axum on the `management_listeners`.
//!
//! It owns nothing of the broker: every handler reads through the broker's views
//! ([`crate::broker::vhost::inspect`], [`crate::broker::queue::Queue::stats`]) or makes the same
//! calls an AMQP client's methods make (declare, delete, bind, purge), so what it changes is
//! checked and persisted exactly as over AMQP. It never holds a broker lock across an await, and
//! its only state of its own is the rate sampler ([`rates`]).
//!
//! Here: the shared state, the router and the server loop. Beside: `auth.rs` (Basic auth and
//! tags), `reply.rs` (errors and JSON values), `listing.rs` (paging, sorting, filtering),
//! `queues.rs`, `exchanges.rs`, `bindings.rs`, `messages.rs` (publish and get from the API),
//! `overview.rs` (overview, nodes, health checks), `connections.rs` (connections, channels,
//! consumers), `accounts.rs` (vhosts, users, permissions), `definitions.rs` (export and
//! import), `metrics.rs` (`/metrics`), `dashboard.rs` (the web pages in `www/`, built in),
//! `rates.rs` (the rate sampler).

mod accounts;
mod auth;
mod bindings;
mod cluster;
mod connections;
mod dashboard;
mod definitions;
mod exchanges;
mod listing;
mod lookup;
mod messages;
mod metrics;
mod overview;
mod queues;
pub mod rates;
mod reply;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::definitions::overlay::Overlay;
use crate::server::alarms::Thresholds;
use crate::server::{Server, Users};

/// The version reported as `rabbitmq_version` and `management_version`: the RabbitMQ release
/// whose management API shapes Warren answers in (tools check it for features).
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// What the handlers share: handles to the broker's state, never copies of it.
#[derive(Debug)]
pub struct Management {
    pub broker: Arc<Broker>,
    pub users: Users,
    /// The resource alarm in effect, if any.
    pub alarms: watch::Receiver<Option<String>>,
    pub thresholds: Arc<Thresholds>,
    pub data_dir: PathBuf,
    /// `warren@host`, as RabbitMQ's `rabbit@host`.
    pub node: String,
    /// The AMQP listeners (address, over TLS).
    pub listeners: Vec<(SocketAddr, bool)>,
    /// Where this API is served.
    pub http_listeners: Vec<SocketAddr>,
    pub started: Instant,
    pub started_at: SystemTime,
    pub rates: rates::Rates,
    /// The server's unacked timeout (consumers' `consumer_timeout` unless they or their queue
    /// say otherwise).
    pub consumer_timeout: std::time::Duration,
    /// The connection registry (connections, channels, their counters).
    pub registry: Arc<crate::server::registry::Registry>,
    /// Where account changes made through the API are recorded.
    pub accounts: Arc<Overlay>,
}

/// RFC 3986's unreserved characters stay as they are; everything else is `%XX`.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, percent-encoded (the vhost `/` is `%2F`).
pub fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// The node name: `warren@` and the host name.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("warren@{host}")
}

/// Every route.
pub fn router(state: Arc<Management>) -> Router {
    node_routes()
        .merge(object_routes())
        .merge(account_routes())
        .route(
            "/api/{*rest}",
            get(reply::not_found_route).put(reply::not_found_route),
        )
        .layer(middleware::from_fn(read_whole_body))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The largest request body read (RabbitMQ's `management.http.max_body_size` default, 20 MiB).
const MAX_BODY: usize = 20 * 1024 * 1024;

/// Reads a request's whole body before its handler runs, even when the handler takes none
/// (`PUT /api/vhosts/v` with `{}`). Left unread, hyper closes the connection after the reply
/// without saying so, and a client that reuses it (ureq, requests) gets a reset.
async fn read_whole_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => reply::ApiError::too_large(e.to_string()).into_response(),
    }
}

/// The node: overview, health, metrics and the dashboard's files.
fn node_routes() -> Router<Arc<Management>> {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/cluster/status", get(cluster::status))
        .route("/api/cluster/join", axum::routing::post(cluster::join))
        .route("/api/cluster/leave", axum::routing::post(cluster::leave))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/aliveness-test/{vhost}", get(overview::aliveness))
        .route("/api/health/checks/alarms", get(overview::alarms))
        .route("/api/health/checks/local-alarms", get(overview::alarms))
        .route(
            "/api/health/checks/virtual-hosts",
            get(overview::virtual_hosts),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(overview::port_listener),
        )
        .route("/", get(dashboard::index))
        .route("/www/{*file}", get(dashboard::file))
        .route("/metrics", get(metrics::metrics))
        .route("/api/metrics", get(metrics::metrics))
}

/// Queues, exchanges, bindings, messages, connections, channels and consumers.
fn object_routes() -> Router<Arc<Management>> {
    Router::new()
        .route("/api/queues", get(queues::all))
        .route("/api/queues/{vhost}", get(queues::in_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::one).put(queues::put).delete(queues::delete),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queues::purge),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::of_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/get",
            axum::routing::post(messages::get_messages),
        )
        .route("/api/exchanges", get(exchanges::all))
        .route("/api/exchanges/{vhost}", get(exchanges::in_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::one)
                .put(exchanges::put)
                .delete(exchanges::delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::from_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::to_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            axum::routing::post(messages::publish),
        )
        .route("/api/bindings", get(bindings::all))
        .route("/api/bindings/{vhost}", get(bindings::in_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(bindings::one).delete(bindings::delete),
        )
        .route("/api/connections", get(connections::connections))
        .route(
            "/api/connections/{name}",
            get(connections::connection).delete(connections::close_connection),
        )
        .route(
            "/api/connections/{name}/channels",
            get(connections::connection_channels),
        )
        .route("/api/channels", get(connections::channels))
        .route("/api/consumers", get(connections::consumers))
        .route("/api/consumers/{vhost}", get(connections::consumers_in))
}

/// Vhosts, users, permissions and definitions.
fn account_routes() -> Router<Arc<Management>> {
    Router::new()
        .route("/api/vhosts", get(accounts::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(accounts::vhost)
                .put(accounts::put_vhost)
                .delete(accounts::delete_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(accounts::vhost_permissions),
        )
        .route("/api/users", get(accounts::users))
        .route(
            "/api/users/{user}",
            get(accounts::user)
                .put(accounts::put_user)
                .delete(accounts::delete_user),
        )
        .route(
            "/api/users/{user}/permissions",
            get(accounts::user_permissions),
        )
        .route("/api/permissions", get(accounts::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(accounts::permission)
                .put(accounts::put_permission)
                .delete(accounts::delete_permission),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::vhost_connections),
        )
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
}

/// The management API running beside a server; its tasks stop when this is dropped.
#[derive(Debug)]
pub struct Running {
    _tasks: JoinSet<()>,
    /// The run-time account changes (applied over the configuration's at start and reload).
    pub accounts: Arc<Overlay>,
}

/// Applies the account changes recorded in the server's data directory, then (on a cluster)
/// those of the cluster's metadata group as they come, and serves the API
/// on the server's management listeners (if it has any) until the returned [`Running`] is
/// dropped. Call it once the server is bound, before it runs.
pub fn start(server: &mut Server) -> io::Result<Running> {
    let accounts = Arc::new(Overlay::open(Some(server.data_dir())));
    accounts.apply(&server.broker(), &server.users());
    // On a cluster, its changes come over this node's own from now on.
    let sink = crate::definitions::accounts::sink(server.users(), Arc::clone(&accounts));
    server.broker().follow_cluster(sink);
    let listeners = server.take_management_listeners();
    let mut tasks = JoinSet::new();
    if listeners.is_empty() {
        return Ok(Running {
            _tasks: tasks,
            accounts,
        });
    }
    let http_listeners = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;
    let state = Arc::new(Management {
        broker: server.broker(),
        users: server.users(),
        alarms: server.alarms(),
        thresholds: server.thresholds(),
        data_dir: server.data_dir().to_owned(),
        node: node_name(),
        listeners: server.listeners()?,
        http_listeners,
        started: Instant::now(),
        started_at: SystemTime::now(),
        rates: Default::default(),
        consumer_timeout: server.unacked_timeout(),
        registry: server.registry(),
        accounts: Arc::clone(&accounts),
    });
    tasks.spawn(rates::run(Arc::clone(&state), rates::SAMPLE_INTERVAL));
    for listener in listeners {
        tasks.spawn(serve(listener, Arc::clone(&state)));
    }
    Ok(Running {
        _tasks: tasks,
        accounts,
    })
}

/// Serves the API on `listener` (until the task is aborted).
async fn serve(listener: TcpListener, state: Arc<Management>) {
    let addr = listener.local_addr().ok();
    info!(?addr, "management API listening (HTTP)");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "management API stopped");
    }
}
