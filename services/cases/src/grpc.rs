//! The `aegis.cases.v1.CaseService` boundary: checks the caller's role, validates the request
//! into domain types, calls the store and converts the result back to the wire. Storage and
//! domain code never see prost types; this module is the only one that does.

use std::sync::Arc;

use aegis_platform::{
    auth::{Caller, Permission, authorize},
    clock::SharedClock,
    error::{ApiError, Violation, reason},
    pagination::{self, PageTokens, fingerprint},
};
use aegis_proto::aegis::cases::v1 as pb;
use chrono::{DateTime, Datelike as _, Utc};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        self, Actor, ActorKind, AssigneeFilter, Case, CaseFilter, CaseOrder, CaseRef, CaseStatus,
        Severity, SlaStatus, check_line, check_text, event_type, limits,
    },
    storage::{
        BulkOutcome, BulkResult, BulkTarget, CaseChanges, CaseError, CaseStore, ExceptionDecision,
        ExceptionEffect, IdempotencyKey, NewCase, NewFinding, page_token_violation,
    },
};

/// The error domain of this service in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "aegis.cases.v1";

/// Page size of findings, comments and events when a request asks for 0.
const DETAIL_PAGE_SIZE: usize = 100;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct CaseApi {
    store: Arc<CaseStore>,
    tokens: PageTokens,
    clock: SharedClock,
}

impl CaseApi {
    /// A service over `store`, signing page tokens with `tokens`.
    pub fn new(store: Arc<CaseStore>, tokens: PageTokens, clock: SharedClock) -> Self {
        Self {
            store,
            tokens,
            clock,
        }
    }

