//! A case's life: create, edit with etags, transitions, assignment, findings, comments,
//! idempotent retries.

use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::TestAegis;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_created_case_is_open_numbered_and_readable_by_number() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;

    let first = create_case(&mut analyst, "AWS key on runbook page", pb::Severity::High).await;
    let second = create_case(
        &mut analyst,
        "Passport scan in space HR",
        pb::Severity::Critical,
    )
    .await;

    assert_eq!(first.status, pb::CaseStatus::Open as i32);
    assert_eq!(first.number, "CASE-1");
    assert_eq!(second.number, "CASE-2");
    assert_eq!(first.created_by.as_ref().unwrap().id, "ana");
    assert_eq!(first.sla_status, pb::SlaStatus::OnTrack as i32);
    let due = first.sla_due_time.unwrap().seconds - first.create_time.unwrap().seconds;
    assert_eq!(due, 30 * 86_400, "High cases are due in 30 days");

    let by_number = get_case(&mut analyst, "CASE-2").await;
    assert_eq!(by_number.id, second.id);
    let by_id = get_case(&mut analyst, &first.id).await;
    assert_eq!(by_id, first);
    let upper_case_id = get_case(&mut analyst, &first.id.to_uppercase()).await;
    assert_eq!(upper_case_id.id, first.id);
}

#[tokio::test]
async fn update_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Token in page", pb::Severity::Low).await;

    let updated = analyst
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            etag: case.etag.clone(),
            title: Some("Token in runbook page".into()),
            severity: Some(pb::Severity::Critical as i32),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(updated.title, "Token in runbook page");
    assert_ne!(updated.etag, case.etag);
    let due = updated.sla_due_time.unwrap().seconds - updated.create_time.unwrap().seconds;
    assert_eq!(due, 7 * 86_400, "the SLA follows the new severity");

    let stale = analyst
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            etag: case.etag.clone(),
            title: Some("Lost update".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    assert_eq!(
        get_case(&mut analyst, &case.id).await.title,
        "Token in runbook page"
    );

    let types = event_types(&mut analyst, &case.id).await;
    assert_eq!(types, ["case_created", "case_updated"]);
    let change = &events(&mut analyst, &case.id).await[1];
    let payload: serde_json::Value = serde_json::from_str(&change.payload_json).unwrap();
    assert_eq!(payload["changes"]["title"]["before"], "Token in page");
    assert_eq!(
        payload["changes"]["title"]["after"],
        "Token in runbook page"
    );
    assert_eq!(payload["changes"]["severity"]["after"], "critical");
    assert!(payload["changes"].get("description").is_none());
}

