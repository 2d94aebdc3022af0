//! The vocabulary and rules of cases: statuses and their transition table, severities and
//! their SLA, validation of what users write, and the evidence hash chain.
//!
//! Nothing here touches the database or the wire; the storage and gRPC modules call these
//! functions so that each rule lives in one place.

use std::fmt;

use aegis_platform::error::Violation;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How serious a risk is; ordered by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Rank 1.
    Low,
    /// Rank 2.
    Medium,
    /// Rank 3.
    High,
    /// Rank 4.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The rank stored in the database (1 to 4).
    pub fn rank(self) -> i64 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Critical => 4,
        }
    }

    /// The severity of a stored rank.
    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.rank() == rank)
    }

    /// Lower-case name, as written in evidence payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CaseStatus {
    /// Found, not yet worked on.
    Open,
    /// Being worked on.
    InProgress,
    /// Held by an approved risk exception.
    Exception,
    /// The risk was removed.
    Remediated,
    /// Closed without remediation.
    Closed,
}

impl CaseStatus {
    /// Every status.
    pub const ALL: [CaseStatus; 5] = [
        Self::Open,
        Self::InProgress,
        Self::Exception,
        Self::Remediated,
        Self::Closed,
    ];

    /// The name stored in the database and written in evidence payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Exception => "exception",
            Self::Remediated => "remediated",
            Self::Closed => "closed",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the case is resolved (its SLA is settled).
    pub fn is_resolved(self) -> bool {
        matches!(self, Self::Remediated | Self::Closed)
    }

    /// The statuses a person may move a case to from this one. Exception is never among them:
    /// it is reached only by approving a risk exception, and left to Open only by revocation
    /// or expiry.
    pub fn manual_targets(self) -> &'static [CaseStatus] {
        use CaseStatus::{Closed, InProgress, Open, Remediated};
        match self {
            Self::Open => &[InProgress, Remediated, Closed],
            Self::InProgress => &[Open, Remediated, Closed],
            Self::Exception => &[Remediated, Closed],
            Self::Remediated => &[Open, Closed],
            Self::Closed => &[Open],
        }
    }

    /// Whether a risk exception may be approved on a case in this status.
    pub fn accepts_exception(self) -> bool {
        matches!(self, Self::Open | Self::InProgress | Self::Exception)
    }
}

impl fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a case stands against its SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlaStatus {
    /// At least 20% of the window left.
    OnTrack,
    /// Less than 20% of the window left.
    AtRisk,
    /// Past due while unresolved, or resolved late.
    Breached,
    /// Resolved in time.
    Met,
    /// In Exception.
    Exempt,
}

/// SLA targets per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Days to resolve a Critical case.
    pub critical_days: u32,
    /// Days to resolve a High case.
    pub high_days: u32,
    /// Days to resolve a Medium case.
    pub medium_days: u32,
    /// Days to resolve a Low case.
    pub low_days: u32,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        Self {
            critical_days: 7,
            high_days: 30,
            medium_days: 90,
            low_days: 180,
        }
    }
}

impl SlaPolicy {
    /// The SLA window of a severity.
    pub fn window(&self, severity: Severity) -> Duration {
        let days = match severity {
            Severity::Critical => self.critical_days,
            Severity::High => self.high_days,
            Severity::Medium => self.medium_days,
            Severity::Low => self.low_days,
        };
        Duration::days(i64::from(days))
    }

    /// Due time and at-risk time (when 20% of the window is left) of a case created at
    /// `created_at` with `severity`.
    pub fn deadlines(
        &self,
        created_at: DateTime<Utc>,
        severity: Severity,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let window = self.window(severity);
        let due = created_at + window;
        let at_risk = due - window / 5;
        (due, at_risk)
    }
}

/// The SLA status of a case at `now`.
pub fn sla_status(
    status: CaseStatus,
    due: DateTime<Utc>,
    at_risk: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> SlaStatus {
    match status {
        CaseStatus::Exception => SlaStatus::Exempt,
        CaseStatus::Remediated | CaseStatus::Closed => match resolved_at {
            Some(at) if at > due => SlaStatus::Breached,
            _ => SlaStatus::Met,
        },
        CaseStatus::Open | CaseStatus::InProgress => {
            if now >= due {
                SlaStatus::Breached
            } else if now >= at_risk {
                SlaStatus::AtRisk
            } else {
                SlaStatus::OnTrack
            }
        }
    }
}

/// What kind of identity acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorKind {
    /// A person.
    User,
    /// An Aegis service.
    Service,
}