    /// The tonic server, with the message size limit applied.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::case_service_server::CaseServiceServer<Self> {
        pb::case_service_server::CaseServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn status(error: ApiError) -> Status {
    error.into_status(ERROR_DOMAIN)
}

impl From<CaseError> for ApiError {
    fn from(error: CaseError) -> Self {
        match error {
            CaseError::Invalid(violations) => ApiError::InvalidArgument(violations),
            CaseError::NotFound { kind, id } => ApiError::NotFound { kind, id },
            CaseError::InvalidTransition { from, to } => {
                let allowed = from.manual_targets();
                let names: Vec<&str> = allowed.iter().map(|s| wire_status_name(*s)).collect();
                let mut message = format!(
                    "a case in status {} cannot move to {}; allowed: {}",
                    wire_status_name(from),
                    wire_status_name(to),
                    names.join(", ")
                );
                if to == CaseStatus::Exception {
                    message.push_str(
                        " (status Exception is reached only by approving a risk exception)",
                    );
                }
                ApiError::FailedPrecondition {
                    reason: reason::INVALID_STATE_TRANSITION,
                    message,
                    metadata: vec![
                        ("from_status".into(), wire_status_name(from).into()),
                        ("to_status".into(), wire_status_name(to).into()),
                        ("allowed_statuses".into(), names.join(",")),
                    ],
                }
            }
            CaseError::EtagMismatch { current } => ApiError::Aborted {
                reason: reason::ETAG_MISMATCH,
                message: format!(
                    "the case changed since it was read (its etag is now {current}); read it \
                     again and retry"
                ),
            },
            CaseError::AlreadyLinked { finding_id } => ApiError::AlreadyExists(format!(
                "finding {finding_id} is already linked to the case"
            )),
            CaseError::NotLinked { finding_id } => ApiError::NotFound {
                kind: "finding link",
                id: finding_id,
            },
            CaseError::Precondition(message) => {
                ApiError::precondition(reason::FAILED_PRECONDITION, message)
            }
            CaseError::RequestIdReused => ApiError::InvalidArgument(vec![Violation::new(
                "request_id",
                "was already used for a different request; send a new request_id",
            )]),
            CaseError::Conflict => {
                ApiError::Unavailable("the case is busy with concurrent changes; retry".into())
            }
            CaseError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry later".into())
            }
            CaseError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

fn store_error(error: CaseError) -> Status {
    status(error.into())
}

/// Proto name of a status, as clients see it in errors.
fn wire_status_name(status: CaseStatus) -> &'static str {
    status_to_wire(status).as_str_name()
}

// ----- conversions -----

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
}

fn severity_to_wire(severity: Severity) -> pb::Severity {
    match severity {
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

fn status_to_wire(status: CaseStatus) -> pb::CaseStatus {
    match status {
        CaseStatus::Open => pb::CaseStatus::Open,
        CaseStatus::InProgress => pb::CaseStatus::InProgress,
        CaseStatus::Exception => pb::CaseStatus::Exception,
        CaseStatus::Remediated => pb::CaseStatus::Remediated,
        CaseStatus::Closed => pb::CaseStatus::Closed,
    }
}

fn sla_to_wire(sla: SlaStatus) -> pb::SlaStatus {
    match sla {
        SlaStatus::OnTrack => pb::SlaStatus::OnTrack,
        SlaStatus::AtRisk => pb::SlaStatus::AtRisk,
        SlaStatus::Breached => pb::SlaStatus::Breached,
        SlaStatus::Met => pb::SlaStatus::Met,
        SlaStatus::Exempt => pb::SlaStatus::Exempt,
    }
}

fn actor_to_wire(actor: &Actor) -> pb::Actor {
    pb::Actor {
        kind: match actor.kind {
            ActorKind::User => pb::actor::Kind::User,
            ActorKind::Service => pb::actor::Kind::Service,
        } as i32,
        id: actor.id.clone(),
        display_name: actor.name.clone(),
    }
}

fn case_to_wire(case: &Case, now: DateTime<Utc>) -> pb::Case {
    pb::Case {
        id: case.id.clone(),
        number: case.display_number(),
        title: case.title.clone(),
        description: case.description.clone(),
        severity: severity_to_wire(case.severity) as i32,
        status: status_to_wire(case.status) as i32,
        assignee_id: case.assignee_id.clone().unwrap_or_default(),
        created_by: Some(actor_to_wire(&case.created_by)),
        create_time: Some(timestamp(case.created_at)),
        update_time: Some(timestamp(case.updated_at)),
        sla_status: sla_to_wire(case.sla_status(now)) as i32,
        sla_due_time: Some(timestamp(case.sla_due_at)),
        resolve_time: case.resolved_at.map(timestamp),
        finding_count: i32::try_from(case.finding_count).unwrap_or(i32::MAX),
        comment_count: i32::try_from(case.comment_count).unwrap_or(i32::MAX),
        exception_count: i32::try_from(case.exception_count).unwrap_or(i32::MAX),
        pending_exception: case.pending_exception_id.is_some(),
        active_exception_id: case.active_exception_id.clone().unwrap_or_default(),
        jira_issue: case.jira.as_ref().map(|jira| pb::JiraIssueLink {
            issue_id: jira.issue_id.clone(),
            issue_key: jira.issue_key.clone(),
            browse_url: jira.browse_url.clone(),
            status_name: jira.status_name.clone(),
            status_category: jira.status_category.clone(),
            status_fetch_time: jira.status_fetched_at.map(timestamp),
        }),
        etag: case.etag(),
    }
}

fn finding_to_wire(finding: &domain::Finding) -> pb::Finding {
    pb::Finding {
        id: finding.id.clone(),
        external_id: finding.external_id.clone().unwrap_or_default(),
        title: finding.title.clone(),
        rule: finding.rule.clone(),
        severity: severity_to_wire(finding.severity) as i32,
        content_id: finding.content_id.clone(),
        space_key: finding.space_key.clone(),
        page_title: finding.page_title.clone(),
        page_url: finding.page_url.clone(),
        excerpt: finding.excerpt.clone(),
        detect_time: Some(timestamp(finding.detected_at)),
        create_time: Some(timestamp(finding.created_at)),
    }
}

fn comment_to_wire(comment: &domain::Comment) -> pb::Comment {
    pb::Comment {
        id: comment.id.clone(),
        case_id: comment.case_id.clone(),
        author: Some(actor_to_wire(&comment.author)),
        body: comment.body.clone(),
        create_time: Some(timestamp(comment.created_at)),
    }
}

fn event_to_wire(event: &domain::EvidenceEvent) -> pb::EvidenceEvent {
    pb::EvidenceEvent {
        id: event.id.clone(),
        case_id: event.case_id.clone(),
        sequence: event.seq,
        event_type: event.event_type.clone(),
        actor: Some(actor_to_wire(&event.actor)),
        occur_time: Some(timestamp(event.occurred_at)),
        payload_json: event.payload.clone(),
        previous_hash: event.previous_hash.clone(),
        hash: event.hash.clone(),
    }
}

fn outcome_to_wire(outcome: &BulkOutcome) -> pb::BulkOutcome {
    pb::BulkOutcome {
        case_id: outcome.case_ref.clone(),
        result: match outcome.result {
            BulkResult::Done => pb::bulk_outcome::Result::Done,
            BulkResult::AlreadyInStatus => pb::bulk_outcome::Result::AlreadyInStatus,
            BulkResult::NotAllowed => pb::bulk_outcome::Result::NotAllowed,
            BulkResult::NotFound => pb::bulk_outcome::Result::NotFound,
        } as i32,
        status: outcome.status.map_or(0, |s| status_to_wire(s) as i32),
        message: outcome.message.clone(),
    }
}

fn caller_actor(caller: &Caller) -> Actor {
    match caller {
        Caller::User(user) => Actor {
            kind: ActorKind::User,
            id: user.id.clone(),
            name: user.name.clone(),
        },
        Caller::Service(name) => Actor {
            kind: ActorKind::Service,
            id: name.clone(),
            name: name.clone(),
        },
    }
}

// ----- validation -----

/// Collects field violations of one request; `finish` refuses it when any were found.
#[derive(Debug, Default)]
struct Check {
    violations: Vec<Violation>,
}

impl Check {
    fn add(&mut self, field: &str, rule: impl Into<String>) {
        self.violations.push(Violation::new(field, rule));
    }

    fn finish(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(status(ApiError::InvalidArgument(self.violations)))
        }
    }

    fn line(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        check_line(&mut self.violations, field, value, min, max)
    }

    fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        check_text(&mut self.violations, field, value, min, max)
    }

    fn case_ref(&mut self, field: &str, value: &str) -> CaseRef {
        if value.trim().is_empty() {
            self.add(field, "must be set to a case id or number (CASE-17)");
        } else if value.chars().count() > 64 || value.chars().any(char::is_control) {
            self.add(field, "must be a case id or number (CASE-17)");
        }
        CaseRef::parse(value)
    }

    fn id(&mut self, field: &str, value: &str) -> String {
        if value.trim().is_empty() {
            self.add(field, "must be set");
        } else if value.chars().count() > 64 || value.chars().any(char::is_control) {
            self.add(
                field,
                "must be an id: at most 64 characters, no control characters",
            );
        }
        value.trim().to_owned()
    }

    fn severity(&mut self, field: &str, value: i32) -> Option<Severity> {
        match pb::Severity::try_from(value) {
            Ok(pb::Severity::Low) => Some(Severity::Low),
            Ok(pb::Severity::Medium) => Some(Severity::Medium),
            Ok(pb::Severity::High) => Some(Severity::High),
            Ok(pb::Severity::Critical) => Some(Severity::Critical),
            Ok(pb::Severity::Unspecified) => {
                self.add(
                    field,
                    "must be set: SEVERITY_LOW, SEVERITY_MEDIUM, SEVERITY_HIGH or \
                     SEVERITY_CRITICAL",
                );
                None
            }
            Err(_) => {
                self.add(
                    field,
                    format!(
                        "{value} is not a severity: use SEVERITY_LOW, SEVERITY_MEDIUM, \
                         SEVERITY_HIGH or SEVERITY_CRITICAL"
                    ),
                );
                None
            }
        }
    }

    fn status(&mut self, field: &str, value: i32) -> Option<CaseStatus> {
        match pb::CaseStatus::try_from(value) {
            Ok(pb::CaseStatus::Open) => Some(CaseStatus::Open),
            Ok(pb::CaseStatus::InProgress) => Some(CaseStatus::InProgress),
            Ok(pb::CaseStatus::Exception) => Some(CaseStatus::Exception),
            Ok(pb::CaseStatus::Remediated) => Some(CaseStatus::Remediated),
            Ok(pb::CaseStatus::Closed) => Some(CaseStatus::Closed),
            Ok(pb::CaseStatus::Unspecified) => {
                self.add(field, "must be set to a case status");
                None
            }
            Err(_) => {
                self.add(
                    field,
                    format!(
                        "{value} is not a case status: use CASE_STATUS_OPEN, \
                         CASE_STATUS_IN_PROGRESS, CASE_STATUS_EXCEPTION, CASE_STATUS_REMEDIATED \
                         or CASE_STATUS_CLOSED"
                    ),
                );
                None
            }
        }
    }

    fn sla(&mut self, field: &str, value: i32) -> Option<SlaStatus> {
        match pb::SlaStatus::try_from(value) {
            Ok(pb::SlaStatus::OnTrack) => Some(SlaStatus::OnTrack),
            Ok(pb::SlaStatus::AtRisk) => Some(SlaStatus::AtRisk),
            Ok(pb::SlaStatus::Breached) => Some(SlaStatus::Breached),
            Ok(pb::SlaStatus::Met) => Some(SlaStatus::Met),
            Ok(pb::SlaStatus::Exempt) => Some(SlaStatus::Exempt),
            _ => {
                self.add(
                    field,
                    format!(
                        "{value} is not an SLA status: use SLA_STATUS_ON_TRACK, \
                         SLA_STATUS_AT_RISK, SLA_STATUS_BREACHED, SLA_STATUS_MET or \
                         SLA_STATUS_EXEMPT"
                    ),
                );
                None
            }
        }
    }

    fn etag<'a>(&mut self, value: &'a str) -> Option<&'a str> {
        if value.is_empty() {
            return None;
        }
        let well_formed = value
            .strip_prefix("\"v")
            .and_then(|rest| rest.strip_suffix('"'))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed {
            self.add(
                "etag",
                "must be the etag of a case as returned by the server, or empty",
            );
        }
        Some(value)
    }

    fn user_id(&mut self, field: &str, value: &str) -> Option<String> {
        let value = self.line(field, value, 0, limits::USER_ID_MAX);
        (!value.is_empty()).then_some(value)
    }

    fn page_size(&mut self, value: i32, default: usize) -> usize {
        match pagination::page_size(value, default) {
            Ok(size) => size,
            Err(rule) => {
                self.add("page_size", rule);
                default
            }
        }
    }

    fn idempotency<M: Message + Clone>(
        &mut self,
        caller: &Caller,
        request: &M,
        request_id: &str,
        clear: impl FnOnce(&mut M),
    ) -> Option<IdempotencyKey> {
        if request_id.is_empty() {
            return None;
        }
        if request_id.chars().count() > limits::REQUEST_ID_MAX
            || request_id.chars().any(char::is_control)
        {
            self.add(
                "request_id",
                format!(
                    "must be at most {} characters without control characters",
                    limits::REQUEST_ID_MAX
                ),
            );
            return None;
        }
        let mut copy = request.clone();
        clear(&mut copy);
        Some(IdempotencyKey {
            caller_id: caller.id(),
            request_id: request_id.to_owned(),
            fingerprint: domain::hex(&Sha256::digest(copy.encode_to_vec())),
        })
    }

    fn actor(&mut self, field: &str, actor: Option<&pb::Actor>) -> Actor {
        let Some(actor) = actor else {
            self.add(field, "must be set to the person (or service) who acted");
            return Actor {
                kind: ActorKind::Service,
                id: String::new(),
                name: String::new(),
            };
        };
        let kind = match pb::actor::Kind::try_from(actor.kind) {
            Ok(pb::actor::Kind::User) => ActorKind::User,
            Ok(pb::actor::Kind::Service) => ActorKind::Service,
            _ => {
                self.add(
                    &format!("{field}.kind"),
                    "must be KIND_USER or KIND_SERVICE",
                );
                ActorKind::User
            }
        };
        let id = self.line(&format!("{field}.id"), &actor.id, 1, limits::USER_ID_MAX);
        let name = self.line(
            &format!("{field}.display_name"),
            &actor.display_name,
            0,
            255,
        );
        Actor {
            kind,
            name: if name.is_empty() { id.clone() } else { name },
            id,
        }
    }

    fn payload(&mut self, field: &str, json: &str) -> serde_json::Map<String, serde_json::Value> {
        if json.trim().is_empty() {
            return serde_json::Map::new();
        }
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(map)) if json.len() <= 64 * 1024 => map,
            Ok(serde_json::Value::Object(_)) => {
                self.add(field, "must be at most 64 KiB");
                serde_json::Map::new()
            }
            _ => {
                self.add(field, "must be a JSON object");
                serde_json::Map::new()
            }
        }
    }
}

