//! Test harness: starts the real Aegis server on port 0 over a fresh database and hands out
//! tokens and gRPC clients.
//!
//! The database is a new SQLite file per test, or, when `AEGIS_TEST_DATABASE_URL` (or
//! [`TestAegisBuilder::database`]) names a PostgreSQL server, a new database on it per test
//! (dropped afterwards), so the same tests run on both backends. Logs stay silent unless `AEGIS_TEST_LOG` holds a filter (`debug`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use aegis::{Running, Settings};
use aegis_cases::domain::SlaPolicy;
use aegis_platform::{
    auth::{Role, ServiceTokenSource, User, mint_user_token},
    clock::{Clock, SharedClock, SystemClock},
    config::{AuthConfig, PlatformConfig, Secret, ServerConfig, UserKeySource},
    storage::Database,
};
use aegis_proto::aegis::cases::v1::case_service_client::CaseServiceClient;
use tonic::{
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

/// Environment variable naming a PostgreSQL server to run the tests against.
pub const TEST_DATABASE_URL: &str = "AEGIS_TEST_DATABASE_URL";
const ISSUER: &str = "aegis-test";
const AUDIENCE: &str = "aegis";

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The cases client the tests use.
pub type CasesClient = CaseServiceClient<InterceptedService<Channel, Bearer>>;

/// Builds a [`TestAegis`].
#[derive(Debug, Default)]
pub struct TestAegisBuilder {
    clock: Option<SharedClock>,
    sla: Option<SlaPolicy>,
    max_message_bytes: Option<usize>,
    postgres_url: Option<String>,
}

impl TestAegisBuilder {
    /// Creates the database on the PostgreSQL server at `url` (a `postgres://` URL whose
    /// user may create databases) instead of reading `AEGIS_TEST_DATABASE_URL`.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.postgres_url = Some(url.into());
        self
    }

    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Uses these SLA targets.
    pub fn sla(mut self, sla: SlaPolicy) -> Self {
        self.sla = Some(sla);
        self
    }

    /// Sets the largest message the server accepts.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Starts the server and waits until it answers.
    pub async fn start(self) -> TestAegis {
        init_logs();
        let dir = tempfile::tempdir().expect("temporary folder");
        let requested = self
            .postgres_url
            .or_else(|| std::env::var(TEST_DATABASE_URL).ok());
        let (database_url, postgres) = match requested {
            Some(url) if url.starts_with("postgres") => {
                let db = PostgresTestDatabase::create(&url).await;
                (db.url.clone(), Some(db))
            }
            _ => (
                format!("sqlite://{}", dir.path().join("aegis.db").display()),
                None,
            ),
        };
        let user_secret = Secret::new(aegis_platform::auth::random_secret());
        let service_secret = Secret::new(aegis_platform::auth::random_secret());
        let platform = PlatformConfig {
            server: ServerConfig {
                listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                shutdown_grace: Duration::from_secs(5),
                max_message_bytes: self.max_message_bytes.unwrap_or(4 * 1024 * 1024),
                cors_allowed_origins: Vec::new(),
            },
            database_url: database_url.clone(),
            auth: AuthConfig {
                issuer: ISSUER.to_owned(),
                audience: AUDIENCE.to_owned(),
                user_keys: UserKeySource::Hs256(user_secret.clone()),
                roles_claim: "roles".to_owned(),
                service_secret: service_secret.clone(),
            },
        };
        let settings = Settings {
            platform,
            sla: self.sla.unwrap_or_default(),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        };
        let server = aegis::bind(&settings, aegis::SERVICES)
            .await
            .expect("the server binds");
        let running = aegis::spawn(server);
        let aegis = TestAegis {
            addr: running.local_addr(),
            running: Some(running),
            user_secret,
            service_secret,
            database_url,
            _dir: dir,
            _postgres: postgres,
        };
        aegis.wait_until_serving().await;
        aegis
    }
}

/// A running Aegis for one test.
#[derive(Debug)]
pub struct TestAegis {
    addr: SocketAddr,
    running: Option<Running>,
    user_secret: Secret,
    service_secret: Secret,
    database_url: String,
    _dir: tempfile::TempDir,
    _postgres: Option<PostgresTestDatabase>,
}

impl TestAegis {
    /// A builder with defaults: fresh database, system clock, default SLA.
    pub fn builder() -> TestAegisBuilder {
        TestAegisBuilder::default()
    }

    /// Starts a server with the defaults.
    pub async fn start() -> TestAegis {
        Self::builder().start().await
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database URL the server uses, for tests that inspect or alter rows.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A second connection to the server's database.
    pub async fn database(&self) -> Database {
        Database::connect(&self.database_url)
            .await
            .expect("database")
    }

    /// A token for a user with the given roles.
    pub fn token(&self, user_id: &str, roles: &[Role]) -> String {
        let user = User {
            id: user_id.to_owned(),
            name: format!("{user_id} (test)"),
            email: format!("{user_id}@example.com"),
            roles: roles.to_vec(),
        };
        mint_user_token(
            &self.user_secret,
            ISSUER,
            AUDIENCE,
            &user,
            Duration::from_secs(3600),
        )
        .expect("token")
    }

    /// A token for an Aegis service.
    pub fn service_token(&self, service: &str) -> String {
        ServiceTokenSource::new(service, &self.service_secret)
            .and_then(|source| source.token())
            .expect("service token")
    }

    /// A plain channel to the server.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects")
    }

    /// A cases client sending `token` (or no token).
    pub async fn cases(&self, token: Option<&str>) -> CasesClient {
        let value = token.map(|t| format!("Bearer {t}").parse().expect("ascii token"));
        CaseServiceClient::with_interceptor(self.channel().await, Bearer(value))
    }

    /// A cases client acting as a user with `roles`.
    pub async fn cases_as(&self, user_id: &str, roles: &[Role]) -> CasesClient {
        let token = self.token(user_id, roles);
        self.cases(Some(&token)).await
    }

    async fn wait_until_serving(&self) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel().await);
        for _ in 0..200 {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(response) = health.check(request).await
                && response.into_inner().status == ServingStatus::Serving as i32
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the server did not report SERVING");
    }

    /// Drains and stops the server.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("the server stops cleanly");
        }
    }
}

fn init_logs() {
    if let Ok(filter) = std::env::var("AEGIS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A database of its own on the PostgreSQL server, dropped when the test ends.
#[derive(Debug)]
struct PostgresTestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresTestDatabase {
    async fn create(admin_url: &str) -> Self {
        sqlx::any::install_default_drivers();
        let name = format!("aegis_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_admin(admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    sqlx::AnyConnection::connect(url)
        .await
        .expect("connect to the PostgreSQL server named by AEGIS_TEST_DATABASE_URL")
}

impl Drop for PostgresTestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on itself.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut admin = connect_admin(&admin_url).await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            });
        })
        .join();
    }
}

/// The gRPC health client and messages, for tests of readiness.
pub mod health {
    pub use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
}