impl ActorKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Service => "service",
        }
    }

    /// Kind of a stored name.
    pub fn parse(name: &str) -> Self {
        if name == "service" {
            Self::Service
        } else {
            Self::User
        }
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Person or service.
    pub kind: ActorKind,
    /// User id or service name.
    pub id: String,
    /// Display name at the time.
    pub name: String,
}

/// The Jira issue of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JiraLink {
    /// Jira's numeric id.
    pub issue_id: String,
    /// Issue key, `SEC-42`.
    pub issue_key: String,
    /// Browse URL.
    pub browse_url: String,
    /// Last known status name.
    pub status_name: String,
    /// Last known status category key.
    pub status_category: String,
    /// When the status was fetched.
    pub status_fetched_at: Option<DateTime<Utc>>,
}

/// A tracked risk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Stable id.
    pub id: String,
    /// Human number (17 for `CASE-17`).
    pub number: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// Status.
    pub status: CaseStatus,
    /// Assignee, if any.
    pub assignee_id: Option<String>,
    /// Creator.
    pub created_by: Actor,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// SLA due time.
    pub sla_due_at: DateTime<Utc>,
    /// When 20% of the SLA window is left.
    pub sla_at_risk_at: DateTime<Utc>,
    /// When last resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Linked findings.
    pub finding_count: i64,
    /// Comments.
    pub comment_count: i64,
    /// Exceptions ever requested.
    pub exception_count: i64,
    /// The pending exception, if any.
    pub pending_exception_id: Option<String>,
    /// The approved exception holding the case in Exception, if any.
    pub active_exception_id: Option<String>,
    /// Jira link.
    pub jira: Option<JiraLink>,
    /// Version behind the etag.
    pub version: i64,
}

impl Case {
    /// `CASE-17`.
    pub fn display_number(&self) -> String {
        format!("{CASE_NUMBER_PREFIX}{}", self.number)
    }

    /// The opaque etag of this version.
    pub fn etag(&self) -> String {
        format!("\"v{}\"", self.version)
    }

    /// The SLA status at `now`.
    pub fn sla_status(&self, now: DateTime<Utc>) -> SlaStatus {
        sla_status(
            self.status,
            self.sla_due_at,
            self.sla_at_risk_at,
            self.resolved_at,
            now,
        )
    }
}

/// Prefix of human case numbers.
pub const CASE_NUMBER_PREFIX: &str = "CASE-";

/// How a caller named a case: by id or by number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CaseRef {
    /// The stable id.
    Id(String),
    /// The number of `CASE-17`.
    Number(i64),
}

impl CaseRef {
    /// Parses `CASE-17` (any case) as a number and anything else as an id.
    pub fn parse(text: &str) -> CaseRef {
        let text = text.trim();
        let upper = text.to_ascii_uppercase();
        match upper
            .strip_prefix(CASE_NUMBER_PREFIX)
            .map(str::parse::<i64>)
        {
            Some(Ok(number)) if number > 0 => CaseRef::Number(number),
            // Ids are lower-case UUIDs; a client that upper-cased one means the same case.
            _ => CaseRef::Id(text.to_ascii_lowercase()),
        }
    }
}

/// A finding reported by the scanner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id.
    pub id: String,
    /// The scanner's id, if given.
    pub external_id: Option<String>,
    /// Summary.
    pub title: String,
    /// Rule that matched.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Confluence content id.
    pub content_id: String,
    /// Space key.
    pub space_key: String,
    /// Page title.
    pub page_title: String,
    /// Page URL.
    pub page_url: String,
    /// Redacted excerpt.
    pub excerpt: String,
    /// Detection time.
    pub detected_at: DateTime<Utc>,
    /// When stored.
    pub created_at: DateTime<Utc>,
}

/// A comment on a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Stable id.
    pub id: String,
    /// Case id.
    pub case_id: String,
    /// Author.
    pub author: Actor,
    /// Text.
    pub body: String,
    /// When written.
    pub created_at: DateTime<Utc>,
}