/// The query a list page token is bound to.
#[derive(Debug, Serialize)]
struct ListQuery<'a> {
    filter: &'a CaseFilter,
    order: CaseOrder,
}

/// Turns the wire filter into the domain filter, resolving `me` to the caller.
fn parse_filter(check: &mut Check, filter: Option<&pb::CaseFilter>, caller: &Caller) -> CaseFilter {
    let Some(filter) = filter else {
        return CaseFilter::default();
    };
    let mut statuses = Vec::new();
    for (index, value) in filter.statuses.iter().enumerate() {
        if let Some(status) = check.status(&format!("filter.statuses[{index}]"), *value)
            && !statuses.contains(&status)
        {
            statuses.push(status);
        }
    }
    let mut severities = Vec::new();
    for (index, value) in filter.severities.iter().enumerate() {
        if let Some(severity) = check.severity(&format!("filter.severities[{index}]"), *value)
            && !severities.contains(&severity)
        {
            severities.push(severity);
        }
    }
    let mut sla_statuses = Vec::new();
    for (index, value) in filter.sla_statuses.iter().enumerate() {
        if let Some(sla) = check.sla(&format!("filter.sla_statuses[{index}]"), *value)
            && !sla_statuses.contains(&sla)
        {
            sla_statuses.push(sla);
        }
    }
    statuses.sort_by_key(|s| status_to_wire(*s) as i32);
    severities.sort();
    sla_statuses.sort_by_key(|s| sla_to_wire(*s) as i32);
    let assignee = match filter.assignee.trim() {
        "" => AssigneeFilter::Any,
        "nobody" => AssigneeFilter::Nobody,
        "me" => AssigneeFilter::User(caller.id()),
        other => AssigneeFilter::User(check.user_id("filter.assignee", other).unwrap_or_default()),
    };
    let title = check.line(
        "filter.title_contains",
        &filter.title_contains,
        0,
        limits::TITLE_FILTER_MAX,
    );
    CaseFilter {
        statuses,
        severities,
        assignee,
        pending_exception: filter.pending_exception,
        sla_statuses,
        jira_linked: filter.jira_linked,
        title_contains: (!title.is_empty()).then(|| title.to_lowercase()),
    }
}

