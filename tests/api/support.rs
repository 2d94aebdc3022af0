//! Helpers shared by the tests.

use aegis_platform::auth::Role;
use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::CasesClient;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub const ANALYST: &[Role] = &[Role::Analyst];
pub const ADMIN: &[Role] = &[Role::Admin];

/// Creates a case and returns it.
pub async fn create_case(
    client: &mut CasesClient,
    title: &str,
    severity: pb::Severity,
) -> pb::Case {
    client
        .create_case(pb::CreateCaseRequest {
            title: title.to_owned(),
            description: format!("{title} found by the scanner"),
            severity: severity as i32,
            ..Default::default()
        })
        .await
        .expect("create case")
        .into_inner()
        .case
        .expect("case")
}

/// Creates a finding, optionally linked to a case.
pub async fn create_finding(client: &mut CasesClient, title: &str, case_id: &str) -> pb::Finding {
    client
        .create_finding(pb::CreateFindingRequest {
            finding: Some(pb::Finding {
                title: title.to_owned(),
                rule: "aws-access-key".to_owned(),
                severity: pb::Severity::High as i32,
                content_id: "98765".to_owned(),
                space_key: "ENG".to_owned(),
                page_title: "Runbook".to_owned(),
                page_url: "https://example.atlassian.net/wiki/spaces/ENG/pages/98765".to_owned(),
                excerpt: "AKIA************".to_owned(),
                ..Default::default()
            }),
            case_id: case_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("create finding")
        .into_inner()
        .finding
        .expect("finding")
}

pub async fn get_case(client: &mut CasesClient, case_id: &str) -> pb::Case {
    client
        .get_case(pb::GetCaseRequest {
            case_id: case_id.to_owned(),
        })
        .await
        .expect("get case")
        .into_inner()
        .case
        .expect("case")
}

pub async fn transition(
    client: &mut CasesClient,
    case_id: &str,
    status: pb::CaseStatus,
) -> Result<pb::Case, Status> {
    client
        .transition_case(pb::TransitionCaseRequest {
            case_id: case_id.to_owned(),
            status: status as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().case.expect("case"))
}

/// Every evidence event of a case, across pages.
pub async fn events(client: &mut CasesClient, case_id: &str) -> Vec<pb::EvidenceEvent> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_evidence_events(pb::ListEvidenceEventsRequest {
                case_id: case_id.to_owned(),
                page_size: 100,
                page_token,
            })
            .await
            .expect("list events")
            .into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

pub async fn event_types(client: &mut CasesClient, case_id: &str) -> Vec<String> {
    events(client, case_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

pub async fn verify(client: &mut CasesClient, case_id: &str) -> pb::VerifyEvidenceChainResponse {
    client
        .verify_evidence_chain(pb::VerifyEvidenceChainRequest {
            case_id: case_id.to_owned(),
        })
        .await
        .expect("verify")
        .into_inner()
}

/// Every case the filter matches, across pages.
pub async fn list_all(
    client: &mut CasesClient,
    filter: pb::CaseFilter,
    order: pb::CaseOrder,
    page_size: i32,
) -> Vec<pb::Case> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_cases(pb::ListCasesRequest {
                filter: Some(filter.clone()),
                order_by: order as i32,
                page_size,
                page_token,
            })
            .await
            .expect("list cases")
            .into_inner();
        all.extend(page.cases);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The fields named by the `BadRequest` details of an `INVALID_ARGUMENT` status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}
