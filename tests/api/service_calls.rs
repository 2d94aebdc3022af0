//! The calls other Aegis services make: exception decisions, Jira links and statuses, and
//! other events, each applied once per `request_id`.

use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::{CasesClient, TestAegis};
use tonic::Code;

use crate::support::*;

fn person(id: &str) -> Option<pb::Actor> {
    Some(pb::Actor {
        kind: pb::actor::Kind::User as i32,
        id: id.into(),
        display_name: id.to_uppercase(),
    })
}

async fn decide(
    service: &mut CasesClient,
    request_id: &str,
    case_id: &str,
    exception_id: &str,
    decision: pb::ExceptionDecision,
    actor: &str,
) -> Result<pb::ApplyExceptionDecisionResponse, tonic::Status> {
    service
        .apply_exception_decision(pb::ApplyExceptionDecisionRequest {
            request_id: request_id.into(),
            case_id: case_id.into(),
            exception_id: exception_id.into(),
            decision: decision as i32,
            actor: person(actor),
            payload_json: r#"{"reason":"compensating control in place","risk_level":"low"}"#.into(),
            reassign_to: if decision == pb::ExceptionDecision::Expired {
                "ana".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_exception_request_approval_and_revocation_move_the_case_once_each() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut service = aegis.cases(Some(&aegis.service_token("exceptions"))).await;
    let case = create_case(&mut ana, "Accepted risk", pb::Severity::High).await;

    let requested = decide(
        &mut service,
        "r1",
        &case.id,
        "exc-1",
        pb::ExceptionDecision::Requested,
        "ana",
    )
    .await
    .unwrap();
    let after = requested.case.unwrap();
    assert!(after.pending_exception);
    assert_eq!(
        after.status,
        pb::CaseStatus::Open as i32,
        "a request leaves the status alone"
    );
    assert_eq!(after.exception_count, 1);
    let pending = pb::CaseFilter {
        pending_exception: Some(true),
        ..Default::default()
    };
    assert_eq!(
        list_all(&mut ana, pending, pb::CaseOrder::Unspecified, 0)
            .await
            .len(),
        1
    );

    let other = decide(
        &mut service,
        "r2",
        &case.id,
        "exc-2",
        pb::ExceptionDecision::Requested,
        "bob",
    )
    .await
    .unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition);

    let approved = decide(
        &mut service,
        "a1",
        &case.id,
        "exc-1",
        pb::ExceptionDecision::Approved,
        "pat",
    )
    .await
    .unwrap();
    let after = approved.case.unwrap();
    assert_eq!(after.status, pb::CaseStatus::Exception as i32);
    assert!(!after.pending_exception);
    assert_eq!(after.active_exception_id, "exc-1");
    assert_eq!(after.sla_status, pb::SlaStatus::Exempt as i32);
    assert_eq!(approved.event.unwrap().actor.unwrap().id, "pat");

    // The outbox retries: the same effect twice is applied once.
    let retried = decide(
        &mut service,
        "a1",
        &case.id,
        "exc-1",
        pb::ExceptionDecision::Approved,
        "pat",
    )
    .await
    .unwrap();
    assert_eq!(retried.case.unwrap().etag, after.etag);

    let refused = transition(&mut ana, &case.id, pb::CaseStatus::InProgress)
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "INVALID_STATE_TRANSITION");

    let revoked = decide(
        &mut service,
        "v1",
        &case.id,
        "exc-1",
        pb::ExceptionDecision::Revoked,
        "pat",
    )
    .await
    .unwrap();
    assert_eq!(revoked.case.unwrap().status, pb::CaseStatus::Open as i32);

    assert_eq!(
        event_types(&mut ana, &case.id).await,
        [
            "case_created",
            "exception_requested",
            "exception_approved",
            "exception_revoked"
        ]
    );
    assert!(verify(&mut ana, &case.id).await.valid);
}

#[tokio::test]
async fn expiry_reopens_the_case_assigned_to_the_requester() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut service = aegis.cases(Some(&aegis.service_token("exceptions"))).await;
    let case = create_case(&mut ana, "Expiring", pb::Severity::Low).await;
    ana.assign_case(pb::AssignCaseRequest {
        case_id: case.id.clone(),
        assignee_id: "carol".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    decide(
        &mut service,
        "r",
        &case.id,
        "exc",
        pb::ExceptionDecision::Requested,
        "ana",
    )
    .await
    .unwrap();
    decide(
        &mut service,
        "a",
        &case.id,
        "exc",
        pb::ExceptionDecision::Approved,
        "pat",
    )
    .await
    .unwrap();

    let expired = decide(
        &mut service,
        "e",
        &case.id,
        "exc",
        pb::ExceptionDecision::Expired,
        "exceptions",
    )
    .await
    .unwrap();

    let after = expired.case.unwrap();
    assert_eq!(after.status, pb::CaseStatus::Open as i32);
    assert_eq!(after.assignee_id, "ana");
    let payload: serde_json::Value =
        serde_json::from_str(&expired.event.unwrap().payload_json).unwrap();
    assert_eq!(payload["assignee_before"], "carol");
    assert_eq!(payload["assignee_after"], "ana");
}

#[tokio::test]
async fn closing_a_case_in_exception_ends_its_exception() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut service = aegis.cases(Some(&aegis.service_token("exceptions"))).await;
    let case = create_case(&mut ana, "Resolved while excepted", pb::Severity::Low).await;
    decide(
        &mut service,
        "r",
        &case.id,
        "exc",
        pb::ExceptionDecision::Requested,
        "ana",
    )
    .await
    .unwrap();
    decide(
        &mut service,
        "a",
        &case.id,
        "exc",
        pb::ExceptionDecision::Approved,
        "pat",
    )
    .await
    .unwrap();

    let closed = transition(&mut ana, &case.id, pb::CaseStatus::Closed)
        .await
        .unwrap();

    assert_eq!(closed.active_exception_id, "");
    let last = events(&mut ana, &case.id).await.pop().unwrap();
    let payload: serde_json::Value = serde_json::from_str(&last.payload_json).unwrap();
    assert_eq!(payload["ended_exception_id"], "exc");
}

#[tokio::test]
async fn a_jira_issue_is_linked_once_and_status_changes_are_recorded_once() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut service = aegis
        .cases(Some(&aegis.service_token("integrations")))
        .await;
    let case = create_case(&mut ana, "Ticketed", pb::Severity::High).await;
    let link = |issue_id: &str, key: &str| pb::LinkJiraIssueRequest {
        request_id: format!("link-{issue_id}"),
        case_id: case.id.clone(),
        issue: Some(pb::JiraIssueLink {
            issue_id: issue_id.into(),
            issue_key: key.into(),
            browse_url: format!("https://example.atlassian.net/browse/{key}"),
            status_name: "To Do".into(),
            status_category: "new".into(),
            status_fetch_time: None,
        }),
        actor: person("ana"),
    };

    let linked = service
        .link_jira_issue(link("10042", "SEC-42"))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(linked.jira_issue.as_ref().unwrap().issue_key, "SEC-42");
    let second = service
        .link_jira_issue(link("10043", "SEC-43"))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::FailedPrecondition);
    let linked_filter = pb::CaseFilter {
        jira_linked: Some(true),
        ..Default::default()
    };
    assert_eq!(
        list_all(&mut ana, linked_filter, pb::CaseOrder::Unspecified, 0)
            .await
            .len(),
        1
    );

    let status = |request_id: &str, name: &str, category: &str| pb::UpdateJiraIssueStatusRequest {
        request_id: request_id.into(),
        case_id: case.id.clone(),
        issue_id: "10042".into(),
        status_name: name.into(),
        status_category: category.into(),
        fetch_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        ..Default::default()
    };
    let same = service
        .update_jira_issue_status(status("s1", "To Do", "new"))
        .await
        .unwrap()
        .into_inner();
    assert!(!same.changed);
    let moved = service
        .update_jira_issue_status(status("s2", "Won't Do", "done"))
        .await
        .unwrap()
        .into_inner();
    assert!(moved.changed);
    let case_now = moved.case.unwrap();
    assert_eq!(
        case_now.status,
        pb::CaseStatus::Open as i32,
        "a Jira status never moves the case"
    );
    assert_eq!(case_now.jira_issue.unwrap().status_category, "done");

    assert_eq!(
        event_types(&mut ana, &case.id).await,
        ["case_created", "jira_issue_created", "jira_status_changed"]
    );
}

#[tokio::test]
async fn record_case_event_accepts_only_events_no_other_rpc_owns() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut service = aegis.cases(Some(&aegis.service_token("export"))).await;
    let case = create_case(&mut ana, "Exported", pb::Severity::High).await;
    let record = |event_type: &str| pb::RecordCaseEventRequest {
        request_id: format!("evt-{event_type}"),
        case_id: case.id.clone(),
        event_type: event_type.into(),
        actor: person("ana"),
        payload_json: r#"{"format":"json_bundle","sha256":"ab"}"#.into(),
    };

    let forged = service
        .record_case_event(record("status_changed"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&forged), ["event_type"]);
    service
        .record_case_event(record("export_generated"))
        .await
        .unwrap();
    service
        .record_case_event(record("export_generated"))
        .await
        .unwrap();

    assert_eq!(
        event_types(&mut ana, &case.id).await,
        ["case_created", "export_generated"]
    );
    let missing_id = service
        .record_case_event(pb::RecordCaseEventRequest {
            request_id: String::new(),
            ..record("export_generated")
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&missing_id), ["request_id"]);
}