fn parse_order(check: &mut Check, value: i32) -> CaseOrder {
    match pb::CaseOrder::try_from(value) {
        Ok(pb::CaseOrder::Unspecified | pb::CaseOrder::CreateTimeDesc) => CaseOrder::CreatedDesc,
        Ok(pb::CaseOrder::CreateTimeAsc) => CaseOrder::CreatedAsc,
        Ok(pb::CaseOrder::SeverityDesc) => CaseOrder::SeverityDesc,
        Ok(pb::CaseOrder::SlaDueTimeAsc) => CaseOrder::SlaDueAsc,
        Err(_) => {
            check.add(
                "order_by",
                format!(
                    "{value} is not an order: use CASE_ORDER_CREATE_TIME_DESC, \
                     CASE_ORDER_CREATE_TIME_ASC, CASE_ORDER_SEVERITY_DESC or \
                     CASE_ORDER_SLA_DUE_TIME_ASC"
                ),
            );
            CaseOrder::CreatedDesc
        }
    }
}

impl CaseApi {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn decode_token<T: DeserializeOwned>(
        &self,
        check: &mut Check,
        scope: &str,
        token: &str,
    ) -> Option<T> {
        if token.is_empty() {
            return None;
        }
        match self.tokens.decode(scope, token) {
            Ok(cursor) => Some(cursor),
            Err(error) => {
                check.violations.push(page_token_violation(&error));
                None
            }
        }
    }

    fn reply_case(&self, case: &Case) -> Option<pb::Case> {
        Some(case_to_wire(case, self.now()))
    }

