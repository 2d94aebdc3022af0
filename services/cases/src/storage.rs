//! Cases, findings, comments and the evidence trail in the database.
//!
//! Every operation that changes a case opens one transaction, visible in its method, that
//! locks the case row, checks the rules of [`crate::domain`], applies the change and appends
//! exactly one evidence event per change; the event's hash links to the case's previous event
//! (kept on the case row, so two writers can never fork the chain). A `request_id` is recorded
//! in the same transaction with the result it produced, so a retry returns that result and
//! changes nothing more.
//!
//! The SQL runs unchanged on SQLite and PostgreSQL; see [`aegis_platform::storage`].

use std::{collections::HashMap, time::Duration};

use aegis_platform::{
    clock::SharedClock,
    error::Violation,
    pagination::PageTokenError,
    storage::{Database, DbErrorClass, classify, from_micros, to_micros},
};
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction, any::AnyRow};

use crate::domain::{
    Actor, ActorKind, AssigneeFilter, Case, CaseFilter, CaseOrder, CaseRef, CaseStatus,
    ChainVerification, Comment, EventContent, EvidenceEvent, Finding, GENESIS_HASH, JiraLink,
    Severity, SlaPolicy, SlaStatus, event_hash, event_type, verify_chain,
};

/// Runs an `async` block again, a bounded number of times, when a concurrent transaction won.
/// A macro rather than a function taking a closure, so each attempt is a fresh future and the
/// handler futures stay `Send`.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut retries = 0;
        loop {
            match $attempt.await {
                Err(CaseError::Conflict) if retries < CONFLICT_RETRIES => {
                    retries += 1;
                    conflict_backoff(retries).await;
                }
                other => break other,
            }
        }
    }};
}

async fn conflict_backoff(retries: u32) {
    let jitter = u64::from(rand::random::<u8>() % 20);
    tokio::time::sleep(Duration::from_millis(5 * u64::from(retries) + jitter)).await;
}

/// The migrations of the cases schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Cases in one transaction of a bulk action.
const BULK_CHUNK: usize = 500;
const CONFLICT_RETRIES: u32 = 5;
/// Rows of one multi-row statement of a bulk action: 11 parameters a row keeps a statement
/// far below what either backend binds, and SQLite's lookup of numbered parameters (linear in
/// their count, so quadratic per statement) cheap.
const ROWS_PER_STATEMENT: usize = 50;

/// Why a storage operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The input breaks a rule.
    #[error("invalid input")]
    Invalid(Vec<Violation>),
    /// The named thing does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `case` or `finding`.
        kind: &'static str,
        /// As given.
        id: String,
    },
    /// The transition table does not allow the move.
    #[error("a case cannot move from {from} to {to}")]
    InvalidTransition {
        /// Current status.
        from: CaseStatus,
        /// Requested status.
        to: CaseStatus,
    },
    /// The etag is stale.
    #[error("the case changed since it was read")]
    EtagMismatch {
        /// The current etag.
        current: String,
    },
    /// The finding is already linked to the case.
    #[error("finding {finding_id} is already linked to the case")]
    AlreadyLinked {
        /// Finding id.
        finding_id: String,
    },
    /// The finding is not linked to the case.
    #[error("finding {finding_id} is not linked to the case")]
    NotLinked {
        /// Finding id.
        finding_id: String,
    },
    /// The state of the case does not allow the action.
    #[error("{0}")]
    Precondition(String),
    /// The `request_id` was used before for a different request.
    #[error("request_id was already used for a different request")]
    RequestIdReused,
    /// Concurrent writers kept winning.
    #[error("the database stayed busy; retry")]
    Conflict,
    /// The database is unreachable.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else.
    #[error("storage failure")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for CaseError {
    fn from(error: sqlx::Error) -> Self {
        match classify(&error) {
            DbErrorClass::UniqueViolation | DbErrorClass::Conflict => CaseError::Conflict,
            DbErrorClass::Unavailable => CaseError::Unavailable(error),
            DbErrorClass::ForeignKeyViolation | DbErrorClass::Other => {
                CaseError::Internal(error.into())
            }
        }
    }
}

impl From<serde_json::Error> for CaseError {
    fn from(error: serde_json::Error) -> Self {
        CaseError::Internal(error.into())
    }
}

type Result<T, E = CaseError> = std::result::Result<T, E>;
type Tx = Transaction<'static, Any>;

/// Identifies a retried call: who sent it, its `request_id`, and a fingerprint of the request
/// so that a reused id with a different request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The caller's stable id.
    pub caller_id: String,
    /// The client's `request_id`.
    pub request_id: String,
    /// SHA-256 of the request without its `request_id`.
    pub fingerprint: String,
}

/// A new case.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// Title, validated.
    pub title: String,
    /// Description, validated.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// Assignee.
    pub assignee_id: Option<String>,
    /// Findings to link at once.
    pub finding_ids: Vec<String>,
}

/// Changes to a case's fields; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct CaseChanges {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New severity.
    pub severity: Option<Severity>,
}

/// A finding to record.
#[derive(Debug, Clone)]
pub struct NewFinding {
    /// Scanner id.
    pub external_id: Option<String>,
    /// Summary.
    pub title: String,
    /// Rule.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Content id.
    pub content_id: String,
    /// Space key.
    pub space_key: String,
    /// Page title.
    pub page_title: String,
    /// Page URL.
    pub page_url: String,
    /// Excerpt.
    pub excerpt: String,
    /// Detection time; now when unset.
    pub detected_at: Option<DateTime<Utc>>,
}

/// A step of a risk exception's life recorded on its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionDecision {
    /// Requested: the pending badge is set.
    Requested,
    /// Approved: the case is in Exception.
    Approved,
    /// Revoked.
    Revoked,
    /// Expired.
    Expired,
}

/// What ApplyExceptionDecision records.
#[derive(Debug, Clone)]
pub struct ExceptionEffect {
    /// Which exception.
    pub exception_id: String,
    /// Which step.
    pub decision: ExceptionDecision,
    /// Event details.
    pub payload: serde_json::Map<String, Value>,
    /// The approved exception a renewal supersedes.
    pub superseded_exception_id: Option<String>,
    /// Who the reopened case goes to on expiry.
    pub reassign_to: Option<String>,
}

/// The target of a bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkTarget {
    /// Close All.
    Closed,
    /// Resolve All.
    Remediated,
}

impl BulkTarget {
    fn status(self) -> CaseStatus {
        match self {
            Self::Closed => CaseStatus::Closed,
            Self::Remediated => CaseStatus::Remediated,
        }
    }
}

/// What a bulk action did to one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum BulkResult {
    /// Moved; one event written.
    Done,
    /// Already there.
    AlreadyInStatus,
    /// The table does not allow it.
    NotAllowed,
    /// No such case.
    NotFound,
}

/// One outcome of a bulk action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BulkOutcome {
    /// The id as given.
    pub case_ref: String,
    /// What happened.
    pub result: BulkResult,
    /// Status afterwards.
    pub status: Option<CaseStatus>,
    /// Explanation.
    pub message: String,
}

/// A page of results with the cursor of its last row, when more may follow.
#[derive(Debug, Clone)]
pub struct Page<T, C> {
    /// The rows.
    pub items: Vec<T>,
    /// Cursor for the next page.
    pub next: Option<C>,
}

/// Sort key of the last case of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CaseCursor {
    /// First sort value (created time, severity rank or due time).
    pub primary: i64,
    /// Second sort value (created time for severity order, otherwise unused).
    pub secondary: i64,
    /// Case number, the tie-breaker.
    pub number: i64,
}

/// The case store.
#[derive(Debug, Clone)]
pub struct CaseStore {
    db: Database,
    sla: SlaPolicy,
    clock: SharedClock,
}

