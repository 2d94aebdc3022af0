-- The cases service's schema. Written once for SQLite and PostgreSQL: only TEXT and BIGINT
-- columns, times as microseconds since the Unix epoch (UTC), JSON as TEXT.

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

INSERT INTO counters (name, value) VALUES ('case_number', 0);

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    number BIGINT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    -- Lower-cased title for the case-insensitive title filter.
    title_folded TEXT NOT NULL,
    description TEXT NOT NULL,
    -- 1 Low, 2 Medium, 3 High, 4 Critical: ordered so a sort by severity is a sort by rank.
    severity BIGINT NOT NULL,
    status TEXT NOT NULL,
    assignee_id TEXT,
    created_by_kind TEXT NOT NULL,
    created_by_id TEXT NOT NULL,
    created_by_name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sla_due_at BIGINT NOT NULL,
    -- When less than 20% of the SLA window is left.
    sla_at_risk_at BIGINT NOT NULL,
    resolved_at BIGINT,
    finding_count BIGINT NOT NULL DEFAULT 0,
    comment_count BIGINT NOT NULL DEFAULT 0,
    exception_count BIGINT NOT NULL DEFAULT 0,
    pending_exception_id TEXT,
    active_exception_id TEXT,
    jira_linked BIGINT NOT NULL DEFAULT 0,
    jira_issue_id TEXT,
    jira_issue_key TEXT,
    jira_browse_url TEXT,
    jira_status_name TEXT,
    jira_status_category TEXT,
    jira_status_fetched_at BIGINT,
    -- Bumped by every change to the case's fields; the etag clients send back.
    version BIGINT NOT NULL,
    -- Head of the evidence chain, kept on the row so that appending an event locks the case.
    evidence_seq BIGINT NOT NULL DEFAULT 0,
    evidence_head TEXT NOT NULL
);

-- Keyset pagination: every list order ends in number, which is unique.
CREATE INDEX cases_by_created ON cases (created_at, number);
CREATE INDEX cases_by_severity ON cases (severity, created_at, number);
CREATE INDEX cases_by_sla_due ON cases (sla_due_at, number);
CREATE INDEX cases_by_status_created ON cases (status, created_at, number);
CREATE INDEX cases_by_assignee_created ON cases (assignee_id, created_at, number);

CREATE TABLE findings (
    id TEXT PRIMARY KEY,
    external_id TEXT UNIQUE,
    title TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity BIGINT NOT NULL,
    content_id TEXT NOT NULL,
    space_key TEXT NOT NULL,
    page_title TEXT NOT NULL,
    page_url TEXT NOT NULL,
    excerpt TEXT NOT NULL,
    detected_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE case_findings (
    case_id TEXT NOT NULL REFERENCES cases (id),
    finding_id TEXT NOT NULL REFERENCES findings (id),
    linked_at BIGINT NOT NULL,
    -- Orders the links of a case; unique per case.
    link_seq BIGINT NOT NULL,
    PRIMARY KEY (case_id, finding_id)
);

CREATE INDEX case_findings_by_case ON case_findings (case_id, link_seq);

CREATE TABLE comments (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq BIGINT NOT NULL,
    author_kind TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (case_id, seq)
);

-- Append-only: no code path updates or deletes a row of this table.
CREATE TABLE evidence_events (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    payload TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (case_id, seq)
);

-- The first result of each mutating call that carried a request_id.
CREATE TABLE idempotency_keys (
    caller_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (caller_id, request_id)
);