/// One evidence event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceEvent {
    /// Stable id.
    pub id: String,
    /// Case id.
    pub case_id: String,
    /// Position in the case's trail, from 1.
    pub seq: i64,
    /// Event type.
    pub event_type: String,
    /// Who caused it.
    pub actor: Actor,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// JSON object, as stored (compact, keys sorted).
    pub payload: String,
    /// Hash of the previous event.
    pub previous_hash: String,
    /// Hash of this event.
    pub hash: String,
}

/// `previous_hash` of a case's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The event types of the evidence trail.
pub mod event_type {
    /// A case was created.
    pub const CASE_CREATED: &str = "case_created";
    /// Title, description or severity changed.
    pub const CASE_UPDATED: &str = "case_updated";
    /// The status changed.
    pub const STATUS_CHANGED: &str = "status_changed";
    /// The assignee changed.
    pub const ASSIGNEE_CHANGED: &str = "assignee_changed";
    /// A comment was added.
    pub const COMMENT_ADDED: &str = "comment_added";
    /// A finding was linked.
    pub const FINDING_LINKED: &str = "finding_linked";
    /// A finding was unlinked.
    pub const FINDING_UNLINKED: &str = "finding_unlinked";
    /// A risk exception was requested.
    pub const EXCEPTION_REQUESTED: &str = "exception_requested";
    /// A risk exception was approved.
    pub const EXCEPTION_APPROVED: &str = "exception_approved";
    /// A risk exception was revoked.
    pub const EXCEPTION_REVOKED: &str = "exception_revoked";
    /// A risk exception expired.
    pub const EXCEPTION_EXPIRED: &str = "exception_expired";
    /// A Jira issue was created for the case.
    pub const JIRA_ISSUE_CREATED: &str = "jira_issue_created";
    /// The Jira issue's status changed.
    pub const JIRA_STATUS_CHANGED: &str = "jira_status_changed";
    /// The case was exported.
    pub const EXPORT_GENERATED: &str = "export_generated";
}

/// The fields an event's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct EventContent<'a> {
    /// Event id.
    pub id: &'a str,
    /// Case id.
    pub case_id: &'a str,
    /// Sequence.
    pub seq: i64,
    /// Type.
    pub event_type: &'a str,
    /// Actor.
    pub actor: &'a Actor,
    /// Time, as stored (microseconds).
    pub occurred_at_micros: i64,
    /// Payload, as stored.
    pub payload: &'a str,
    /// Previous hash.
    pub previous_hash: &'a str,
}

/// The hash of an event: lowercase hex SHA-256 of the canonical form, a compact JSON array
/// `[1, id, case_id, seq, event_type, actor_kind, actor_id, actor_name, occurred_at_micros,
/// payload, previous_hash]` (1 is the version of this form). An auditor can recompute it from
/// an exported event with any JSON library.
pub fn event_hash(content: &EventContent<'_>) -> String {
    let canonical = serde_json::json!([
        1,
        content.id,
        content.case_id,
        content.seq,
        content.event_type,
        content.actor.kind.as_str(),
        content.actor.id,
        content.actor.name,
        content.occurred_at_micros,
        content.payload,
        content.previous_hash,
    ]);
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// What verifying a case's chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    /// Whether every link holds.
    pub valid: bool,
    /// Events checked.
    pub event_count: i64,
    /// Hash of the last event.
    pub head_hash: String,
    /// First broken sequence number, 0 when valid.
    pub broken_at: i64,
    /// What is wrong there.
    pub problem: String,
}

/// Walks events in order and reports the first broken link.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a EvidenceEvent>) -> ChainVerification {
    let mut previous = GENESIS_HASH.to_owned();
    let mut count = 0;
    for (expected_seq, event) in (1_i64..).zip(events) {
        count += 1;
        let broken = |problem: String| ChainVerification {
            valid: false,
            event_count: count,
            head_hash: String::new(),
            broken_at: event.seq,
            problem,
        };
        if event.seq != expected_seq {
            return broken(format!(
                "event {} follows event {}: an event is missing",
                event.seq,
                expected_seq - 1
            ));
        }
        if event.previous_hash != previous {
            return broken(format!(
                "event {} does not link to the hash of event {}",
                event.seq,
                event.seq - 1
            ));
        }
        let recomputed = event_hash(&EventContent {
            id: &event.id,
            case_id: &event.case_id,
            seq: event.seq,
            event_type: &event.event_type,
            actor: &event.actor,
            occurred_at_micros: event.occurred_at.timestamp_micros(),
            payload: &event.payload,
            previous_hash: &event.previous_hash,
        });
        if recomputed != event.hash {
            return broken(format!(
                "event {} was altered: its content does not match its stored hash",
                event.seq
            ));
        }
        previous = event.hash.clone();
    }
    ChainVerification {
        valid: true,
        event_count: count,
        head_hash: previous,
        broken_at: 0,
        problem: String::new(),
    }
}