    async fn bulk(
        &self,
        caller: &Caller,
        selection: Option<&pb::BulkSelection>,
        note: &str,
        target: BulkTarget,
        key: Option<IdempotencyKey>,
        mut check: Check,
    ) -> Result<Vec<pb::BulkOutcome>, Status> {
        let listed = selection.map(|s| s.case_ids.as_slice()).unwrap_or_default();
        let filter = selection.and_then(|s| s.filter.as_ref());
        let mut matched = Vec::new();
        match (listed.is_empty(), filter) {
            (true, None) => check.add(
                "selection",
                format!(
                    "must list 1 to {} case_ids or give a filter",
                    limits::BULK_MAX
                ),
            ),
            (false, Some(_)) => check.add(
                "selection",
                "must give either case_ids or a filter, not both",
            ),
            (true, Some(filter)) => {
                let filter = parse_filter(&mut check, Some(filter), caller);
                if filter == CaseFilter::default() {
                    // An empty filter would act on every case; that must be asked for in so
                    // many words (for example by listing the statuses).
                    check.add(
                        "selection.filter",
                        "must set at least one condition; to act on every case, list the statuses",
                    );
                } else if check.violations.is_empty() {
                    matched = self
                        .store
                        .case_ids_matching(&filter, limits::BULK_MAX)
                        .await
                        .map_err(store_error)?;
                    if matched.len() > limits::BULK_MAX {
                        check.add(
                            "selection.filter",
                            format!("matches more than {} cases; narrow it", limits::BULK_MAX),
                        );
                    }
                }
            }
            (false, None) if listed.len() > limits::BULK_MAX => check.add(
                "selection.case_ids",
                format!(
                    "must list at most {} cases (got {})",
                    limits::BULK_MAX,
                    listed.len()
                ),
            ),
            (false, None) => {
                let mut seen = std::collections::HashSet::with_capacity(listed.len());
                for (index, id) in listed.iter().enumerate() {
                    let field = format!("selection.case_ids[{index}]");
                    check.case_ref(&field, id);
                    if !seen.insert(CaseRef::parse(id)) {
                        check.add(&field, "repeats an earlier case");
                    }
                }
            }
        }
        let ids = if listed.is_empty() {
            matched.as_slice()
        } else {
            listed
        };
        let note = check.text("note", note, 0, limits::NOTE_MAX);
        check.finish()?;
        let outcomes = self
            .store
            .bulk_transition(&caller_actor(caller), ids, target, &note, key.as_ref())
            .await
            .map_err(store_error)?;
        Ok(outcomes.iter().map(outcome_to_wire).collect())
    }
}

/// A page request of a case's findings, comments or events.
trait DetailPageRequest {
    fn case_id(&self) -> &str;
    fn page_size(&self) -> i32;
    fn page_token(&self) -> &str;
}

macro_rules! detail_page_request {
    ($($message:ty),*) => {$(
        impl DetailPageRequest for $message {
            fn case_id(&self) -> &str {
                &self.case_id
            }
            fn page_size(&self) -> i32 {
                self.page_size
            }
            fn page_token(&self) -> &str {
                &self.page_token
            }
        }
    )*};
}

detail_page_request!(
    pb::ListCaseFindingsRequest,
    pb::ListCommentsRequest,
    pb::ListEvidenceEventsRequest
);

/// A validated detail page request; its tokens are bound to the list kind and the case.
#[derive(Debug)]
struct DetailQuery {
    case_ref: CaseRef,
    page_size: usize,
    scope: String,
    after: Option<i64>,
}

impl CaseApi {
    fn detail_query(
        &self,
        kind: &str,
        request: &impl DetailPageRequest,
    ) -> Result<DetailQuery, Status> {
        let mut check = Check::default();
        let case_ref = check.case_ref("case_id", request.case_id());
        let page_size = check.page_size(request.page_size(), DETAIL_PAGE_SIZE);
        let scope = format!("{kind}:{}", request.case_id().trim());
        let after = self.decode_token(&mut check, &scope, request.page_token());
        check.finish()?;
        Ok(DetailQuery {
            case_ref,
            page_size,
            scope,
            after,
        })
    }

    fn next_detail_token(&self, query: &DetailQuery, next: Option<i64>) -> String {
        next.map(|seq| self.tokens.encode(&query.scope, &seq))
            .unwrap_or_default()
    }
}

fn caller_of<T>(request: &Request<T>, permission: Permission) -> Result<Caller, Status> {
    authorize(request.extensions(), permission).map_err(status)
}