const CASE_COLUMNS: &str = "id, number, title, description, severity, status, assignee_id, \
     created_by_kind, created_by_id, created_by_name, created_at, updated_at, sla_due_at, \
     sla_at_risk_at, resolved_at, finding_count, comment_count, exception_count, \
     pending_exception_id, active_exception_id, jira_issue_id, jira_issue_key, \
     jira_browse_url, jira_status_name, jira_status_category, jira_status_fetched_at, version, \
     evidence_seq, evidence_head";

const FINDING_COLUMNS: &str = "id, external_id, title, rule, severity, content_id, space_key, \
     page_title, page_url, excerpt, detected_at, created_at";

const EVENT_COLUMNS: &str = "id, case_id, seq, event_type, actor_kind, actor_id, actor_name, \
     occurred_at, payload, previous_hash, hash";

/// Whether a change gives the case a new etag. The etag guards what a person edits: title,
/// description, severity, status, assignee and the exception holding it. Comments, finding
/// links and the Jira link change counts and references without invalidating an edit in
/// progress, so they keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Etag {
    Bump,
    Keep,
}

/// A case row with the head of its evidence chain.
struct LockedCase {
    case: Case,
    evidence_seq: i64,
    evidence_head: String,
}

/// A query parameter of a dynamically built statement.
#[derive(Debug, Clone)]
enum Param {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
}

impl Param {
    fn opt_int(value: Option<i64>) -> Self {
        value.map_or(Self::NullInt, Self::Int)
    }

    fn opt_text(value: Option<&str>) -> Self {
        value.map_or(Self::NullText, |v| Self::Text(v.to_owned()))
    }
}

#[derive(Debug, Default)]
struct Sql {
    text: String,
    params: Vec<Param>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        let placeholder = format!("${}", self.params.len());
        self.text.push_str(&placeholder);
        self
    }

    fn bind_list(&mut self, params: impl IntoIterator<Item = Param>) -> &mut Self {
        self.push("(");
        for (index, param) in params.into_iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.bind(param);
        }
        self.push(")")
    }

    fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for param in &self.params {
            query = match param {
                Param::Int(value) => query.bind(*value),
                Param::Text(value) => query.bind(value.as_str()),
                Param::NullInt => query.bind(None::<i64>),
                Param::NullText => query.bind(None::<&str>),
            };
        }
        query
    }
}

impl CaseStore {
    /// A store over `db` with the given SLA targets and clock.
    pub fn new(db: Database, sla: SlaPolicy, clock: SharedClock) -> Self {
        Self { db, sla, clock }
    }

    fn now(&self) -> DateTime<Utc> {
        // Microsecond precision is what the columns hold; truncating here keeps what a call
        // returns identical to what a later read returns.
        let now = self.clock.now();
        from_micros(to_micros(now))
    }

    // ----- reads -----