/// Who a list is filtered to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AssigneeFilter {
    /// Anyone or nobody.
    #[default]
    Any,
    /// Unassigned cases.
    Nobody,
    /// Cases of this user.
    User(String),
}

/// Which cases to list. Conditions combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaseFilter {
    /// Any of these statuses; empty for all.
    pub statuses: Vec<CaseStatus>,
    /// Any of these severities; empty for all.
    pub severities: Vec<Severity>,
    /// Assignee condition.
    pub assignee: AssigneeFilter,
    /// With or without a pending exception.
    pub pending_exception: Option<bool>,
    /// Any of these SLA states; empty for all.
    pub sla_statuses: Vec<SlaStatus>,
    /// With or without a Jira issue.
    pub jira_linked: Option<bool>,
    /// Title contains, ignoring case (already lower-cased).
    pub title_contains: Option<String>,
}

/// The order of a case list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CaseOrder {
    /// Newest first.
    #[default]
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// Most severe first, newest first within.
    SeverityDesc,
    /// Earliest due first.
    SlaDueAsc,
}

/// Limits of what users write.
pub mod limits {
    /// Characters of a case or finding title.
    pub const TITLE_MAX: usize = 255;
    /// Characters of a case description.
    pub const DESCRIPTION_MAX: usize = 20_000;
    /// Characters of a comment.
    pub const COMMENT_MAX: usize = 10_000;
    /// Characters of a transition note.
    pub const NOTE_MAX: usize = 2_000;
    /// Characters of a user id.
    pub const USER_ID_MAX: usize = 255;
    /// Characters of a `request_id`.
    pub const REQUEST_ID_MAX: usize = 128;
    /// Cases in one bulk action.
    pub const BULK_MAX: usize = 10_000;
    /// Findings linked at creation.
    pub const FINDINGS_AT_CREATE_MAX: usize = 1_000;
    /// Characters of a rule name.
    pub const RULE_MAX: usize = 200;
    /// Characters of a content id.
    pub const CONTENT_ID_MAX: usize = 64;
    /// Characters of an excerpt.
    pub const EXCERPT_MAX: usize = 1_000;
    /// Characters of a page URL.
    pub const URL_MAX: usize = 2_048;
    /// Characters of the title filter.
    pub const TITLE_FILTER_MAX: usize = 255;
}

