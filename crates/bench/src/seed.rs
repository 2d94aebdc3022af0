//! Seeds cases straight into the database, the way the case store would have written them,
//! without going through the API (and so without their `case_created` events).

use std::time::{Duration, Instant};

use aegis_cases::domain::{CaseStatus, GENESIS_HASH, Severity, SlaPolicy};
use aegis_platform::storage::{Backend, Database, from_micros, to_micros};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Rows per transaction, and per multi-row INSERT: 15 parameters a row stays well under the
/// bound parameters either backend accepts in one statement (32,766 and 65,535).
const ROWS_PER_TRANSACTION: usize = 1_000;

/// How many distinct analysts cases are assigned to; [`ASSIGNEE_ME`] is one of them.
const ANALYSTS: usize = 20;

/// The user the benchmark calls as, who is assigned about 1 case in 28.
pub(crate) const ASSIGNEE_ME: &str = "analyst-00";

/// The text of the title search, found in about 1 title in 30.
pub(crate) const TITLE_SEARCH: &str = "payments";

const YEAR_MICROS: i64 = 365 * 24 * 3600 * 1_000_000;

const SECRETS: [&str; 12] = [
    "AWS access key",
    "GitHub token",
    "Slack webhook",
    "database password",
    "private SSH key",
    "Stripe secret key",
    "customer email list",
    "IBAN numbers",
    "passport scan",
    "Jira API token",
    "Google service account key",
    "publicly shared page",
];

const SPACES: [&str; 30] = [
    "Payments",
    "Platform",
    "Identity",
    "Billing",
    "Mobile",
    "Data",
    "Search",
    "Growth",
    "Support",
    "Legal",
    "Finance",
    "People",
    "Security",
    "Infra",
    "Checkout",
    "Catalog",
    "Ledger",
    "Risk",
    "Fraud",
    "Marketing",
    "Sales",
    "Design",
    "Analytics",
    "Messaging",
    "Storage",
    "Network",
    "Compliance",
    "Onboarding",
    "Partners",
    "Research",
];

const PAGES: [&str; 8] = [
    "runbook",
    "on-call notes",
    "onboarding guide",
    "release checklist",
    "incident review",
    "architecture overview",
    "team home",
    "meeting notes",
];

/// What seeding did.
#[derive(Debug)]
pub(crate) struct Seeded {
    pub(crate) rows: u64,
    pub(crate) elapsed: Duration,
    pub(crate) open: u64,
}

/// One seeded case: the columns the store sets on create, and those later changes would have
/// set (status, resolve time, the active exception).
struct Row {
    id: String,
    number: i64,
    title: String,
    description: String,
    severity: Severity,
    status: CaseStatus,
    assignee_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    sla_due_at: i64,
    sla_at_risk_at: i64,
    resolved_at: Option<i64>,
    exception_count: i64,
    active_exception_id: Option<String>,
}

/// Inserts cases numbered 1 to `count`, created over the year before `now`, and sets the
/// case number counter to `count`.
pub(crate) async fn seed_cases(
    db: &Database,
    count: u64,
    now: DateTime<Utc>,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x00ae_9150);
    let sla = SlaPolicy::default();
    let now_micros = to_micros(now);
    let first = now_micros - YEAR_MICROS;
    let step = YEAR_MICROS / i64::try_from(count.max(1))?;
    let mut open = 0;

    let mut number: i64 = 0;
    let total = i64::try_from(count)?;
    while number < total {
        let batch = usize::try_from((total - number).min(ROWS_PER_TRANSACTION as i64))?;
        let mut rows = Vec::with_capacity(batch);
        for _ in 0..batch {
            number += 1;
            // Numbers follow creation times, as they do when cases are created one by one.
            let created_at = first + (number - 1) * step + rng.random_range(0..step.max(1));
            let row = random_row(&mut rng, &sla, number, created_at, now_micros);
            if row.status == CaseStatus::Open {
                open += 1;
            }
            rows.push(row);
        }
        insert_rows(db, &rows).await?;
    }

    let mut tx = db.begin().await?;
    sqlx::query("UPDATE counters SET value = $1 WHERE name = 'case_number'")
        .bind(total)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Seeded {
        rows: count,
        elapsed: started.elapsed(),
        open,
    })
}

