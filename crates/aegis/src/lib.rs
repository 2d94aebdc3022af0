//! Starting Aegis: every service in one process behind one port (`aegis up`), or one service
//! alone (`aegis serve cases`), as a library so tests start the real server on port 0.

use std::{future::Future, net::SocketAddr, sync::Arc};

use aegis_cases::domain::SlaPolicy;
use aegis_platform::{
    auth::Authenticator,
    clock::{SharedClock, SystemClock},
    config::PlatformConfig,
    server::{BoundServer, ServerBuilder},
};

/// The services that exist, by the name `aegis serve` takes.
pub const SERVICES: &[&str] = &["cases"];

/// What to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shared platform configuration.
    pub platform: PlatformConfig,
    /// SLA targets of the cases service.
    pub sla: SlaPolicy,
    /// Where services read the time.
    pub clock: SharedClock,
}

impl Settings {
    /// Settings with the system clock.
    pub fn new(platform: PlatformConfig, sla: SlaPolicy) -> Self {
        Self {
            platform,
            sla,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Builds and binds a server with the named services (all of them for `aegis up`).
pub async fn bind(settings: &Settings, services: &[&str]) -> anyhow::Result<BoundServer> {
    let authenticator = Authenticator::from_config(&settings.platform.auth).await?;
    let mut builder = ServerBuilder::new(settings.platform.server.clone(), authenticator);
    for name in services {
        match *name {
            "cases" => {
                let cases = aegis_cases::build(
                    &settings.platform,
                    &settings.platform.database_url,
                    settings.sla,
                    settings.clock.clone(),
                )
                .await?;
                builder = builder.require_database(cases.database).add_service(
                    cases
                        .api
                        .into_server(settings.platform.server.max_message_bytes),
                );
            }
            other => anyhow::bail!(
                "unknown service {other:?}; the services are: {}",
                SERVICES.join(", ")
            ),
        }
    }
    builder.bind().await
}

/// A server running in the background; stops on [`Running::stop`] or when dropped.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the server to drain and waits until it has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// Starts a bound server in the background.
pub fn spawn(server: BoundServer) -> Running {
    let local_addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Running {
        local_addr,
        stop: Some(stop),
        task,
    }
}

/// Runs a bound server in the foreground until `shutdown` completes.
pub async fn run(server: BoundServer, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    server.serve(shutdown).await
}
