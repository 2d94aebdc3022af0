//! Every CaseService RPC with every role: allowed, `PERMISSION_DENIED` or `UNAUTHENTICATED`
//! as the product's role table says, and a refused call changes nothing.

use aegis_platform::auth::Role;
use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::{CasesClient, TestAegis};
use tonic::{Code, Status};

use crate::support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Read,
    Edit,
    Service,
}

const RPCS: &[(&str, Needs)] = &[
    ("CreateCase", Needs::Edit),
    ("GetCase", Needs::Read),
    ("UpdateCase", Needs::Edit),
    ("ListCases", Needs::Read),
    ("TransitionCase", Needs::Edit),
    ("AssignCase", Needs::Edit),
    ("BulkCloseCases", Needs::Edit),
    ("BulkResolveCases", Needs::Edit),
    ("CreateFinding", Needs::Edit),
    ("GetFinding", Needs::Read),
    ("ListCaseFindings", Needs::Read),
    ("LinkFinding", Needs::Edit),
    ("UnlinkFinding", Needs::Edit),
    ("AddComment", Needs::Edit),
    ("ListComments", Needs::Read),
    ("ListEvidenceEvents", Needs::Read),
    ("VerifyEvidenceChain", Needs::Read),
    ("ApplyExceptionDecision", Needs::Service),
    ("LinkJiraIssue", Needs::Service),
    ("UpdateJiraIssueStatus", Needs::Service),
    ("RecordCaseEvent", Needs::Service),
];

/// What each RPC needs to succeed: a case with one linked finding and one loose finding.
struct Fixture {
    case_id: String,
    linked_finding: String,
    loose_finding: String,
}

async fn fixture(admin: &mut CasesClient, service: &mut CasesClient, rpc: &str) -> Fixture {
    let case = create_case(admin, "Fixture", pb::Severity::High).await;
    let linked = create_finding(admin, "Linked", &case.id).await;
    let loose = create_finding(admin, "Loose", "").await;
    if rpc == "UpdateJiraIssueStatus" {
        link_jira(service, &case.id, &format!("fixture-{}", case.id))
            .await
            .unwrap();
    }
    Fixture {
        case_id: case.id,
        linked_finding: linked.id,
        loose_finding: loose.id,
    }
}

fn actor() -> Option<pb::Actor> {
    Some(pb::Actor {
        kind: pb::actor::Kind::User as i32,
        id: "ana".into(),
        display_name: "Ana".into(),
    })
}

async fn link_jira(
    client: &mut CasesClient,
    case_id: &str,
    request_id: &str,
) -> Result<(), Status> {
    client
        .link_jira_issue(pb::LinkJiraIssueRequest {
            request_id: request_id.into(),
            case_id: case_id.into(),
            issue: Some(pb::JiraIssueLink {
                issue_id: "10001".into(),
                issue_key: "SEC-1".into(),
                browse_url: "https://example.atlassian.net/browse/SEC-1".into(),
                status_name: "To Do".into(),
                status_category: "new".into(),
                status_fetch_time: None,
            }),
            actor: actor(),
        })
        .await
        .map(drop)
}