    /// One case by id or number.
    pub async fn get_case(&self, case_ref: &CaseRef) -> Result<Case> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE "));
        push_case_ref(&mut sql, case_ref);
        let row = sql.query().fetch_optional(self.db.reader()).await?;
        match row {
            Some(row) => Ok(case_from_row(&row)?.case),
            None => Err(not_found_case(case_ref)),
        }
    }

    /// One page of cases matching `filter` in `order`, after `cursor`.
    pub async fn list_cases(
        &self,
        filter: &CaseFilter,
        order: CaseOrder,
        page_size: usize,
        cursor: Option<&CaseCursor>,
    ) -> Result<Page<Case, CaseCursor>> {
        let now = to_micros(self.now());
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE 1 = 1"));
        push_filter(&mut sql, filter, now);
        if let Some(cursor) = cursor {
            push_keyset(&mut sql, order, cursor);
        }
        sql.push(match order {
            CaseOrder::CreatedDesc => " ORDER BY created_at DESC, number DESC",
            CaseOrder::CreatedAsc => " ORDER BY created_at ASC, number ASC",
            CaseOrder::SeverityDesc => " ORDER BY severity DESC, created_at DESC, number DESC",
            CaseOrder::SlaDueAsc => " ORDER BY sla_due_at ASC, number ASC",
        });
        sql.push(" LIMIT ").bind(Param::Int(page_size as i64 + 1));

        let rows = sql.query().fetch_all(self.db.reader()).await?;
        let mut cases = rows
            .iter()
            .map(|row| case_from_row(row).map(|locked| locked.case))
            .collect::<Result<Vec<_>>>()?;
        let next = if cases.len() > page_size {
            cases.truncate(page_size);
            cases.last().map(|last| cursor_of(order, last))
        } else {
            None
        };
        Ok(Page { items: cases, next })
    }

    /// Ids of every case matching `filter`, up to `limit + 1` (so a caller can tell the limit
    /// was passed).
    pub async fn case_ids_matching(
        &self,
        filter: &CaseFilter,
        limit: usize,
    ) -> Result<Vec<String>> {
        let now = to_micros(self.now());
        let mut sql = Sql::default();
        sql.push("SELECT id FROM cases WHERE 1 = 1");
        push_filter(&mut sql, filter, now);
        sql.push(" ORDER BY created_at ASC, number ASC LIMIT ")
            .bind(Param::Int(limit as i64 + 1));
        let rows = sql.query().fetch_all(self.db.reader()).await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("id").map_err(CaseError::from))
            .collect()
    }

    /// One finding.
    pub async fn get_finding(&self, finding_id: &str) -> Result<Finding> {
        let row = sqlx::query(&format!(
            "SELECT {FINDING_COLUMNS} FROM findings WHERE id = $1"
        ))
        .bind(finding_id)
        .fetch_optional(self.db.reader())
        .await?;
        match row {
            Some(row) => finding_from_row(&row),
            None => Err(CaseError::NotFound {
                kind: "finding",
                id: finding_id.to_owned(),
            }),
        }
    }

    /// The findings linked to a case, in link order, after link sequence `after`.
    pub async fn list_case_findings(
        &self,
        case_ref: &CaseRef,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<Page<Finding, i64>> {
        let case = self.get_case(case_ref).await?;
        let columns = FINDING_COLUMNS
            .split(", ")
            .map(|c| format!("f.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns}, l.link_seq FROM case_findings l JOIN findings f ON f.id = \
             l.finding_id WHERE l.case_id = $1 AND l.link_seq > $2 ORDER BY l.link_seq LIMIT $3"
        ))
        .bind(&case.id)
        .bind(after.unwrap_or(0))
        .bind(page_size as i64 + 1)
        .fetch_all(self.db.reader())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(finding_from_row(row)?);
            seqs.push(row.try_get::<i64, _>("link_seq")?);
        }
        Ok(paginate(items, &seqs, page_size))
    }

    /// The comments of a case, oldest first, after comment sequence `after`.
    pub async fn list_comments(
        &self,
        case_ref: &CaseRef,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<Page<Comment, i64>> {
        let case = self.get_case(case_ref).await?;
        let rows = sqlx::query(
            "SELECT id, case_id, seq, author_kind, author_id, author_name, body, created_at \
             FROM comments WHERE case_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(&case.id)
        .bind(after.unwrap_or(0))
        .bind(page_size as i64 + 1)
        .fetch_all(self.db.reader())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.try_get::<i64, _>("seq")?);
            items.push(Comment {
                id: row.try_get("id")?,
                case_id: row.try_get("case_id")?,
                author: Actor {
                    kind: ActorKind::parse(&row.try_get::<String, _>("author_kind")?),
                    id: row.try_get("author_id")?,
                    name: row.try_get("author_name")?,
                },
                body: row.try_get("body")?,
                created_at: from_micros(row.try_get("created_at")?),
            });
        }
        Ok(paginate(items, &seqs, page_size))
    }

    /// The evidence events of a case in order, after sequence `after`.
    pub async fn list_events(
        &self,
        case_ref: &CaseRef,
        page_size: usize,
        after: Option<i64>,
    ) -> Result<Page<EvidenceEvent, i64>> {
        let case = self.get_case(case_ref).await?;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM evidence_events WHERE case_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(&case.id)
        .bind(after.unwrap_or(0))
        .bind(page_size as i64 + 1)
        .fetch_all(self.db.reader())
        .await?;
        let items = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let seqs: Vec<i64> = items.iter().map(|e| e.seq).collect();
        Ok(paginate(items, &seqs, page_size))
    }

    /// Recomputes a case's hash chain, and checks that its head is the one the case row holds.
    pub async fn verify_chain(&self, case_ref: &CaseRef) -> Result<ChainVerification> {
        let mut sql = Sql::default();
        sql.push("SELECT id, evidence_seq, evidence_head FROM cases WHERE ");
        push_case_ref(&mut sql, case_ref);
        let Some(row) = sql.query().fetch_optional(self.db.reader()).await? else {
            return Err(not_found_case(case_ref));
        };
        let case_id: String = row.try_get("id")?;
        let head_seq: i64 = row.try_get("evidence_seq")?;
        let head: String = row.try_get("evidence_head")?;

        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM evidence_events WHERE case_id = $1 ORDER BY seq"
        ))
        .bind(&case_id)
        .fetch_all(self.db.reader())
        .await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let mut result = verify_chain(&events);
        if result.valid && (result.event_count != head_seq || result.head_hash != head) {
            result = ChainVerification {
                valid: false,
                event_count: result.event_count,
                head_hash: String::new(),
                broken_at: result.event_count + 1,
                problem: format!(
                    "the trail ends at event {} but the case records {} events: events after \
                     {} were removed",
                    result.event_count, head_seq, result.event_count
                ),
            };
        }
        Ok(result)
    }

    // ----- idempotency -----

    /// Forgets `request_id`s recorded before `cutoff`; returns how many.
    pub async fn purge_idempotency_keys(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.db.begin().await?;
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(to_micros(cutoff))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }

    async fn recall<T: DeserializeOwned>(
        tx: &mut Tx,
        key: Option<&IdempotencyKey>,
        operation: &str,
    ) -> Result<Option<T>> {
        let Some(key) = key else { return Ok(None) };
        let row = sqlx::query(
            "SELECT operation, fingerprint, response FROM idempotency_keys \
             WHERE caller_id = $1 AND request_id = $2",
        )
        .bind(&key.caller_id)
        .bind(&key.request_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored_operation: String = row.try_get("operation")?;
        let fingerprint: String = row.try_get("fingerprint")?;
        if stored_operation != operation || fingerprint != key.fingerprint {
            return Err(CaseError::RequestIdReused);
        }
        let response: String = row.try_get("response")?;
        Ok(Some(serde_json::from_str(&response)?))
    }

    async fn remember<T: Serialize>(
        tx: &mut Tx,
        key: Option<&IdempotencyKey>,
        operation: &str,
        value: &T,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(key) = key else { return Ok(()) };
        sqlx::query(
            "INSERT INTO idempotency_keys (caller_id, request_id, operation, fingerprint, \
             response, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.caller_id)
        .bind(&key.request_id)
        .bind(operation)
        .bind(&key.fingerprint)
        .bind(serde_json::to_string(value)?)
        .bind(to_micros(now))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    // ----- the evidence chain -----

    /// Appends one event to a locked case's chain and advances the head on the row.
    async fn append_event(
        tx: &mut Tx,
        locked: &mut LockedCase,
        kind: &str,
        actor: &Actor,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<EvidenceEvent> {
        let event = Self::insert_event(tx, locked, kind, actor, payload, now).await?;
        sqlx::query("UPDATE cases SET evidence_seq = $2, evidence_head = $3 WHERE id = $1")
            .bind(&locked.case.id)
            .bind(locked.evidence_seq)
            .bind(&locked.evidence_head)
            .execute(&mut **tx)
            .await?;
        Ok(event)
    }

    /// Inserts the next event of a locked case's chain and advances the head in memory only:
    /// the caller writes the row with [`Self::save_case`] in the same transaction.
    async fn insert_event(
        tx: &mut Tx,
        locked: &mut LockedCase,
        kind: &str,
        actor: &Actor,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<EvidenceEvent> {
        let event = Self::prepare_event(locked, kind, actor, payload, now)?;
        Self::insert_events(tx, std::slice::from_ref(&event)).await?;
        Ok(event)
    }

    /// The next event of a locked case's chain, hashed; advances the head of `locked` in
    /// memory and writes nothing.
    fn prepare_event(
        locked: &mut LockedCase,
        kind: &str,
        actor: &Actor,
        payload: Value,
        now: DateTime<Utc>,
    ) -> Result<EvidenceEvent> {
        let id = uuid::Uuid::now_v7().to_string();
        let seq = locked.evidence_seq + 1;
        let payload = serde_json::to_string(&payload)?;
        let occurred_at = to_micros(now);
        let hash = event_hash(&EventContent {
            id: &id,
            case_id: &locked.case.id,
            seq,
            event_type: kind,
            actor,
            occurred_at_micros: occurred_at,
            payload: &payload,
            previous_hash: &locked.evidence_head,
        });
        let event = EvidenceEvent {
            id,
            case_id: locked.case.id.clone(),
            seq,
            event_type: kind.to_owned(),
            actor: actor.clone(),
            occurred_at: from_micros(occurred_at),
            payload,
            previous_hash: std::mem::replace(&mut locked.evidence_head, hash.clone()),
            hash,
        };
        locked.evidence_seq = seq;
        Ok(event)
    }

    /// Writes prepared events, [`ROWS_PER_STATEMENT`] to a statement.
    async fn insert_events(tx: &mut Tx, events: &[EvidenceEvent]) -> Result<()> {
        for batch in events.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::default();
            sql.push(
                "INSERT INTO evidence_events (id, case_id, seq, event_type, actor_kind, \
                 actor_id, actor_name, occurred_at, payload, previous_hash, hash) VALUES ",
            );
            for (index, event) in batch.iter().enumerate() {
                if index > 0 {
                    sql.push(", ");
                }
                sql.bind_list([
                    Param::Text(event.id.clone()),
                    Param::Text(event.case_id.clone()),
                    Param::Int(event.seq),
                    Param::Text(event.event_type.clone()),
                    Param::Text(event.actor.kind.as_str().to_owned()),
                    Param::Text(event.actor.id.clone()),
                    Param::Text(event.actor.name.clone()),
                    Param::Int(to_micros(event.occurred_at)),
                    Param::Text(event.payload.clone()),
                    Param::Text(event.previous_hash.clone()),
                    Param::Text(event.hash.clone()),
                ]);
            }
            sql.query().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Locks a case row for the rest of the transaction and reads it: `FOR UPDATE` takes the
    /// row lock on PostgreSQL without writing a row version; on SQLite the `BEGIN IMMEDIATE`
    /// transaction already holds the write lock.
    async fn lock_case(tx: &mut Tx, case_ref: &CaseRef) -> Result<LockedCase> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE "));
        push_case_ref(&mut sql, case_ref);
        sql.push(row_lock(tx));
        let row = sql.query().fetch_optional(&mut **tx).await?;
        match row {
            Some(row) => case_from_row(&row),
            None => Err(not_found_case(case_ref)),
        }
    }

    /// Locks every case of a bulk chunk with one statement; returns them by id, with a map from
    /// numbers to ids.
    async fn lock_cases(
        tx: &mut Tx,
        refs: &[CaseRef],
    ) -> Result<(HashMap<String, LockedCase>, HashMap<i64, String>)> {
        let ids: Vec<Param> = refs
            .iter()
            .filter_map(|r| match r {
                CaseRef::Id(id) => Some(Param::Text(id.clone())),
                CaseRef::Number(_) => None,
            })
            .collect();
        let numbers: Vec<Param> = refs
            .iter()
            .filter_map(|r| match r {
                CaseRef::Number(number) => Some(Param::Int(*number)),
                CaseRef::Id(_) => None,
            })
            .collect();
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {CASE_COLUMNS} FROM cases WHERE "));
        match (ids.is_empty(), numbers.is_empty()) {
            (true, true) => return Ok((HashMap::new(), HashMap::new())),
            (false, true) => sql.push("id IN ").bind_list(ids),
            (true, false) => sql.push("number IN ").bind_list(numbers),
            (false, false) => sql
                .push("id IN ")
                .bind_list(ids)
                .push(" OR number IN ")
                .bind_list(numbers),
        };
        // In id order, so two bulk actions over the same cases lock them in the same order.
        sql.push(" ORDER BY id").push(row_lock(tx));
        let rows = sql.query().fetch_all(&mut **tx).await?;
        let mut by_id = HashMap::with_capacity(rows.len());
        let mut by_number = HashMap::with_capacity(rows.len());
        for row in &rows {
            let locked = case_from_row(row)?;
            by_number.insert(locked.case.number, locked.case.id.clone());
            by_id.insert(locked.case.id.clone(), locked);
        }
        Ok((by_id, by_number))
    }

    /// Writes the case's fields back, with a new etag when `etag` says so.
    async fn save_case(
        tx: &mut Tx,
        locked: &mut LockedCase,
        now: DateTime<Utc>,
        etag: Etag,
    ) -> Result<()> {
        let case = &mut locked.case;
        if etag == Etag::Bump {
            case.version += 1;
        }
        case.updated_at = now;
        let jira = case.jira.as_ref();
        sqlx::query(
            "UPDATE cases SET title = $2, title_folded = $3, description = $4, severity = $5, \
             status = $6, assignee_id = $7, updated_at = $8, sla_due_at = $9, \
             sla_at_risk_at = $10, resolved_at = $11, finding_count = $12, comment_count = $13, \
             exception_count = $14, pending_exception_id = $15, active_exception_id = $16, \
             jira_linked = $17, jira_issue_id = $18, jira_issue_key = $19, jira_browse_url = $20, \
             jira_status_name = $21, jira_status_category = $22, jira_status_fetched_at = $23, \
             version = $24, evidence_seq = $25, evidence_head = $26 WHERE id = $1",
        )
        .bind(&case.id)
        .bind(&case.title)
        .bind(case.title.to_lowercase())
        .bind(&case.description)
        .bind(case.severity.rank())
        .bind(case.status.as_str())
        .bind(case.assignee_id.as_deref())
        .bind(to_micros(case.updated_at))
        .bind(to_micros(case.sla_due_at))
        .bind(to_micros(case.sla_at_risk_at))
        .bind(case.resolved_at.map(to_micros))
        .bind(case.finding_count)
        .bind(case.comment_count)
        .bind(case.exception_count)
        .bind(case.pending_exception_id.as_deref())
        .bind(case.active_exception_id.as_deref())
        .bind(i64::from(jira.is_some()))
        .bind(jira.map(|j| j.issue_id.as_str()))
        .bind(jira.map(|j| j.issue_key.as_str()))
        .bind(jira.map(|j| j.browse_url.as_str()))
        .bind(jira.map(|j| j.status_name.as_str()))
        .bind(jira.map(|j| j.status_category.as_str()))
        .bind(jira.and_then(|j| j.status_fetched_at).map(to_micros))
        .bind(case.version)
        .bind(locked.evidence_seq)
        .bind(&locked.evidence_head)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    // ----- writes -----

    /// Creates a case (and links the given findings), writing `case_created` and one
    /// `finding_linked` per finding.
    pub async fn create_case(
        &self,
        actor: &Actor,
        input: &NewCase,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "create_case").await? {
                return Ok(case);
            }
            let now = self.now();
            let number: i64 = sqlx::query(
                "UPDATE counters SET value = value + 1 WHERE name = 'case_number' RETURNING value",
            )
            .fetch_one(&mut *tx)
            .await?
            .try_get("value")?;
            let (due, at_risk) = self.sla.deadlines(now, input.severity);
            let case = Case {
                id: uuid::Uuid::now_v7().to_string(),
                number,
                title: input.title.clone(),
                description: input.description.clone(),
                severity: input.severity,
                status: CaseStatus::Open,
                assignee_id: input.assignee_id.clone(),
                created_by: actor.clone(),
                created_at: now,
                updated_at: now,
                sla_due_at: due,
                sla_at_risk_at: at_risk,
                resolved_at: None,
                finding_count: 0,
                comment_count: 0,
                exception_count: 0,
                pending_exception_id: None,
                active_exception_id: None,
                jira: None,
                version: 1,
            };
            sqlx::query(
                "INSERT INTO cases (id, number, title, title_folded, description, severity, \
                 status, assignee_id, created_by_kind, created_by_id, created_by_name, \
                 created_at, updated_at, sla_due_at, sla_at_risk_at, version, evidence_seq, \
                 evidence_head) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15, $16, 0, $17)",
            )
            .bind(&case.id)
            .bind(case.number)
            .bind(&case.title)
            .bind(case.title.to_lowercase())
            .bind(&case.description)
            .bind(case.severity.rank())
            .bind(case.status.as_str())
            .bind(case.assignee_id.as_deref())
            .bind(actor.kind.as_str())
            .bind(&actor.id)
            .bind(&actor.name)
            .bind(to_micros(now))
            .bind(to_micros(now))
            .bind(to_micros(due))
            .bind(to_micros(at_risk))
            .bind(case.version)
            .bind(GENESIS_HASH)
            .execute(&mut *tx)
            .await?;

            let mut locked = LockedCase {
                case,
                evidence_seq: 0,
                evidence_head: GENESIS_HASH.to_owned(),
            };
            let payload = json!({
                "number": locked.case.display_number(),
                "title": locked.case.title,
                "description": locked.case.description,
                "severity": locked.case.severity.as_str(),
                "status": locked.case.status.as_str(),
                "assignee_id": locked.case.assignee_id,
            });
            Self::append_event(
                &mut tx,
                &mut locked,
                event_type::CASE_CREATED,
                actor,
                payload,
                now,
            )
            .await?;
            for finding_id in &input.finding_ids {
                Self::link_locked(&mut tx, &mut locked, finding_id, actor, now).await?;
            }
            if !input.finding_ids.is_empty() {
                Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
            }
            Self::remember(&mut tx, key, "create_case", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Edits title, description or severity; one `case_updated` event lists every change.
    pub async fn update_case(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        etag: Option<&str>,
        changes: &CaseChanges,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "update_case").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            check_etag(&locked.case, etag)?;

            let case = &mut locked.case;
            let mut diff = serde_json::Map::new();
            if let Some(title) = &changes.title
                && *title != case.title
            {
                diff.insert(
                    "title".into(),
                    json!({"before": case.title, "after": title}),
                );
                case.title.clone_from(title);
            }
            if let Some(description) = &changes.description
                && *description != case.description
            {
                diff.insert(
                    "description".into(),
                    json!({"before": case.description, "after": description}),
                );
                case.description.clone_from(description);
            }
            if let Some(severity) = changes.severity
                && severity != case.severity
            {
                diff.insert(
                    "severity".into(),
                    json!({"before": case.severity.as_str(), "after": severity.as_str()}),
                );
                case.severity = severity;
                let (due, at_risk) = self.sla.deadlines(case.created_at, severity);
                case.sla_due_at = due;
                case.sla_at_risk_at = at_risk;
            }
            if !diff.is_empty() {
                Self::save_case(&mut tx, &mut locked, now, Etag::Bump).await?;
                let payload = json!({ "changes": diff });
                Self::append_event(
                    &mut tx,
                    &mut locked,
                    event_type::CASE_UPDATED,
                    actor,
                    payload,
                    now,
                )
                .await?;
            }
            Self::remember(&mut tx, key, "update_case", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Moves a case along the transition table; writes `status_changed`.
    pub async fn transition_case(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        etag: Option<&str>,
        target: CaseStatus,
        note: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "transition_case").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            check_etag(&locked.case, etag)?;
            let from = locked.case.status;
            if !from.manual_targets().contains(&target) {
                return Err(CaseError::InvalidTransition { from, to: target });
            }
            Self::apply_transition(&mut tx, &mut locked, target, actor, note, false, now).await?;
            Self::remember(&mut tx, key, "transition_case", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    async fn apply_transition(
        tx: &mut Tx,
        locked: &mut LockedCase,
        target: CaseStatus,
        actor: &Actor,
        note: &str,
        bulk: bool,
        now: DateTime<Utc>,
    ) -> Result<EvidenceEvent> {
        let payload = transition_fields(&mut locked.case, target, note, bulk, now);
        let event =
            Self::insert_event(tx, locked, event_type::STATUS_CHANGED, actor, payload, now).await?;
        Self::save_case(tx, locked, now, Etag::Bump).await?;
        Ok(event)
    }

    /// Writes what a bulk transition changed on each case (status, resolve time, the exception
    /// that held it, the etag and the chain head), [`ROWS_PER_STATEMENT`] cases a statement.
    async fn save_transitions(tx: &mut Tx, cases: &[&LockedCase]) -> Result<()> {
        for batch in cases.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::default();
            // VALUES names its columns column1, column2... on both backends.
            sql.push(
                "UPDATE cases SET status = v.column2, updated_at = v.column3, \
                 resolved_at = v.column4, active_exception_id = v.column5, version = v.column6, \
                 evidence_seq = v.column7, evidence_head = v.column8 FROM (VALUES ",
            );
            for (index, locked) in batch.iter().enumerate() {
                if index > 0 {
                    sql.push(", ");
                }
                let case = &locked.case;
                sql.bind_list([
                    Param::Text(case.id.clone()),
                    Param::Text(case.status.as_str().to_owned()),
                    Param::Int(to_micros(case.updated_at)),
                    Param::opt_int(case.resolved_at.map(to_micros)),
                    Param::opt_text(case.active_exception_id.as_deref()),
                    Param::Int(case.version),
                    Param::Int(locked.evidence_seq),
                    Param::Text(locked.evidence_head.clone()),
                ]);
            }
            sql.push(") AS v WHERE cases.id = v.column1");
            sql.query().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Assigns a case to a user or nobody; writes `assignee_changed` when it changes.
    pub async fn assign_case(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        etag: Option<&str>,
        assignee: Option<&str>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "assign_case").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            check_etag(&locked.case, etag)?;
            if locked.case.assignee_id.as_deref() != assignee {
                let payload = json!({"from": locked.case.assignee_id, "to": assignee});
                locked.case.assignee_id = assignee.map(str::to_owned);
                Self::save_case(&mut tx, &mut locked, now, Etag::Bump).await?;
                Self::append_event(
                    &mut tx,
                    &mut locked,
                    event_type::ASSIGNEE_CHANGED,
                    actor,
                    payload,
                    now,
                )
                .await?;
            }
            Self::remember(&mut tx, key, "assign_case", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Moves each case to `target` on its own; one event per case that moved.
    pub async fn bulk_transition(
        &self,
        actor: &Actor,
        case_refs: &[String],
        target: BulkTarget,
        note: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Vec<BulkOutcome>> {
        let operation = match target {
            BulkTarget::Closed => "bulk_close",
            BulkTarget::Remediated => "bulk_resolve",
        };
        let status = target.status();
        let mut outcomes = Vec::with_capacity(case_refs.len());
        let chunks: Vec<&[String]> = case_refs.chunks(BULK_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        for (index, chunk) in chunks.into_iter().enumerate() {
            let chunk_outcomes = retrying!(async {
                let mut tx = self.db.begin().await?;
                // A concurrent retry of the same request may finish first: its outcomes win.
                if (index == 0 || index == last)
                    && let Some(previous) =
                        Self::recall::<Vec<BulkOutcome>>(&mut tx, key, operation).await?
                {
                    return Ok(Err(previous));
                }
                let now = self.now();
                let parsed: Vec<CaseRef> = chunk.iter().map(|r| CaseRef::parse(r)).collect();
                let (mut cases, numbers) = Self::lock_cases(&mut tx, &parsed).await?;
                let mut results = Vec::with_capacity(chunk.len());
                let mut events = Vec::new();
                let mut moved: Vec<String> = Vec::new();
                for (case_ref, parsed) in chunk.iter().zip(&parsed) {
                    let id = match parsed {
                        CaseRef::Id(id) => Some(id),
                        CaseRef::Number(number) => numbers.get(number),
                    };
                    let Some(locked) = id.and_then(|id| cases.get_mut(id)) else {
                        results.push(BulkOutcome {
                            case_ref: case_ref.clone(),
                            result: BulkResult::NotFound,
                            status: None,
                            message: format!("no case {case_ref}"),
                        });
                        continue;
                    };
                    let from = locked.case.status;
                    let outcome = if from == status {
                        BulkOutcome {
                            case_ref: case_ref.clone(),
                            result: BulkResult::AlreadyInStatus,
                            status: Some(from),
                            message: format!("already {from}"),
                        }
                    } else if !from.manual_targets().contains(&status) {
                        BulkOutcome {
                            case_ref: case_ref.clone(),
                            result: BulkResult::NotAllowed,
                            status: Some(from),
                            message: format!("a case cannot move from {from} to {status}"),
                        }
                    } else {
                        let payload = transition_fields(&mut locked.case, status, note, true, now);
                        locked.case.version += 1;
                        locked.case.updated_at = now;
                        let kind = event_type::STATUS_CHANGED;
                        events.push(Self::prepare_event(locked, kind, actor, payload, now)?);
                        moved.push(locked.case.id.clone());
                        BulkOutcome {
                            case_ref: case_ref.clone(),
                            result: BulkResult::Done,
                            status: Some(status),
                            message: String::new(),
                        }
                    };
                    results.push(outcome);
                }
                // Two statements per ROWS_PER_STATEMENT cases rather than two per case: the
                // round trips, not the work, were what a bulk action spent its time on.
                Self::insert_events(&mut tx, &events).await?;
                let changed: Vec<&LockedCase> =
                    moved.iter().filter_map(|id| cases.get(id)).collect();
                Self::save_transitions(&mut tx, &changed).await?;
                if index == last {
                    let mut all = outcomes.clone();
                    all.extend(results.iter().cloned());
                    Self::remember(&mut tx, key, operation, &all, now).await?;
                }
                tx.commit().await?;
                Ok(Ok(results))
            })?;
            match chunk_outcomes {
                Ok(results) => outcomes.extend(results),
                Err(previous) => return Ok(previous),
            }
        }
        Ok(outcomes)
    }

    /// Records a finding, or returns the stored one with the same `external_id`; links it to
    /// a case when one is named.
    pub async fn create_finding(
        &self,
        actor: &Actor,
        input: &NewFinding,
        case_ref: Option<&CaseRef>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Finding> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(finding) = Self::recall(&mut tx, key, "create_finding").await? {
                return Ok(finding);
            }
            let now = self.now();
            let existing = match &input.external_id {
                Some(external_id) => sqlx::query(&format!(
                    "SELECT {FINDING_COLUMNS} FROM findings WHERE external_id = $1"
                ))
                .bind(external_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| finding_from_row(&row))
                .transpose()?,
                None => None,
            };
            let finding = match existing {
                Some(finding) => finding,
                None => {
                    let finding = Finding {
                        id: uuid::Uuid::now_v7().to_string(),
                        external_id: input.external_id.clone(),
                        title: input.title.clone(),
                        rule: input.rule.clone(),
                        severity: input.severity,
                        content_id: input.content_id.clone(),
                        space_key: input.space_key.clone(),
                        page_title: input.page_title.clone(),
                        page_url: input.page_url.clone(),
                        excerpt: input.excerpt.clone(),
                        detected_at: input.detected_at.map_or(now, |t| from_micros(to_micros(t))),
                        created_at: now,
                    };
                    sqlx::query(
                        "INSERT INTO findings (id, external_id, title, rule, severity, \
                         content_id, space_key, page_title, page_url, excerpt, detected_at, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(&finding.id)
                    .bind(finding.external_id.as_deref())
                    .bind(&finding.title)
                    .bind(&finding.rule)
                    .bind(finding.severity.rank())
                    .bind(&finding.content_id)
                    .bind(&finding.space_key)
                    .bind(&finding.page_title)
                    .bind(&finding.page_url)
                    .bind(&finding.excerpt)
                    .bind(to_micros(finding.detected_at))
                    .bind(to_micros(finding.created_at))
                    .execute(&mut *tx)
                    .await?;
                    finding
                }
            };
            if let Some(case_ref) = case_ref {
                let mut locked = Self::lock_case(&mut tx, case_ref).await?;
                // A repeated report of a finding already on the case links nothing more.
                match Self::link_locked(&mut tx, &mut locked, &finding.id, actor, now).await {
                    Ok(()) => Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?,
                    Err(CaseError::AlreadyLinked { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            Self::remember(&mut tx, key, "create_finding", &finding, now).await?;
            tx.commit().await?;
            Ok(finding)
        })
    }

    async fn is_linked(tx: &mut Tx, case_id: &str, finding_id: &str) -> Result<bool> {
        Ok(
            sqlx::query(
                "SELECT 1 AS one FROM case_findings WHERE case_id = $1 AND finding_id = $2",
            )
            .bind(case_id)
            .bind(finding_id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
        )
    }

    /// Links a finding to a locked case and writes `finding_linked`. The caller saves the row.
    async fn link_locked(
        tx: &mut Tx,
        locked: &mut LockedCase,
        finding_id: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let row = sqlx::query(&format!(
            "SELECT {FINDING_COLUMNS} FROM findings WHERE id = $1"
        ))
        .bind(finding_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Err(CaseError::NotFound {
                kind: "finding",
                id: finding_id.to_owned(),
            });
        };
        let finding = finding_from_row(&row)?;
        if Self::is_linked(tx, &locked.case.id, finding_id).await? {
            return Err(CaseError::AlreadyLinked {
                finding_id: finding_id.to_owned(),
            });
        }
        sqlx::query(
            "INSERT INTO case_findings (case_id, finding_id, linked_at, link_seq) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&locked.case.id)
        .bind(finding_id)
        .bind(to_micros(now))
        .bind(locked.evidence_seq + 1)
        .execute(&mut **tx)
        .await?;
        locked.case.finding_count += 1;
        let payload = json!({
            "finding_id": finding.id,
            "title": finding.title,
            "rule": finding.rule,
            "severity": finding.severity.as_str(),
            "content_id": finding.content_id,
        });
        Self::append_event(tx, locked, event_type::FINDING_LINKED, actor, payload, now).await?;
        Ok(())
    }

    /// Links a finding to a case; writes `finding_linked`.
    pub async fn link_finding(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        finding_id: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "link_finding").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            Self::link_locked(&mut tx, &mut locked, finding_id, actor, now).await?;
            Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
            Self::remember(&mut tx, key, "link_finding", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Unlinks a finding from a case; writes `finding_unlinked`.
    pub async fn unlink_finding(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        finding_id: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, key, "unlink_finding").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            let removed =
                sqlx::query("DELETE FROM case_findings WHERE case_id = $1 AND finding_id = $2")
                    .bind(&locked.case.id)
                    .bind(finding_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if removed == 0 {
                return Err(CaseError::NotLinked {
                    finding_id: finding_id.to_owned(),
                });
            }
            locked.case.finding_count -= 1;
            Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
            let payload = json!({"finding_id": finding_id});
            Self::append_event(
                &mut tx,
                &mut locked,
                event_type::FINDING_UNLINKED,
                actor,
                payload,
                now,
            )
            .await?;
            Self::remember(&mut tx, key, "unlink_finding", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Adds a comment; writes `comment_added` with the comment's text.
    pub async fn add_comment(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        body: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<Comment> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(comment) = Self::recall(&mut tx, key, "add_comment").await? {
                return Ok(comment);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            let comment = Comment {
                id: uuid::Uuid::now_v7().to_string(),
                case_id: locked.case.id.clone(),
                author: actor.clone(),
                body: body.to_owned(),
                created_at: now,
            };
            sqlx::query(
                "INSERT INTO comments (id, case_id, seq, author_kind, author_id, author_name, \
                 body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&comment.id)
            .bind(&comment.case_id)
            .bind(locked.evidence_seq + 1)
            .bind(actor.kind.as_str())
            .bind(&actor.id)
            .bind(&actor.name)
            .bind(&comment.body)
            .bind(to_micros(now))
            .execute(&mut *tx)
            .await?;
            locked.case.comment_count += 1;
            Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
            let payload = json!({"comment_id": comment.id, "body": comment.body});
            Self::append_event(
                &mut tx,
                &mut locked,
                event_type::COMMENT_ADDED,
                actor,
                payload,
                now,
            )
            .await?;
            Self::remember(&mut tx, key, "add_comment", &comment, now).await?;
            tx.commit().await?;
            Ok(comment)
        })
    }

    /// Records a step of a risk exception's life on its case, with its evidence event.
    pub async fn apply_exception_decision(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        effect: &ExceptionEffect,
        key: &IdempotencyKey,
    ) -> Result<(Case, EvidenceEvent)> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(previous) = Self::recall(&mut tx, Some(key), "apply_exception").await? {
                return Ok(previous);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            let case = &mut locked.case;
            let id = effect.exception_id.as_str();
            let mut payload = Value::Object(effect.payload.clone());
            payload["exception_id"] = json!(id);
            payload["status_before"] = json!(case.status.as_str());
            let kind = match effect.decision {
                ExceptionDecision::Requested => {
                    if let Some(pending) = &case.pending_exception_id
                        && pending != id
                    {
                        return Err(CaseError::Precondition(format!(
                            "risk exception {pending} is already pending approval on this case"
                        )));
                    }
                    if case.status.is_resolved() {
                        return Err(CaseError::Precondition(format!(
                            "the case is {}; a risk exception cannot be requested",
                            case.status
                        )));
                    }
                    case.pending_exception_id = Some(id.to_owned());
                    case.exception_count += 1;
                    event_type::EXCEPTION_REQUESTED
                }
                ExceptionDecision::Approved => {
                    if !case.status.accepts_exception() {
                        return Err(CaseError::Precondition(format!(
                            "the case is {}; a risk exception cannot be approved",
                            case.status
                        )));
                    }
                    if case.pending_exception_id.as_deref() == Some(id) {
                        case.pending_exception_id = None;
                    }
                    if let Some(superseded) = &effect.superseded_exception_id {
                        payload["superseded_exception_id"] = json!(superseded);
                    }
                    case.active_exception_id = Some(id.to_owned());
                    case.status = CaseStatus::Exception;
                    event_type::EXCEPTION_APPROVED
                }
                ExceptionDecision::Revoked => {
                    if case.pending_exception_id.as_deref() == Some(id) {
                        case.pending_exception_id = None;
                    }
                    if case.active_exception_id.as_deref() == Some(id) {
                        case.active_exception_id = None;
                        if case.status == CaseStatus::Exception {
                            case.status = CaseStatus::Open;
                            case.resolved_at = None;
                        }
                    }
                    event_type::EXCEPTION_REVOKED
                }
                ExceptionDecision::Expired => {
                    if case.active_exception_id.as_deref() == Some(id) {
                        case.active_exception_id = None;
                        if case.status == CaseStatus::Exception {
                            payload["assignee_before"] = json!(case.assignee_id);
                            case.status = CaseStatus::Open;
                            if let Some(requester) = &effect.reassign_to {
                                case.assignee_id = Some(requester.clone());
                            }
                            payload["assignee_after"] = json!(case.assignee_id);
                        }
                    }
                    event_type::EXCEPTION_EXPIRED
                }
            };
            payload["status_after"] = json!(case.status.as_str());
            Self::save_case(&mut tx, &mut locked, now, Etag::Bump).await?;
            let event = Self::append_event(&mut tx, &mut locked, kind, actor, payload, now).await?;
            let result = (locked.case, event);
            Self::remember(&mut tx, Some(key), "apply_exception", &result, now).await?;
            tx.commit().await?;
            Ok(result)
        })
    }

    /// Stores the Jira issue of a case; writes `jira_issue_created`. Linking the same issue
    /// again returns the case unchanged.
    pub async fn link_jira_issue(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        link: &JiraLink,
        key: &IdempotencyKey,
    ) -> Result<Case> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(case) = Self::recall(&mut tx, Some(key), "link_jira").await? {
                return Ok(case);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            match &locked.case.jira {
                Some(existing) if existing.issue_id == link.issue_id => {}
                Some(existing) => {
                    return Err(CaseError::Precondition(format!(
                        "the case already has Jira issue {}",
                        existing.issue_key
                    )));
                }
                None => {
                    locked.case.jira = Some(link.clone());
                    Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
                    let payload = json!({
                        "issue_id": link.issue_id,
                        "issue_key": link.issue_key,
                        "browse_url": link.browse_url,
                        "status_name": link.status_name,
                        "status_category": link.status_category,
                    });
                    Self::append_event(
                        &mut tx,
                        &mut locked,
                        event_type::JIRA_ISSUE_CREATED,
                        actor,
                        payload,
                        now,
                    )
                    .await?;
                }
            }
            Self::remember(&mut tx, Some(key), "link_jira", &locked.case, now).await?;
            tx.commit().await?;
            Ok(locked.case)
        })
    }

    /// Stores the fetched status of a case's Jira issue; a change of key, name or category
    /// writes `jira_status_changed`. Returns the case and whether it changed.
    pub async fn update_jira_status(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        update: &JiraLink,
        key: &IdempotencyKey,
    ) -> Result<(Case, bool)> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(previous) = Self::recall(&mut tx, Some(key), "jira_status").await? {
                return Ok(previous);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            let Some(current) = locked.case.jira.clone() else {
                return Err(CaseError::Precondition(
                    "the case has no Jira issue".to_owned(),
                ));
            };
            if current.issue_id != update.issue_id {
                return Err(CaseError::Precondition(format!(
                    "the case is linked to Jira issue {}, not {}",
                    current.issue_id, update.issue_id
                )));
            }
            let issue_key = if update.issue_key.is_empty() {
                current.issue_key.clone()
            } else {
                update.issue_key.clone()
            };
            let changed = issue_key != current.issue_key
                || update.status_name != current.status_name
                || update.status_category != current.status_category;
            let next = JiraLink {
                issue_id: current.issue_id.clone(),
                browse_url: if issue_key == current.issue_key {
                    current.browse_url.clone()
                } else {
                    current.browse_url.replace(&current.issue_key, &issue_key)
                },
                issue_key,
                status_name: update.status_name.clone(),
                status_category: update.status_category.clone(),
                status_fetched_at: update.status_fetched_at.map(|t| from_micros(to_micros(t))),
            };
            locked.case.jira = Some(next.clone());
            if changed {
                Self::save_case(&mut tx, &mut locked, now, Etag::Keep).await?;
                let payload = json!({
                    "issue_id": next.issue_id,
                    "before": {"issue_key": current.issue_key, "status_name": current.status_name,
                               "status_category": current.status_category},
                    "after": {"issue_key": next.issue_key, "status_name": next.status_name,
                              "status_category": next.status_category},
                });
                Self::append_event(
                    &mut tx,
                    &mut locked,
                    event_type::JIRA_STATUS_CHANGED,
                    actor,
                    payload,
                    now,
                )
                .await?;
            } else {
                // Only the fetch time moved: not a change of the case, so no event and no
                // new etag.
                sqlx::query("UPDATE cases SET jira_status_fetched_at = $2 WHERE id = $1")
                    .bind(&locked.case.id)
                    .bind(next.status_fetched_at.map(to_micros))
                    .execute(&mut *tx)
                    .await?;
            }
            let result = (locked.case, changed);
            Self::remember(&mut tx, Some(key), "jira_status", &result, now).await?;
            tx.commit().await?;
            Ok(result)
        })
    }

    /// Writes an event that no other operation owns (`export_generated`).
    pub async fn record_event(
        &self,
        actor: &Actor,
        case_ref: &CaseRef,
        kind: &str,
        payload: Value,
        key: &IdempotencyKey,
    ) -> Result<EvidenceEvent> {
        retrying!(async {
            let mut tx = self.db.begin().await?;
            if let Some(event) = Self::recall(&mut tx, Some(key), "record_event").await? {
                return Ok(event);
            }
            let now = self.now();
            let mut locked = Self::lock_case(&mut tx, case_ref).await?;
            let event =
                Self::append_event(&mut tx, &mut locked, kind, actor, payload.clone(), now).await?;
            Self::remember(&mut tx, Some(key), "record_event", &event, now).await?;
            tx.commit().await?;
            Ok(event)
        })
    }
}

fn check_etag(case: &Case, etag: Option<&str>) -> Result<()> {
    match etag {
        Some(etag) if !etag.is_empty() && etag != case.etag() => Err(CaseError::EtagMismatch {
            current: case.etag(),
        }),
        _ => Ok(()),
    }
}

fn not_found_case(case_ref: &CaseRef) -> CaseError {
    CaseError::NotFound {
        kind: "case",
        id: match case_ref {
            CaseRef::Id(id) => id.clone(),
            CaseRef::Number(number) => format!("CASE-{number}"),
        },
    }
}

/// The clause that makes a `SELECT` lock its rows: `FOR UPDATE` on PostgreSQL; nothing on
/// SQLite, which has no such clause and whose write transactions lock the whole database.
fn row_lock(tx: &Tx) -> &'static str {
    if tx.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
        " FOR UPDATE"
    } else {
        ""
    }
}

/// Moves a case to `target` in memory; returns the payload of its `status_changed` event.
fn transition_fields(
    case: &mut Case,
    target: CaseStatus,
    note: &str,
    bulk: bool,
    now: DateTime<Utc>,
) -> Value {
    let from = case.status;
    let mut payload = json!({"from": from.as_str(), "to": target.as_str()});
    if !note.is_empty() {
        payload["note"] = json!(note);
    }
    if bulk {
        payload["bulk"] = json!(true);
    }
    if target.is_resolved() && !from.is_resolved() {
        case.resolved_at = Some(now);
    } else if !target.is_resolved() {
        case.resolved_at = None;
    }
    if from == CaseStatus::Exception {
        // Resolving a case ends the exception that held it.
        // TODO(#3): tell the exceptions service (RecordCaseResolution) through an outbox so
        // the exception itself is marked Revoked with the note that the case was resolved.
        if let Some(exception_id) = case.active_exception_id.take() {
            payload["ended_exception_id"] = json!(exception_id);
        }
    }
    case.status = target;
    payload
}

fn push_case_ref(sql: &mut Sql, case_ref: &CaseRef) {
    match case_ref {
        CaseRef::Id(id) => sql.push("id = ").bind(Param::Text(id.clone())),
        CaseRef::Number(number) => sql.push("number = ").bind(Param::Int(*number)),
    };
}

fn text_params(values: impl IntoIterator<Item = &'static str>) -> Vec<Param> {
    values
        .into_iter()
        .map(|v| Param::Text(v.to_owned()))
        .collect()
}

fn push_filter(sql: &mut Sql, filter: &CaseFilter, now: i64) {
    if !filter.statuses.is_empty() {
        sql.push(" AND status IN ")
            .bind_list(text_params(filter.statuses.iter().map(|s| s.as_str())));
    }
    if !filter.severities.is_empty() {
        sql.push(" AND severity IN ")
            .bind_list(filter.severities.iter().map(|s| Param::Int(s.rank())));
    }
    match &filter.assignee {
        AssigneeFilter::Any => {}
        AssigneeFilter::Nobody => {
            sql.push(" AND assignee_id IS NULL");
        }
        AssigneeFilter::User(id) => {
            sql.push(" AND assignee_id = ")
                .bind(Param::Text(id.clone()));
        }
    }
    match filter.pending_exception {
        Some(true) => {
            sql.push(" AND pending_exception_id IS NOT NULL");
        }
        Some(false) => {
            sql.push(" AND pending_exception_id IS NULL");
        }
        None => {}
    }
    if let Some(linked) = filter.jira_linked {
        sql.push(" AND jira_linked = ")
            .bind(Param::Int(i64::from(linked)));
    }
    if let Some(text) = &filter.title_contains {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        sql.push(" AND title_folded LIKE ")
            .bind(Param::Text(format!("%{escaped}%")))
            .push(" ESCAPE '\\'");
    }
    if !filter.sla_statuses.is_empty() {
        let unresolved = || text_params(["open", "in_progress"]);
        let resolved = || text_params(["remediated", "closed"]);
        sql.push(" AND (");
        for (index, sla) in filter.sla_statuses.iter().enumerate() {
            if index > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            match sla {
                SlaStatus::OnTrack => {
                    sql.push("status IN ").bind_list(unresolved());
                    sql.push(" AND sla_at_risk_at > ").bind(Param::Int(now));
                }
                SlaStatus::AtRisk => {
                    sql.push("status IN ").bind_list(unresolved());
                    sql.push(" AND sla_at_risk_at <= ").bind(Param::Int(now));
                    sql.push(" AND sla_due_at > ").bind(Param::Int(now));
                }
                SlaStatus::Breached => {
                    sql.push("(status IN ").bind_list(unresolved());
                    sql.push(" AND sla_due_at <= ").bind(Param::Int(now));
                    sql.push(") OR (status IN ").bind_list(resolved());
                    sql.push(" AND resolved_at > sla_due_at)");
                }
                SlaStatus::Met => {
                    sql.push("status IN ").bind_list(resolved());
                    sql.push(" AND resolved_at <= sla_due_at");
                }
                SlaStatus::Exempt => {
                    sql.push("status = ")
                        .bind(Param::Text("exception".to_owned()));
                }
            }
            sql.push(")");
        }
        sql.push(")");
    }
}

fn push_keyset(sql: &mut Sql, order: CaseOrder, cursor: &CaseCursor) {
    match order {
        CaseOrder::CreatedDesc => {
            sql.push(" AND (created_at, number) < (")
                .bind(Param::Int(cursor.primary))
                .push(", ")
                .bind(Param::Int(cursor.number))
                .push(")");
        }
        CaseOrder::CreatedAsc => {
            sql.push(" AND (created_at, number) > (")
                .bind(Param::Int(cursor.primary))
                .push(", ")
                .bind(Param::Int(cursor.number))
                .push(")");
        }
        CaseOrder::SeverityDesc => {
            sql.push(" AND (severity, created_at, number) < (")
                .bind(Param::Int(cursor.primary))
                .push(", ")
                .bind(Param::Int(cursor.secondary))
                .push(", ")
                .bind(Param::Int(cursor.number))
                .push(")");
        }
        CaseOrder::SlaDueAsc => {
            sql.push(" AND (sla_due_at, number) > (")
                .bind(Param::Int(cursor.primary))
                .push(", ")
                .bind(Param::Int(cursor.number))
                .push(")");
        }
    }
}

fn cursor_of(order: CaseOrder, case: &Case) -> CaseCursor {
    let created = to_micros(case.created_at);
    match order {
        CaseOrder::CreatedDesc | CaseOrder::CreatedAsc => CaseCursor {
            primary: created,
            secondary: 0,
            number: case.number,
        },
        CaseOrder::SeverityDesc => CaseCursor {
            primary: case.severity.rank(),
            secondary: created,
            number: case.number,
        },
        CaseOrder::SlaDueAsc => CaseCursor {
            primary: to_micros(case.sla_due_at),
            secondary: 0,
            number: case.number,
        },
    }
}

fn paginate<T>(mut items: Vec<T>, seqs: &[i64], page_size: usize) -> Page<T, i64> {
    if items.len() > page_size {
        items.truncate(page_size);
        Page {
            next: seqs.get(page_size - 1).copied(),
            items,
        }
    } else {
        Page { items, next: None }
    }
}

fn case_from_row(row: &AnyRow) -> Result<LockedCase> {
    let severity_rank: i64 = row.try_get("severity")?;
    let status: String = row.try_get("status")?;
    let jira_issue_id: Option<String> = row.try_get("jira_issue_id")?;
    let jira = match jira_issue_id {
        Some(issue_id) => Some(JiraLink {
            issue_id,
            issue_key: row
                .try_get::<Option<String>, _>("jira_issue_key")?
                .unwrap_or_default(),
            browse_url: row
                .try_get::<Option<String>, _>("jira_browse_url")?
                .unwrap_or_default(),
            status_name: row
                .try_get::<Option<String>, _>("jira_status_name")?
                .unwrap_or_default(),
            status_category: row
                .try_get::<Option<String>, _>("jira_status_category")?
                .unwrap_or_default(),
            status_fetched_at: row
                .try_get::<Option<i64>, _>("jira_status_fetched_at")?
                .map(from_micros),
        }),
        None => None,
    };
    let case = Case {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        severity: Severity::from_rank(severity_rank).ok_or_else(|| {
            CaseError::Internal(anyhow::anyhow!(
                "stored severity {severity_rank} is unknown"
            ))
        })?,
        status: CaseStatus::parse(&status).ok_or_else(|| {
            CaseError::Internal(anyhow::anyhow!("stored status {status} is unknown"))
        })?,
        assignee_id: row.try_get("assignee_id")?,
        created_by: Actor {
            kind: ActorKind::parse(&row.try_get::<String, _>("created_by_kind")?),
            id: row.try_get("created_by_id")?,
            name: row.try_get("created_by_name")?,
        },
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
        sla_due_at: from_micros(row.try_get("sla_due_at")?),
        sla_at_risk_at: from_micros(row.try_get("sla_at_risk_at")?),
        resolved_at: row
            .try_get::<Option<i64>, _>("resolved_at")?
            .map(from_micros),
        finding_count: row.try_get("finding_count")?,
        comment_count: row.try_get("comment_count")?,
        exception_count: row.try_get("exception_count")?,
        pending_exception_id: row.try_get("pending_exception_id")?,
        active_exception_id: row.try_get("active_exception_id")?,
        jira,
        version: row.try_get("version")?,
    };
    Ok(LockedCase {
        case,
        evidence_seq: row.try_get("evidence_seq")?,
        evidence_head: row.try_get("evidence_head")?,
    })
}

fn finding_from_row(row: &AnyRow) -> Result<Finding> {
    let severity_rank: i64 = row.try_get("severity")?;
    Ok(Finding {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        title: row.try_get("title")?,
        rule: row.try_get("rule")?,
        severity: Severity::from_rank(severity_rank).ok_or_else(|| {
            CaseError::Internal(anyhow::anyhow!(
                "stored severity {severity_rank} is unknown"
            ))
        })?,
        content_id: row.try_get("content_id")?,
        space_key: row.try_get("space_key")?,
        page_title: row.try_get("page_title")?,
        page_url: row.try_get("page_url")?,
        excerpt: row.try_get("excerpt")?,
        detected_at: from_micros(row.try_get("detected_at")?),
        created_at: from_micros(row.try_get("created_at")?),
    })
}

fn event_from_row(row: &AnyRow) -> Result<EvidenceEvent> {
    Ok(EvidenceEvent {
        id: row.try_get("id")?,
        case_id: row.try_get("case_id")?,
        seq: row.try_get("seq")?,
        event_type: row.try_get("event_type")?,
        actor: Actor {
            kind: ActorKind::parse(&row.try_get::<String, _>("actor_kind")?),
            id: row.try_get("actor_id")?,
            name: row.try_get("actor_name")?,
        },
        occurred_at: from_micros(row.try_get("occurred_at")?),
        payload: row.try_get("payload")?,
        previous_hash: row.try_get("previous_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Maps a page-token error for the field it came from.
pub fn page_token_violation(error: &PageTokenError) -> Violation {
    Violation::new("page_token", error.to_string())
}