/// Checks a single-line text field: trimmed, `min..=max` characters, no control characters.
/// Returns the trimmed text.
pub fn check_line(
    violations: &mut Vec<Violation>,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> String {
    let trimmed = value.trim();
    let count = trimmed.chars().count();
    if count < min || count > max {
        let rule = if min == 0 {
            format!("must be at most {max} characters (got {count})")
        } else {
            format!("must be {min} to {max} characters (got {count})")
        };
        violations.push(Violation::new(field, rule));
    } else if trimmed.chars().any(char::is_control) {
        violations.push(Violation::new(field, "must not contain control characters"));
    }
    trimmed.to_owned()
}

/// Checks a multi-line text field: at most `max` characters (and at least `min` after
/// trimming); tabs and line breaks allowed, other control characters not.
pub fn check_text(
    violations: &mut Vec<Violation>,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> String {
    let count = value.chars().count();
    let trimmed_count = value.trim().chars().count();
    if count > max || trimmed_count < min {
        let rule = if min == 0 {
            format!("must be at most {max} characters (got {count})")
        } else {
            format!("must be {min} to {max} characters (got {trimmed_count})")
        };
        violations.push(Violation::new(field, rule));
    } else if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        violations.push(Violation::new(
            field,
            "must not contain control characters other than tab and line breaks",
        ));
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(day * 86_400, 0).expect("time")
    }

    #[test]
    fn exception_is_never_a_manual_target() {
        for status in CaseStatus::ALL {
            assert!(!status.manual_targets().contains(&CaseStatus::Exception));
            assert!(!status.manual_targets().contains(&status));
        }
    }

    #[test]
    fn the_transition_table_matches_the_product() {
        use CaseStatus::*;
        assert_eq!(Open.manual_targets(), &[InProgress, Remediated, Closed]);
        assert_eq!(InProgress.manual_targets(), &[Open, Remediated, Closed]);
        assert_eq!(Exception.manual_targets(), &[Remediated, Closed]);
        assert_eq!(Remediated.manual_targets(), &[Open, Closed]);
        assert_eq!(Closed.manual_targets(), &[Open]);
    }

    #[test]
    fn sla_moves_from_on_track_to_at_risk_to_breached() {
        let policy = SlaPolicy::default();
        let (due, at_risk) = policy.deadlines(at(0), Severity::High);
        assert_eq!(due, at(30));
        assert_eq!(at_risk, at(24));
        let open = |now| sla_status(CaseStatus::Open, due, at_risk, None, now);
        assert_eq!(open(at(23)), SlaStatus::OnTrack);
        assert_eq!(open(at(25)), SlaStatus::AtRisk);
        assert_eq!(open(at(30)), SlaStatus::Breached);
        assert_eq!(
            sla_status(CaseStatus::Exception, due, at_risk, None, at(40)),
            SlaStatus::Exempt
        );
        assert_eq!(
            sla_status(CaseStatus::Closed, due, at_risk, Some(at(29)), at(40)),
            SlaStatus::Met
        );
        assert_eq!(
            sla_status(CaseStatus::Remediated, due, at_risk, Some(at(31)), at(40)),
            SlaStatus::Breached
        );
    }

    #[test]
    fn case_refs_accept_numbers_and_ids() {
        assert_eq!(CaseRef::parse("CASE-17"), CaseRef::Number(17));
        assert_eq!(CaseRef::parse(" case-3 "), CaseRef::Number(3));
        assert_eq!(CaseRef::parse("CASE-x"), CaseRef::Id("case-x".into()));
        assert_eq!(CaseRef::parse("0190"), CaseRef::Id("0190".into()));
        assert_eq!(CaseRef::parse("01A2-BC"), CaseRef::Id("01a2-bc".into()));
    }

    fn chain(n: i64) -> Vec<EvidenceEvent> {
        let actor = Actor {
            kind: ActorKind::User,
            id: "u".into(),
            name: "U".into(),
        };
        let mut previous = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let id = format!("e{seq}");
                let payload = format!("{{\"n\":{seq}}}");
                let hash = event_hash(&EventContent {
                    id: &id,
                    case_id: "c",
                    seq,
                    event_type: "case_updated",
                    actor: &actor,
                    occurred_at_micros: seq * 1_000_000,
                    payload: &payload,
                    previous_hash: &previous,
                });
                let event = EvidenceEvent {
                    id,
                    case_id: "c".into(),
                    seq,
                    event_type: "case_updated".into(),
                    actor: actor.clone(),
                    occurred_at: DateTime::from_timestamp(seq, 0).expect("time"),
                    payload,
                    previous_hash: previous.clone(),
                    hash: hash.clone(),
                };
                previous = hash;
                event
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let events = chain(5);
        let result = verify_chain(&events);
        assert!(result.valid, "{}", result.problem);
        assert_eq!(result.event_count, 5);
        assert_eq!(result.head_hash, events[4].hash);
    }

    #[test]
    fn an_altered_payload_names_its_event() {
        let mut events = chain(5);
        events[2].payload = "{\"n\":99}".into();
        let result = verify_chain(&events);
        assert!(!result.valid);
        assert_eq!(result.broken_at, 3);
        assert!(result.problem.contains("altered"));
    }

    #[test]
    fn a_removed_event_is_detected() {
        let mut events = chain(5);
        events.remove(1);
        let result = verify_chain(&events);
        assert!(!result.valid);
        assert_eq!(result.broken_at, 3);
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        let mut violations = Vec::new();
        check_line(&mut violations, "title", &"é".repeat(255), 1, 255);
        assert!(violations.is_empty());
        check_line(&mut violations, "title", &"é".repeat(256), 1, 255);
        check_line(&mut violations, "title", "   ", 1, 255);
        check_line(&mut violations, "title", "a\u{7}b", 1, 255);
        assert_eq!(violations.len(), 3);
    }
}
