//! The gRPC server every service runs in.
//!
//! [`ServerBuilder`] takes a service's tonic services and adds what every Aegis endpoint
//! serves: gRPC health (NOT_SERVING until the databases answer, and again while draining),
//! server reflection v1 and v1alpha, gRPC-web with CORS for browsers, authentication, and a
//! tracing span per request. [`BoundServer::serve`] runs until a shutdown future completes,
//! then drains in-flight calls for at most the configured grace period.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use http::{HeaderName, HeaderValue, Method};
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::server::TcpIncoming,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    auth::{AuthLayer, Authenticator},
    config::ServerConfig,
    storage::Database,
};

const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// Assembles a server from a service's tonic services; see the module docs.
#[derive(Debug)]
pub struct ServerBuilder {
    config: ServerConfig,
    authenticator: Authenticator,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    databases: Vec<Database>,
}

impl ServerBuilder {
    /// A server with the given settings, authenticating with `authenticator`.
    pub fn new(config: ServerConfig, authenticator: Authenticator) -> Self {
        Self {
            config,
            authenticator,
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            databases: Vec::new(),
        }
    }

    /// Adds a tonic service; its health status follows the databases.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Reports NOT_SERVING until `database` answers, and whenever it stops answering.
    pub fn require_database(mut self, database: Database) -> Self {
        self.databases.push(database);
        self
    }

    /// Binds the listening socket. The port is known from here on, so tests can bind port 0.
    pub async fn bind(self) -> anyhow::Result<BoundServer> {
        let listener = tokio::net::TcpListener::bind(self.config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.config.listen_addr))?;
        let local_addr = listener
            .local_addr()
            .context("cannot read the bound address")?;

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in std::iter::once("").chain(self.service_names.iter().copied()) {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let reflection_v1 = reflection(&self.service_names)
            .build_v1()
            .context("cannot build the reflection service")?;
        let reflection_v1alpha = reflection(&self.service_names)
            .build_v1alpha()
            .context("cannot build the reflection service")?;

        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        Ok(BoundServer {
            config: self.config,
            authenticator: self.authenticator,
            routes: routes.routes(),
            service_names: self.service_names,
            databases: self.databases,
            listener,
            local_addr,
            health,
        })
    }
}

/// A server whose socket is bound; [`BoundServer::serve`] runs it.
#[derive(Debug)]
pub struct BoundServer {
    config: ServerConfig,
    authenticator: Authenticator,
    routes: Routes,
    service_names: Vec<&'static str>,
    databases: Vec<Database>,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    health: HealthReporter,
}

impl BoundServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The names of the application services served (without health and reflection).
    pub fn service_names(&self) -> &[&'static str] {
        &self.service_names
    }

    /// Serves until `shutdown` completes, then stops accepting, reports NOT_SERVING and lets
    /// in-flight calls finish for at most the grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let names: Vec<&'static str> = std::iter::once("")
            .chain(self.service_names.iter().copied())
            .collect();
        let readiness = tokio::spawn(watch_readiness(
            self.health.clone(),
            names.clone(),
            self.databases,
        ));

        let cors = cors_layer(&self.config.cors_allowed_origins);
        // A refused call is the client's business, not an operator's: failures are logged at
        // debug here, and the handlers log what needs attention (internal errors, an
        // unavailable database) once, where they handle it.
        let trace = tower_http::trace::TraceLayer::new_for_grpc()
            .make_span_with(|request: &http::Request<Body>| {
                tracing::info_span!("grpc.request", rpc = %request.uri().path())
            })
            .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG));
        let layers = tower::ServiceBuilder::new()
            .layer(trace)
            .layer(cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(tower::util::MapResponseLayer::new(
                undecodable_request_is_invalid_argument,
            ))
            .layer(AuthLayer::new(self.authenticator));

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(layers)
            .add_routes(with_unserved_fallback(self.routes, &self.service_names))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                async {
                    let _ = drain_rx.await;
                },
            );
        tokio::pin!(server);

        tokio::select! {
            result = &mut server => {
                readiness.abort();
                return result.context("the server stopped");
            }
            () = shutdown => {}
        }

        readiness.abort();
        for name in &names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        let grace = self.config.shutdown_grace;
        tracing::info!(grace_secs = grace.as_secs(), "draining in-flight calls");
        let _ = drain_tx.send(());
        match tokio::time::timeout(grace, server).await {
            Ok(result) => {
                tracing::info!("drain finished");
                result.context("the server stopped with an error")
            }
            Err(_) => {
                tracing::warn!("drain did not finish within the grace period; closing connections");
                Ok(())
            }
        }
    }
}