fn random_row(rng: &mut StdRng, sla: &SlaPolicy, number: i64, created_at: i64, now: i64) -> Row {
    let severity = match rng.random_range(0..100) {
        0..30 => Severity::Low,
        30..65 => Severity::Medium,
        65..90 => Severity::High,
        _ => Severity::Critical,
    };
    let status = match rng.random_range(0..100) {
        0..35 => CaseStatus::Open,
        35..55 => CaseStatus::InProgress,
        55..60 => CaseStatus::Exception,
        60..80 => CaseStatus::Remediated,
        _ => CaseStatus::Closed,
    };
    let assignee_id = if rng.random_range(0..10) < 3 {
        None
    } else {
        Some(format!("analyst-{:02}", rng.random_range(0..ANALYSTS)))
    };

    let (due, at_risk) = sla.deadlines(from_micros(created_at), severity);
    let (sla_due_at, sla_at_risk_at) = (to_micros(due), to_micros(at_risk));
    let window = sla_due_at - created_at;
    // Resolved cases were resolved somewhere in 130% of their window: most met their SLA.
    let resolved_at = matches!(status, CaseStatus::Remediated | CaseStatus::Closed)
        .then(|| (created_at + rng.random_range(0..window + window * 3 / 10)).min(now));
    let (exception_count, active_exception_id) = if status == CaseStatus::Exception {
        (1, Some(uuid::Uuid::new_v4().to_string()))
    } else {
        (0, None)
    };

    let secret = SECRETS[rng.random_range(0..SECRETS.len())];
    let space = SPACES[rng.random_range(0..SPACES.len())];
    let page = PAGES[rng.random_range(0..PAGES.len())];
    let created_secs = created_at.div_euclid(1_000_000);
    let created_nanos = u32::try_from(created_at.rem_euclid(1_000_000) * 1_000).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(created_secs).unwrap_or(0),
        created_nanos,
    );
    Row {
        id: uuid::Uuid::new_v7(timestamp).to_string(),
        number,
        title: format!("{secret} on the {space} {page}"),
        description: format!(
            "The scanner found a {} on the {space} space's {page}. Rotate or remove it, then \
             confirm the page history no longer shows it.",
            secret.to_lowercase()
        ),
        severity,
        status,
        assignee_id,
        created_at,
        updated_at: resolved_at.unwrap_or(created_at),
        sla_due_at,
        sla_at_risk_at,
        resolved_at,
        exception_count,
        active_exception_id,
    }
}

/// Inserts `rows` in one statement and transaction. On SQLite the placeholders are `?`:
/// binding numbered ones (`$N`) looks each name up in a list, which is quadratic in the
/// parameters of a statement (270 ms for 15,000 on the machine of BENCHMARKS.md).
async fn insert_rows(db: &Database, rows: &[Row]) -> anyhow::Result<()> {
    const PARAMS_PER_ROW: usize = 15;
    let mut sql = String::with_capacity(rows.len() * 160);
    sql.push_str(
        "INSERT INTO cases (id, number, title, title_folded, description, severity, status, \
         assignee_id, created_at, updated_at, sla_due_at, sla_at_risk_at, resolved_at, \
         exception_count, active_exception_id, created_by_kind, created_by_id, \
         created_by_name, version, evidence_seq, evidence_head) VALUES ",
    );
    for index in 0..rows.len() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for param in 0..PARAMS_PER_ROW {
            if param > 0 {
                sql.push_str(", ");
            }
            match db.backend() {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(index * PARAMS_PER_ROW + param + 1).to_string());
                }
            }
        }
        sql.push_str(", 'service', 'seed', 'Benchmark seed', 1, 0, '");
        sql.push_str(GENESIS_HASH);
        sql.push_str("')");
    }

    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.id.as_str())
            .bind(row.number)
            .bind(row.title.as_str())
            .bind(row.title.to_lowercase())
            .bind(row.description.as_str())
            .bind(row.severity.rank())
            .bind(row.status.as_str())
            .bind(row.assignee_id.as_deref())
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.sla_due_at)
            .bind(row.sla_at_risk_at)
            .bind(row.resolved_at)
            .bind(row.exception_count)
            .bind(row.active_exception_id.as_deref());
    }
    let mut tx = db.begin().await?;
    query
        .execute(&mut *tx)
        .await
        .context("insert seeded cases")?;
    tx.commit().await?;
    Ok(())
}
