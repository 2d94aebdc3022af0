//! The cases service: the risks Aegis tracks, their findings and comments, and the evidence
//! trail that records every change to them in a per-case SHA-256 hash chain.
//!
//! [`domain`] holds the rules (transition table, SLA, validation, hashing), [`storage`] the
//! transactions that apply them, and [`grpc`] the `aegis.cases.v1.CaseService` boundary.

pub mod domain;
pub mod grpc;
pub mod storage;

use std::sync::Arc;

use aegis_platform::{
    clock::SharedClock,
    config::{PlatformConfig, env},
    pagination::PageTokens,
    storage::Database,
};

use crate::{domain::SlaPolicy, grpc::CaseApi, storage::CaseStore};

/// Settings of the cases service.
#[derive(Debug, Clone, clap::Args)]
pub struct CasesArgs {
    /// SLA target of Critical cases, in days.
    #[arg(long, env = env::SLA_DAYS_CRITICAL, default_value_t = 7)]
    pub sla_days_critical: u32,
    /// SLA target of High cases, in days.
    #[arg(long, env = env::SLA_DAYS_HIGH, default_value_t = 30)]
    pub sla_days_high: u32,
    /// SLA target of Medium cases, in days.
    #[arg(long, env = env::SLA_DAYS_MEDIUM, default_value_t = 90)]
    pub sla_days_medium: u32,
    /// SLA target of Low cases, in days.
    #[arg(long, env = env::SLA_DAYS_LOW, default_value_t = 180)]
    pub sla_days_low: u32,
}

impl CasesArgs {
    /// The SLA policy, refusing targets of zero days.
    pub fn sla_policy(&self) -> anyhow::Result<SlaPolicy> {
        for (name, days) in [
            (env::SLA_DAYS_CRITICAL, self.sla_days_critical),
            (env::SLA_DAYS_HIGH, self.sla_days_high),
            (env::SLA_DAYS_MEDIUM, self.sla_days_medium),
            (env::SLA_DAYS_LOW, self.sla_days_low),
        ] {
            anyhow::ensure!((1..=3650).contains(&days), "{name} must be 1 to 3650 days");
        }
        Ok(SlaPolicy {
            critical_days: self.sla_days_critical,
            high_days: self.sla_days_high,
            medium_days: self.sla_days_medium,
            low_days: self.sla_days_low,
        })
    }
}

/// The cases service, ready to be added to a server.
#[derive(Debug)]
pub struct CasesService {
    /// The gRPC handler.
    pub api: CaseApi,
    /// Its database, for readiness.
    pub database: Database,
}

/// How long a `request_id` is remembered. Long enough for any client retry and for the other
/// services' outboxes to deliver an effect after an outage of weeks.
pub const IDEMPOTENCY_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// Forgets old `request_id`s once an hour, for as long as the store lives.
fn spawn_idempotency_purge(store: std::sync::Weak<CaseStore>, clock: SharedClock) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            interval.tick().await;
            let Some(store) = store.upgrade() else { return };
            match store
                .purge_idempotency_keys(clock.now() - IDEMPOTENCY_RETENTION)
                .await
            {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "old request ids forgotten"),
                Err(error) => tracing::warn!(error = %error, "cannot purge old request ids"),
            }
        }
    });
}

/// Opens the database at `database_url`, applies the migrations and builds the service.
pub async fn build(
    platform: &PlatformConfig,
    database_url: &str,
    sla: SlaPolicy,
    clock: SharedClock,
) -> anyhow::Result<CasesService> {
    let database = Database::connect(database_url).await?;
    database.migrate(&storage::MIGRATOR).await?;
    let store = Arc::new(CaseStore::new(database.clone(), sla, clock.clone()));
    spawn_idempotency_purge(Arc::downgrade(&store), clock.clone());
    let tokens = PageTokens::new(platform.auth.service_secret.expose().as_bytes());
    Ok(CasesService {
        api: CaseApi::new(store, tokens, clock),
        database,
    })
}