#[tonic::async_trait]
impl pb::case_service_server::CaseService for CaseApi {
    async fn create_case(
        &self,
        request: Request<pb::CreateCaseRequest>,
    ) -> Result<Response<pb::CreateCaseResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let title = check.line("title", &req.title, 1, limits::TITLE_MAX);
        let description = check.text("description", &req.description, 0, limits::DESCRIPTION_MAX);
        let severity = check.severity("severity", req.severity);
        let assignee_id = match req.assignee_id.trim() {
            "me" => Some(caller.id()),
            "nobody" => None,
            other => check.user_id("assignee_id", other),
        };
        if req.finding_ids.len() > limits::FINDINGS_AT_CREATE_MAX {
            check.add(
                "finding_ids",
                format!(
                    "must list at most {} findings",
                    limits::FINDINGS_AT_CREATE_MAX
                ),
            );
        }
        let mut finding_ids = Vec::with_capacity(req.finding_ids.len());
        for (index, id) in req.finding_ids.iter().enumerate() {
            let field = format!("finding_ids[{index}]");
            let id = check.id(&field, id);
            if finding_ids.contains(&id) {
                check.add(&field, "repeats an earlier finding");
            }
            finding_ids.push(id);
        }
        check.finish()?;
        let input = NewCase {
            title,
            description,
            severity: severity.unwrap_or(Severity::Low),
            assignee_id,
            finding_ids,
        };
        let case = self
            .store
            .create_case(&caller_actor(&caller), &input, key.as_ref())
            .await
            .map_err(store_error)?;
        tracing::info!(case_id = %case.id, number = %case.display_number(), "case created");
        Ok(Response::new(pb::CreateCaseResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::GetCaseResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let mut check = Check::default();
        let case_ref = check.case_ref("case_id", &request.get_ref().case_id);
        check.finish()?;
        let case = self.store.get_case(&case_ref).await.map_err(store_error)?;
        Ok(Response::new(pb::GetCaseResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn update_case(
        &self,
        request: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::UpdateCaseResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let etag = check.etag(&req.etag);
        let changes = CaseChanges {
            title: req
                .title
                .as_deref()
                .map(|t| check.line("title", t, 1, limits::TITLE_MAX)),
            description: req
                .description
                .as_deref()
                .map(|d| check.text("description", d, 0, limits::DESCRIPTION_MAX)),
            severity: req.severity.and_then(|s| check.severity("severity", s)),
        };
        check.finish()?;
        let case = self
            .store
            .update_case(
                &caller_actor(&caller),
                &case_ref,
                etag,
                &changes,
                key.as_ref(),
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::UpdateCaseResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let caller = caller_of(&request, Permission::Read)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let filter = parse_filter(&mut check, req.filter.as_ref(), &caller);
        let order = parse_order(&mut check, req.order_by);
        let page_size = check.page_size(req.page_size, pagination::DEFAULT_PAGE_SIZE);
        let scope = fingerprint(&ListQuery {
            filter: &filter,
            order,
        });
        let cursor = self.decode_token(&mut check, &scope, &req.page_token);
        check.finish()?;
        let page = self
            .store
            .list_cases(&filter, order, page_size, cursor.as_ref())
            .await
            .map_err(store_error)?;
        let now = self.now();
        Ok(Response::new(pb::ListCasesResponse {
            cases: page.items.iter().map(|c| case_to_wire(c, now)).collect(),
            next_page_token: page
                .next
                .map(|cursor| self.tokens.encode(&scope, &cursor))
                .unwrap_or_default(),
        }))
    }

    async fn transition_case(
        &self,
        request: Request<pb::TransitionCaseRequest>,
    ) -> Result<Response<pb::TransitionCaseResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let etag = check.etag(&req.etag);
        let target = check.status("status", req.status);
        let note = check.text("note", &req.note, 0, limits::NOTE_MAX);
        check.finish()?;
        let target = target.unwrap_or(CaseStatus::Open);
        let case = self
            .store
            .transition_case(
                &caller_actor(&caller),
                &case_ref,
                etag,
                target,
                &note,
                key.as_ref(),
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::TransitionCaseResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn assign_case(
        &self,
        request: Request<pb::AssignCaseRequest>,
    ) -> Result<Response<pb::AssignCaseResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let etag = check.etag(&req.etag);
        let assignee = match req.assignee_id.trim() {
            "me" => Some(caller.id()),
            "nobody" => None,
            other => check.user_id("assignee_id", other),
        };
        check.finish()?;
        let case = self
            .store
            .assign_case(
                &caller_actor(&caller),
                &case_ref,
                etag,
                assignee.as_deref(),
                key.as_ref(),
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::AssignCaseResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn bulk_close_cases(
        &self,
        request: Request<pb::BulkCloseCasesRequest>,
    ) -> Result<Response<pb::BulkCloseCasesResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let outcomes = self
            .bulk(
                &caller,
                req.selection.as_ref(),
                &req.note,
                BulkTarget::Closed,
                key,
                check,
            )
            .await?;
        Ok(Response::new(pb::BulkCloseCasesResponse { outcomes }))
    }

    async fn bulk_resolve_cases(
        &self,
        request: Request<pb::BulkResolveCasesRequest>,
    ) -> Result<Response<pb::BulkResolveCasesResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let outcomes = self
            .bulk(
                &caller,
                req.selection.as_ref(),
                &req.note,
                BulkTarget::Remediated,
                key,
                check,
            )
            .await?;
        Ok(Response::new(pb::BulkResolveCasesResponse { outcomes }))
    }

    async fn create_finding(
        &self,
        request: Request<pb::CreateFindingRequest>,
    ) -> Result<Response<pb::CreateFindingResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref =
            (!req.case_id.trim().is_empty()).then(|| check.case_ref("case_id", &req.case_id));
        let Some(finding) = req.finding.as_ref() else {
            return Err(status(ApiError::invalid("finding", "must be set")));
        };
        let external_id = check.line("finding.external_id", &finding.external_id, 0, 255);
        let input = NewFinding {
            external_id: (!external_id.is_empty()).then_some(external_id),
            title: check.line("finding.title", &finding.title, 1, limits::TITLE_MAX),
            rule: check.line("finding.rule", &finding.rule, 1, limits::RULE_MAX),
            severity: check
                .severity("finding.severity", finding.severity)
                .unwrap_or(Severity::Low),
            content_id: check.line(
                "finding.content_id",
                &finding.content_id,
                1,
                limits::CONTENT_ID_MAX,
            ),
            space_key: check.line("finding.space_key", &finding.space_key, 0, 255),
            page_title: check.line("finding.page_title", &finding.page_title, 0, 255),
            page_url: check.line("finding.page_url", &finding.page_url, 0, limits::URL_MAX),
            excerpt: check.text("finding.excerpt", &finding.excerpt, 0, limits::EXCERPT_MAX),
            detected_at: finding.detect_time.as_ref().and_then(from_timestamp),
        };
        if !input.page_url.is_empty() && !is_https_url(&input.page_url) {
            check.add("finding.page_url", "must be an absolute https:// URL");
        }
        match (&finding.detect_time, input.detected_at) {
            (Some(_), None) => check.add("finding.detect_time", "must be a valid timestamp"),
            (_, Some(at)) if at.year() < 2000 || at > self.now() + chrono::Duration::days(1) => {
                check.add(
                    "finding.detect_time",
                    "must be after 2000 and not in the future",
                );
            }
            _ => {}
        }
        check.finish()?;
        let stored = self
            .store
            .create_finding(
                &caller_actor(&caller),
                &input,
                case_ref.as_ref(),
                key.as_ref(),
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::CreateFindingResponse {
            finding: Some(finding_to_wire(&stored)),
        }))
    }

    async fn get_finding(
        &self,
        request: Request<pb::GetFindingRequest>,
    ) -> Result<Response<pb::GetFindingResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let mut check = Check::default();
        let id = check.id("finding_id", &request.get_ref().finding_id);
        check.finish()?;
        let finding = self.store.get_finding(&id).await.map_err(store_error)?;
        Ok(Response::new(pb::GetFindingResponse {
            finding: Some(finding_to_wire(&finding)),
        }))
    }

    async fn list_case_findings(
        &self,
        request: Request<pb::ListCaseFindingsRequest>,
    ) -> Result<Response<pb::ListCaseFindingsResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let query = self.detail_query("findings", request.get_ref())?;
        let page = self
            .store
            .list_case_findings(&query.case_ref, query.page_size, query.after)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListCaseFindingsResponse {
            findings: page.items.iter().map(finding_to_wire).collect(),
            next_page_token: self.next_detail_token(&query, page.next),
        }))
    }

    async fn link_finding(
        &self,
        request: Request<pb::LinkFindingRequest>,
    ) -> Result<Response<pb::LinkFindingResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let finding_id = check.id("finding_id", &req.finding_id);
        check.finish()?;
        let case = self
            .store
            .link_finding(&caller_actor(&caller), &case_ref, &finding_id, key.as_ref())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::LinkFindingResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn unlink_finding(
        &self,
        request: Request<pb::UnlinkFindingRequest>,
    ) -> Result<Response<pb::UnlinkFindingResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let finding_id = check.id("finding_id", &req.finding_id);
        check.finish()?;
        let case = self
            .store
            .unlink_finding(&caller_actor(&caller), &case_ref, &finding_id, key.as_ref())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::UnlinkFindingResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn add_comment(
        &self,
        request: Request<pb::AddCommentRequest>,
    ) -> Result<Response<pb::AddCommentResponse>, Status> {
        let caller = caller_of(&request, Permission::EditCases)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = check.idempotency(&caller, req, &req.request_id, |r| r.request_id.clear());
        let case_ref = check.case_ref("case_id", &req.case_id);
        let body = check.text("body", &req.body, 1, limits::COMMENT_MAX);
        check.finish()?;
        let comment = self
            .store
            .add_comment(&caller_actor(&caller), &case_ref, &body, key.as_ref())
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::AddCommentResponse {
            comment: Some(comment_to_wire(&comment)),
        }))
    }

    async fn list_comments(
        &self,
        request: Request<pb::ListCommentsRequest>,
    ) -> Result<Response<pb::ListCommentsResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let query = self.detail_query("comments", request.get_ref())?;
        let page = self
            .store
            .list_comments(&query.case_ref, query.page_size, query.after)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListCommentsResponse {
            comments: page.items.iter().map(comment_to_wire).collect(),
            next_page_token: self.next_detail_token(&query, page.next),
        }))
    }

    async fn list_evidence_events(
        &self,
        request: Request<pb::ListEvidenceEventsRequest>,
    ) -> Result<Response<pb::ListEvidenceEventsResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let query = self.detail_query("events", request.get_ref())?;
        let page = self
            .store
            .list_events(&query.case_ref, query.page_size, query.after)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListEvidenceEventsResponse {
            events: page.items.iter().map(event_to_wire).collect(),
            next_page_token: self.next_detail_token(&query, page.next),
        }))
    }

    async fn verify_evidence_chain(
        &self,
        request: Request<pb::VerifyEvidenceChainRequest>,
    ) -> Result<Response<pb::VerifyEvidenceChainResponse>, Status> {
        caller_of(&request, Permission::Read)?;
        let mut check = Check::default();
        let case_ref = check.case_ref("case_id", &request.get_ref().case_id);
        check.finish()?;
        let result = self
            .store
            .verify_chain(&case_ref)
            .await
            .map_err(store_error)?;
        if !result.valid {
            tracing::warn!(
                case = %request.get_ref().case_id,
                broken_at = result.broken_at,
                problem = %result.problem,
                "evidence chain broken"
            );
        }
        Ok(Response::new(pb::VerifyEvidenceChainResponse {
            valid: result.valid,
            event_count: result.event_count,
            head_hash: result.head_hash,
            broken_at_sequence: result.broken_at,
            problem: result.problem,
        }))
    }

    async fn apply_exception_decision(
        &self,
        request: Request<pb::ApplyExceptionDecisionRequest>,
    ) -> Result<Response<pb::ApplyExceptionDecisionResponse>, Status> {
        let caller = caller_of(&request, Permission::ServiceOnly)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = required_key(&mut check, &caller, req, &req.request_id, |r| {
            r.request_id.clear()
        });
        let case_ref = check.case_ref("case_id", &req.case_id);
        let exception_id = check.id("exception_id", &req.exception_id);
        let decision = match pb::ExceptionDecision::try_from(req.decision) {
            Ok(pb::ExceptionDecision::Requested) => Some(ExceptionDecision::Requested),
            Ok(pb::ExceptionDecision::Approved) => Some(ExceptionDecision::Approved),
            Ok(pb::ExceptionDecision::Revoked) => Some(ExceptionDecision::Revoked),
            Ok(pb::ExceptionDecision::Expired) => Some(ExceptionDecision::Expired),
            _ => {
                check.add(
                    "decision",
                    "must be EXCEPTION_DECISION_REQUESTED, _APPROVED, _REVOKED or _EXPIRED",
                );
                None
            }
        };
        let actor = check.actor("actor", req.actor.as_ref());
        let payload = check.payload("payload_json", &req.payload_json);
        let superseded = check.user_id("superseded_exception_id", &req.superseded_exception_id);
        let reassign_to = check.user_id("reassign_to", &req.reassign_to);
        check.finish()?;
        let (Some(key), Some(decision)) = (key, decision) else {
            return Err(Status::internal("validated fields missing"));
        };
        let effect = ExceptionEffect {
            exception_id,
            decision,
            payload,
            superseded_exception_id: superseded,
            reassign_to,
        };
        let (case, event) = self
            .store
            .apply_exception_decision(&actor, &case_ref, &effect, &key)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ApplyExceptionDecisionResponse {
            case: self.reply_case(&case),
            event: Some(event_to_wire(&event)),
        }))
    }

    async fn link_jira_issue(
        &self,
        request: Request<pb::LinkJiraIssueRequest>,
    ) -> Result<Response<pb::LinkJiraIssueResponse>, Status> {
        let caller = caller_of(&request, Permission::ServiceOnly)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = required_key(&mut check, &caller, req, &req.request_id, |r| {
            r.request_id.clear()
        });
        let case_ref = check.case_ref("case_id", &req.case_id);
        let actor = check.actor("actor", req.actor.as_ref());
        let link = match req.issue.as_ref() {
            None => {
                check.add("issue", "must be set");
                None
            }
            Some(issue) => Some(domain::JiraLink {
                issue_id: check.line("issue.issue_id", &issue.issue_id, 1, 64),
                issue_key: check.line("issue.issue_key", &issue.issue_key, 1, 64),
                browse_url: check.line("issue.browse_url", &issue.browse_url, 1, limits::URL_MAX),
                status_name: check.line("issue.status_name", &issue.status_name, 0, 255),
                status_category: check.line("issue.status_category", &issue.status_category, 0, 32),
                status_fetched_at: issue.status_fetch_time.as_ref().and_then(from_timestamp),
            }),
        };
        check.finish()?;
        let (Some(key), Some(link)) = (key, link) else {
            return Err(Status::internal("validated fields missing"));
        };
        let case = self
            .store
            .link_jira_issue(&actor, &case_ref, &link, &key)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::LinkJiraIssueResponse {
            case: self.reply_case(&case),
        }))
    }

    async fn update_jira_issue_status(
        &self,
        request: Request<pb::UpdateJiraIssueStatusRequest>,
    ) -> Result<Response<pb::UpdateJiraIssueStatusResponse>, Status> {
        let caller = caller_of(&request, Permission::ServiceOnly)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = required_key(&mut check, &caller, req, &req.request_id, |r| {
            r.request_id.clear()
        });
        let case_ref = check.case_ref("case_id", &req.case_id);
        let update = domain::JiraLink {
            issue_id: check.line("issue_id", &req.issue_id, 1, 64),
            issue_key: check.line("issue_key", &req.issue_key, 0, 64),
            browse_url: String::new(),
            status_name: check.line("status_name", &req.status_name, 1, 255),
            status_category: check.line("status_category", &req.status_category, 1, 32),
            status_fetched_at: req.fetch_time.as_ref().and_then(from_timestamp),
        };
        if update.status_fetched_at.is_none() {
            check.add("fetch_time", "must be set to a valid timestamp");
        }
        check.finish()?;
        let Some(key) = key else {
            return Err(Status::internal("validated fields missing"));
        };
        let actor = caller_actor(&caller);
        let (case, changed) = self
            .store
            .update_jira_status(&actor, &case_ref, &update, &key)
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::UpdateJiraIssueStatusResponse {
            case: self.reply_case(&case),
            changed,
        }))
    }

    async fn record_case_event(
        &self,
        request: Request<pb::RecordCaseEventRequest>,
    ) -> Result<Response<pb::RecordCaseEventResponse>, Status> {
        let caller = caller_of(&request, Permission::ServiceOnly)?;
        let req = request.get_ref();
        let mut check = Check::default();
        let key = required_key(&mut check, &caller, req, &req.request_id, |r| {
            r.request_id.clear()
        });
        let case_ref = check.case_ref("case_id", &req.case_id);
        if req.event_type != event_type::EXPORT_GENERATED {
            check.add(
                "event_type",
                format!(
                    "must be {}; other events are written by their own RPCs",
                    event_type::EXPORT_GENERATED
                ),
            );
        }
        let actor = check.actor("actor", req.actor.as_ref());
        let payload = check.payload("payload_json", &req.payload_json);
        check.finish()?;
        let Some(key) = key else {
            return Err(Status::internal("validated fields missing"));
        };
        let event = self
            .store
            .record_event(
                &actor,
                &case_ref,
                &req.event_type,
                serde_json::Value::Object(payload),
                &key,
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::RecordCaseEventResponse {
            event: Some(event_to_wire(&event)),
        }))
    }
}

/// Service calls must carry a `request_id`: it is how a retried effect is applied once.
fn required_key<M: Message + Clone>(
    check: &mut Check,
    caller: &Caller,
    request: &M,
    request_id: &str,
    clear: impl FnOnce(&mut M),
) -> Option<IdempotencyKey> {
    if request_id.trim().is_empty() {
        check.add(
            "request_id",
            "must be set: service calls are deduplicated by it",
        );
        return None;
    }
    check.idempotency(caller, request, request_id, clear)
}

fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://").is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace)
    })
}