async fn invoke(client: &mut CasesClient, rpc: &str, f: &Fixture) -> Result<(), Status> {
    let case_id = f.case_id.clone();
    match rpc {
        "CreateCase" => create(client).await,
        "GetCase" => client
            .get_case(pb::GetCaseRequest { case_id })
            .await
            .map(drop),
        "UpdateCase" => client
            .update_case(pb::UpdateCaseRequest {
                case_id,
                title: Some("Renamed".into()),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListCases" => client
            .list_cases(pb::ListCasesRequest::default())
            .await
            .map(drop),
        "TransitionCase" => client
            .transition_case(pb::TransitionCaseRequest {
                case_id,
                status: pb::CaseStatus::InProgress as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        "AssignCase" => client
            .assign_case(pb::AssignCaseRequest {
                case_id,
                assignee_id: "bob".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "BulkCloseCases" => client
            .bulk_close_cases(pb::BulkCloseCasesRequest {
                selection: Some(pb::BulkSelection {
                    case_ids: vec![case_id],
                    filter: None,
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        "BulkResolveCases" => client
            .bulk_resolve_cases(pb::BulkResolveCasesRequest {
                selection: Some(pb::BulkSelection {
                    case_ids: vec![case_id],
                    filter: None,
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        "CreateFinding" => client
            .create_finding(pb::CreateFindingRequest {
                finding: Some(pb::Finding {
                    title: "New".into(),
                    rule: "rule".into(),
                    severity: pb::Severity::Low as i32,
                    content_id: "1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetFinding" => client
            .get_finding(pb::GetFindingRequest {
                finding_id: f.linked_finding.clone(),
            })
            .await
            .map(drop),
        "ListCaseFindings" => client
            .list_case_findings(pb::ListCaseFindingsRequest {
                case_id,
                ..Default::default()
            })
            .await
            .map(drop),
        "LinkFinding" => client
            .link_finding(pb::LinkFindingRequest {
                case_id,
                finding_id: f.loose_finding.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "UnlinkFinding" => client
            .unlink_finding(pb::UnlinkFindingRequest {
                case_id,
                finding_id: f.linked_finding.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        "AddComment" => client
            .add_comment(pb::AddCommentRequest {
                case_id,
                body: "hello".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListComments" => client
            .list_comments(pb::ListCommentsRequest {
                case_id,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListEvidenceEvents" => client
            .list_evidence_events(pb::ListEvidenceEventsRequest {
                case_id,
                ..Default::default()
            })
            .await
            .map(drop),
        "VerifyEvidenceChain" => client
            .verify_evidence_chain(pb::VerifyEvidenceChainRequest { case_id })
            .await
            .map(drop),
        "ApplyExceptionDecision" => client
            .apply_exception_decision(pb::ApplyExceptionDecisionRequest {
                request_id: format!("decision-{case_id}"),
                case_id,
                exception_id: "exc-1".into(),
                decision: pb::ExceptionDecision::Requested as i32,
                actor: actor(),
                ..Default::default()
            })
            .await
            .map(drop),
        "LinkJiraIssue" => link_jira(client, &case_id, &format!("link-{case_id}")).await,
        "UpdateJiraIssueStatus" => client
            .update_jira_issue_status(pb::UpdateJiraIssueStatusRequest {
                request_id: format!("status-{case_id}"),
                case_id,
                issue_id: "10001".into(),
                status_name: "In Progress".into(),
                status_category: "indeterminate".into(),
                fetch_time: Some(prost_types::Timestamp::default()),
                ..Default::default()
            })
            .await
            .map(drop),
        "RecordCaseEvent" => client
            .record_case_event(pb::RecordCaseEventRequest {
                request_id: format!("export-{case_id}"),
                case_id,
                event_type: "export_generated".into(),
                actor: actor(),
                payload_json: r#"{"format":"json"}"#.into(),
            })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

async fn create(client: &mut CasesClient) -> Result<(), Status> {
    client
        .create_case(pb::CreateCaseRequest {
            title: "By role".into(),
            severity: pb::Severity::Low as i32,
            ..Default::default()
        })
        .await
        .map(drop)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    Person(Role),
    Service,
}

fn expected(caller: Caller, needs: Needs) -> Result<(), Code> {
    match (caller, needs) {
        (Caller::Nobody, _) => Err(Code::Unauthenticated),
        (Caller::Service, Needs::Service | Needs::Read) => Ok(()),
        (Caller::Service, Needs::Edit) => Err(Code::PermissionDenied),
        (Caller::Person(_), Needs::Service) => Err(Code::PermissionDenied),
        (Caller::Person(_), Needs::Read) => Ok(()),
        (Caller::Person(Role::Viewer), Needs::Edit) => Err(Code::PermissionDenied),
        (Caller::Person(_), Needs::Edit) => Ok(()),
    }
}

#[tokio::test]
async fn every_rpc_checks_every_role_and_a_refusal_changes_nothing() {
    let aegis = TestAegis::start().await;
    let mut admin = aegis.cases_as("admin", ADMIN).await;
    let mut service = aegis
        .cases(Some(&aegis.service_token("integrations")))
        .await;
    let callers = [
        Caller::Nobody,
        Caller::Person(Role::Viewer),
        Caller::Person(Role::Analyst),
        Caller::Person(Role::Approver),
        Caller::Person(Role::Admin),
        Caller::Service,
    ];

    for (rpc, needs) in RPCS {
        for caller in callers {
            let f = fixture(&mut admin, &mut service, rpc).await;
            let mut client = match caller {
                Caller::Nobody => aegis.cases(None).await,
                Caller::Person(role) => aegis.cases_as("someone", &[role]).await,
                Caller::Service => aegis.cases(Some(&aegis.service_token("exceptions"))).await,
            };
            let before = events(&mut admin, &f.case_id).await.len();
            let cases_before = list_all(
                &mut admin,
                pb::CaseFilter::default(),
                pb::CaseOrder::Unspecified,
                0,
            )
            .await
            .len();

            let result = invoke(&mut client, rpc, &f).await;

            match (expected(caller, *needs), result) {
                (Ok(()), Ok(())) => {}
                (Err(code), Err(status)) if status.code() == code => {
                    assert_eq!(
                        events(&mut admin, &f.case_id).await.len(),
                        before,
                        "{rpc} {caller:?}"
                    );
                    let cases_after = list_all(
                        &mut admin,
                        pb::CaseFilter::default(),
                        pb::CaseOrder::Unspecified,
                        0,
                    )
                    .await
                    .len();
                    assert_eq!(cases_after, cases_before, "{rpc} {caller:?} created a case");
                }
                (want, got) => panic!("{rpc} as {caller:?}: expected {want:?}, got {got:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_token_with_no_known_role_is_denied_and_a_bad_token_is_unauthenticated() {
    let aegis = TestAegis::start().await;
    let mut nobody = aegis.cases_as("ghost", &[]).await;
    let denied = nobody
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "MISSING_ROLE");

    let mut forged = aegis
        .cases(Some("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"))
        .await;
    let unauthenticated = forged
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);

    let mut service = aegis.cases(Some(&aegis.service_token("exceptions"))).await;
    let service_edit = create(&mut service).await.unwrap_err();
    assert_eq!(service_edit.code(), Code::PermissionDenied);
}