#[tokio::test]
async fn an_update_that_changes_nothing_writes_no_event() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Same", pb::Severity::Low).await;

    let same = analyst
        .update_case(pb::UpdateCaseRequest {
            case_id: case.id.clone(),
            title: Some("Same".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();

    assert_eq!(same.etag, case.etag);
    assert_eq!(event_types(&mut analyst, &case.id).await, ["case_created"]);
}

#[tokio::test]
async fn transitions_follow_the_table_and_refusals_name_the_allowed_targets() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Exposed page", pb::Severity::Medium).await;

    let refused = transition(&mut analyst, &case.id, pb::CaseStatus::Exception)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INVALID_STATE_TRANSITION");
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let allowed = &details.error_info().unwrap().metadata["allowed_statuses"];
    assert_eq!(
        allowed,
        "CASE_STATUS_IN_PROGRESS,CASE_STATUS_REMEDIATED,CASE_STATUS_CLOSED"
    );

    let in_progress = transition(&mut analyst, &case.id, pb::CaseStatus::InProgress)
        .await
        .unwrap();
    assert_eq!(in_progress.status, pb::CaseStatus::InProgress as i32);
    let remediated = transition(&mut analyst, &case.id, pb::CaseStatus::Remediated)
        .await
        .unwrap();
    assert!(remediated.resolve_time.is_some());
    assert_eq!(remediated.sla_status, pb::SlaStatus::Met as i32);

    let from_remediated = transition(&mut analyst, &case.id, pb::CaseStatus::InProgress)
        .await
        .unwrap_err();
    assert_eq!(reason(&from_remediated), "INVALID_STATE_TRANSITION");

    let reopened = transition(&mut analyst, &case.id, pb::CaseStatus::Open)
        .await
        .unwrap();
    assert!(reopened.resolve_time.is_none());
    let closed = transition(&mut analyst, &case.id, pb::CaseStatus::Closed)
        .await
        .unwrap();
    assert_eq!(closed.status, pb::CaseStatus::Closed as i32);

    let types = event_types(&mut analyst, &case.id).await;
    assert_eq!(
        types,
        [
            "case_created",
            "status_changed",
            "status_changed",
            "status_changed",
            "status_changed"
        ]
    );
}

#[tokio::test]
async fn assignment_to_me_nobody_and_back_writes_one_event_per_change() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Secret", pb::Severity::Low).await;

    let assign = |assignee: &str| pb::AssignCaseRequest {
        case_id: case.id.clone(),
        assignee_id: assignee.to_owned(),
        ..Default::default()
    };
    let mine = analyst
        .assign_case(assign("me"))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(mine.assignee_id, "ana");
    let again = analyst
        .assign_case(assign("ana"))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(
        again.etag, mine.etag,
        "assigning the same user changes nothing"
    );
    let bob = analyst
        .assign_case(assign("bob"))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(bob.assignee_id, "bob");
    let nobody = analyst
        .assign_case(assign(""))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(nobody.assignee_id, "");

    let types = event_types(&mut analyst, &case.id).await;
    assert_eq!(
        types,
        [
            "case_created",
            "assignee_changed",
            "assignee_changed",
            "assignee_changed"
        ]
    );
}