/// Answers a call no route takes with `UNIMPLEMENTED` and a message that says what this
/// endpoint does serve, instead of tonic's empty one.
fn with_unserved_fallback(routes: Routes, served: &[&'static str]) -> Routes {
    let served = served.join(", ");
    let router = routes.into_axum_router().fallback(move |uri: http::Uri| {
        let served = served.clone();
        async move {
            let path = uri.path().trim_start_matches('/');
            let service = path.split('/').next().unwrap_or_default();
            let message = if service.starts_with("aegis.") {
                format!("{service} is not served by this endpoint; it serves {served}")
            } else {
                format!("unknown method {path}; this endpoint serves {served}")
            };
            let (parts, ()) = tonic::Status::unimplemented(message)
                .into_http::<()>()
                .into_parts();
            http::Response::from_parts(parts, Body::empty())
        }
    });
    Routes::from(router)
}

/// What tonic answers, as `INTERNAL`, when a request body is not a message of the RPC.
const UNDECODABLE_REQUEST: &[&str] = &[
    "failed to decode Protobuf message",
    "Missing request message",
    "Unexpected EOF decoding stream",
    "protocol error: received message",
];

/// A request the framework cannot decode is the caller's mistake, not a bug: tonic reports it
/// as `INTERNAL`, which would page an operator and tell the client nothing useful, so it is
/// answered as `INVALID_ARGUMENT`. Handlers never produce these messages themselves.
fn undecodable_request_is_invalid_argument<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|code| code == "13") {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        if UNDECODABLE_REQUEST
            .iter()
            .any(|prefix| message.starts_with(prefix))
        {
            headers.insert("grpc-status", HeaderValue::from_static("3"));
            headers.insert(
                "grpc-message",
                HeaderValue::from_static(
                    "the request body is not a valid protobuf message of this RPC",
                ),
            );
            headers.remove("grpc-status-details-bin");
        }
    }
    response
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            bytes[index],
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reflection knows every contract, so `grpcurl describe` documents all five, but lists only
/// the services this server answers.
fn reflection(service_names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aegis_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false);
    for name in service_names
        .iter()
        .copied()
        .chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ])
        .chain(["grpc.reflection.v1alpha.ServerReflection"])
    {
        builder = builder.with_service_name(name);
    }
    builder
}

async fn watch_readiness(
    health: HealthReporter,
    names: Vec<&'static str>,
    databases: Vec<Database>,
) {
    let mut serving = None;
    loop {
        let mut ready = true;
        for database in &databases {
            ready &= database.ping().await;
        }
        if serving != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in &names {
                health.set_service_status(*name, status).await;
            }
            if ready {
                tracing::info!("ready: database answers");
            } else {
                tracing::warn!("not ready: database does not answer");
            }
            serving = Some(ready);
        }
        tokio::time::sleep(READINESS_INTERVAL).await;
    }
}

fn cors_layer(allowed_origins: &[String]) -> CorsLayer {
    let origin = if allowed_origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(86_400))
}

/// Completes on SIGTERM or SIGINT, naming the signal in the log.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(error = %error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!(signal = "SIGINT", "shutdown requested");
    }
}