#[tokio::test]
async fn findings_link_unlink_and_dedupe_by_external_id() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Keys", pb::Severity::High).await;

    let linked = create_finding(&mut analyst, "AWS key", &case.id).await;
    let loose = create_finding(&mut analyst, "Slack token", "").await;
    assert_eq!(get_case(&mut analyst, &case.id).await.finding_count, 1);

    let after_link = analyst
        .link_finding(pb::LinkFindingRequest {
            case_id: case.number.clone(),
            finding_id: loose.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(after_link.finding_count, 2);

    let twice = analyst
        .link_finding(pb::LinkFindingRequest {
            case_id: case.id.clone(),
            finding_id: loose.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);

    let listed = analyst
        .list_case_findings(pb::ListCaseFindingsRequest {
            case_id: case.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .findings;
    assert_eq!(
        listed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        [linked.id.as_str(), loose.id.as_str()]
    );

    let unlinked = analyst
        .unlink_finding(pb::UnlinkFindingRequest {
            case_id: case.id.clone(),
            finding_id: linked.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(unlinked.finding_count, 1);
    let not_linked = analyst
        .unlink_finding(pb::UnlinkFindingRequest {
            case_id: case.id.clone(),
            finding_id: linked.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_linked.code(), Code::NotFound);

    // The scanner reporting the same finding again gets the stored one back.
    let report = pb::CreateFindingRequest {
        finding: Some(pb::Finding {
            external_id: "scan-42".into(),
            title: "Private key".into(),
            rule: "private-key".into(),
            severity: pb::Severity::Critical as i32,
            content_id: "1234".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = analyst
        .create_finding(report.clone())
        .await
        .unwrap()
        .into_inner()
        .finding
        .unwrap();
    let second = analyst
        .create_finding(report)
        .await
        .unwrap()
        .into_inner()
        .finding
        .unwrap();
    assert_eq!(first.id, second.id);

    let types = event_types(&mut analyst, &case.id).await;
    assert_eq!(
        types,
        [
            "case_created",
            "finding_linked",
            "finding_linked",
            "finding_unlinked"
        ]
    );
}

#[tokio::test]
async fn comments_are_listed_oldest_first_and_recorded_in_the_trail() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "PII", pb::Severity::Medium).await;

    for body in ["first look", "owner contacted", "page restricted"] {
        analyst
            .add_comment(pb::AddCommentRequest {
                case_id: case.id.clone(),
                body: body.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let page = analyst
        .list_comments(pb::ListCommentsRequest {
            case_id: case.id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.comments.len(), 2);
    assert_eq!(page.comments[0].body, "first look");
    let rest = analyst
        .list_comments(pb::ListCommentsRequest {
            case_id: case.id.clone(),
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.comments.len(), 1);
    assert_eq!(rest.comments[0].body, "page restricted");
    assert!(rest.next_page_token.is_empty());
    assert_eq!(get_case(&mut analyst, &case.id).await.comment_count, 3);

    let trail = events(&mut analyst, &case.id).await;
    let payload: serde_json::Value = serde_json::from_str(&trail[1].payload_json).unwrap();
    assert_eq!(payload["body"], "first look");
}

#[tokio::test]
async fn a_retry_with_the_same_request_id_returns_the_first_result_and_changes_nothing() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let request = pb::CreateCaseRequest {
        request_id: "create-7f3a".into(),
        title: "Retried".into(),
        severity: pb::Severity::Low as i32,
        ..Default::default()
    };

    let first = analyst
        .create_case(request.clone())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let second = analyst
        .create_case(request.clone())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(first, second);

    let mut other = request.clone();
    other.title = "Different".into();
    let reused = analyst.create_case(other).await.unwrap_err();
    assert_eq!(violated_fields(&reused), ["request_id"]);

    let all = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::Unspecified,
        0,
    )
    .await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn concurrent_retries_of_one_request_create_one_case() {
    let aegis = TestAegis::start().await;
    let request = pb::CreateCaseRequest {
        request_id: "double-click".into(),
        title: "Raced".into(),
        severity: pb::Severity::Low as i32,
        ..Default::default()
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(aegis.cases_as("ana", ANALYST).await);
    }
    let results = futures::future::join_all(clients.iter_mut().map(|client| {
        let request = request.clone();
        async move {
            client
                .create_case(request)
                .await
                .map(|r| r.into_inner().case.unwrap().id)
        }
    }))
    .await;

    let ids: std::collections::HashSet<String> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(ids.len(), 1);
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let all = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::Unspecified,
        0,
    )
    .await;
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_request_id_belongs_to_its_caller() {
    let aegis = TestAegis::start().await;
    let request = pb::CreateCaseRequest {
        request_id: "same-id".into(),
        title: "Mine".into(),
        severity: pb::Severity::Low as i32,
        ..Default::default()
    };
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let mut bob = aegis.cases_as("bob", ANALYST).await;

    let a = ana
        .create_case(request.clone())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let b = bob
        .create_case(request)
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();

    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn request_ids_are_forgotten_after_their_retention() {
    use std::sync::Arc;

    use aegis_cases::storage::CaseStore;
    use aegis_platform::clock::SystemClock;

    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let request = pb::CreateCaseRequest {
        request_id: "old-click".into(),
        title: "Once".into(),
        severity: pb::Severity::Low as i32,
        ..Default::default()
    };
    let first = analyst
        .create_case(request.clone())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let store = CaseStore::new(
        aegis.database().await,
        Default::default(),
        Arc::new(SystemClock),
    );

    let kept = store
        .purge_idempotency_keys(chrono::Utc::now() - chrono::Duration::days(30))
        .await;
    assert_eq!(kept.unwrap(), 0);
    let purged = store
        .purge_idempotency_keys(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await;
    assert_eq!(purged.unwrap(), 1);

    let again = analyst
        .create_case(request)
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_ne!(again.id, first.id);
}
