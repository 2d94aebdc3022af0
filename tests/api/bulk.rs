//! Close All and Resolve All: per-case outcomes, one event per case that changed.

use aegis_proto::aegis::cases::v1::{self as pb, bulk_outcome::Result as Outcome};
use aegis_test_support::TestAegis;

use crate::support::*;

fn selection(ids: &[&str]) -> Option<pb::BulkSelection> {
    Some(pb::BulkSelection {
        case_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        filter: None,
    })
}

#[tokio::test]
async fn bulk_close_reports_each_case_and_changes_only_what_it_reports_done() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let open = create_case(&mut analyst, "Open one", pb::Severity::Low).await;
    let in_progress = create_case(&mut analyst, "In progress", pb::Severity::Low).await;
    transition(&mut analyst, &in_progress.id, pb::CaseStatus::InProgress)
        .await
        .unwrap();
    let closed = create_case(&mut analyst, "Closed already", pb::Severity::Low).await;
    transition(&mut analyst, &closed.id, pb::CaseStatus::Closed)
        .await
        .unwrap();
    let untouched = create_case(&mut analyst, "Not selected", pb::Severity::Low).await;

    let outcomes = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: selection(&[&open.id, &closed.number, "CASE-999", &in_progress.id]),
            note: "false positives".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;

    let results: Vec<(String, i32)> = outcomes
        .iter()
        .map(|o| (o.case_id.clone(), o.result))
        .collect();
    assert_eq!(
        results,
        [
            (open.id.clone(), Outcome::Done as i32),
            (closed.number.clone(), Outcome::AlreadyInStatus as i32),
            ("CASE-999".to_owned(), Outcome::NotFound as i32),
            (in_progress.id.clone(), Outcome::Done as i32),
        ]
    );
    assert_eq!(
        get_case(&mut analyst, &open.id).await.status,
        pb::CaseStatus::Closed as i32
    );
    assert_eq!(
        event_types(&mut analyst, &open.id).await,
        ["case_created", "status_changed"]
    );
    assert_eq!(
        event_types(&mut analyst, &closed.id).await,
        ["case_created", "status_changed"],
        "an already closed case gets no second event"
    );
    assert_eq!(
        event_types(&mut analyst, &untouched.id).await,
        ["case_created"]
    );
    assert_eq!(
        get_case(&mut analyst, &untouched.id).await.status,
        pb::CaseStatus::Open as i32
    );
    let last = events(&mut analyst, &open.id).await.pop().unwrap();
    let payload: serde_json::Value = serde_json::from_str(&last.payload_json).unwrap();
    assert_eq!(payload["note"], "false positives");
    assert_eq!(payload["bulk"], true);
}

#[tokio::test]
async fn bulk_resolve_refuses_closed_cases_without_stopping_the_others() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let closed = create_case(&mut analyst, "Closed", pb::Severity::Low).await;
    transition(&mut analyst, &closed.id, pb::CaseStatus::Closed)
        .await
        .unwrap();
    let open = create_case(&mut analyst, "Open", pb::Severity::Low).await;

    let outcomes = analyst
        .bulk_resolve_cases(pb::BulkResolveCasesRequest {
            selection: selection(&[&closed.id, &open.id]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;

    assert_eq!(outcomes[0].result, Outcome::NotAllowed as i32);
    assert_eq!(outcomes[0].status, pb::CaseStatus::Closed as i32);
    assert!(outcomes[0].message.contains("cannot move"));
    assert_eq!(outcomes[1].result, Outcome::Done as i32);
    assert_eq!(
        get_case(&mut analyst, &open.id).await.status,
        pb::CaseStatus::Remediated as i32
    );
    assert_eq!(
        get_case(&mut analyst, &closed.id).await.status,
        pb::CaseStatus::Closed as i32
    );
}

#[tokio::test]
async fn a_retried_bulk_close_returns_the_first_outcomes() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Once", pb::Severity::Low).await;
    let request = pb::BulkCloseCasesRequest {
        request_id: "bulk-1".into(),
        selection: selection(&[&case.id]),
        ..Default::default()
    };

    let first = analyst
        .bulk_close_cases(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = analyst
        .bulk_close_cases(request)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(first.outcomes[0].result, Outcome::Done as i32);
    assert_eq!(second, first);
    assert_eq!(
        event_types(&mut analyst, &case.id).await,
        ["case_created", "status_changed"]
    );
}

#[tokio::test]
async fn bulk_selection_limits_are_enforced() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Once", pb::Severity::Low).await;

    let empty = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["selection"]);

    let repeated = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: selection(&[&case.id, &case.id]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&repeated), ["selection.case_ids[1]"]);

    let too_many: Vec<String> = (0..10_001).map(|n| format!("CASE-{}", n + 1)).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let over = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: selection(&refs),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&over), ["selection.case_ids"]);
    assert_eq!(
        get_case(&mut analyst, &case.id).await.status,
        pb::CaseStatus::Open as i32
    );
}

#[tokio::test]
async fn bulk_close_by_filter_closes_what_the_list_shows() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let low = create_case(&mut analyst, "Low one", pb::Severity::Low).await;
    let other_low = create_case(&mut analyst, "Low two", pb::Severity::Low).await;
    let high = create_case(&mut analyst, "High one", pb::Severity::High).await;
    let filter = pb::CaseFilter {
        severities: vec![pb::Severity::Low as i32],
        ..Default::default()
    };

    let outcomes = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: Some(pb::BulkSelection {
                case_ids: Vec::new(),
                filter: Some(filter),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;

    let ids: Vec<&str> = outcomes.iter().map(|o| o.case_id.as_str()).collect();
    assert_eq!(ids, [low.id.as_str(), other_low.id.as_str()]);
    assert!(outcomes.iter().all(|o| o.result == Outcome::Done as i32));
    assert_eq!(
        get_case(&mut analyst, &high.id).await.status,
        pb::CaseStatus::Open as i32
    );

    let both = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: Some(pb::BulkSelection {
                case_ids: vec![high.id.clone()],
                filter: Some(pb::CaseFilter::default()),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&both), ["selection"]);
}

#[tokio::test]
async fn an_empty_filter_never_selects_every_case() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Keep me open", pb::Severity::Low).await;

    let everything = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: Some(pb::BulkSelection {
                case_ids: Vec::new(),
                filter: Some(pb::CaseFilter::default()),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(violated_fields(&everything), ["selection.filter"]);
    assert_eq!(
        get_case(&mut analyst, &case.id).await.status,
        pb::CaseStatus::Open as i32
    );
}

#[tokio::test]
async fn a_case_named_by_id_and_by_number_moves_once() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Twice named", pb::Severity::Low).await;

    let outcomes = analyst
        .bulk_close_cases(pb::BulkCloseCasesRequest {
            selection: selection(&[&case.id, &case.number]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;

    assert_eq!(outcomes[0].result, Outcome::Done as i32);
    assert_eq!(outcomes[1].result, Outcome::AlreadyInStatus as i32);
    assert_eq!(
        event_types(&mut analyst, &case.id).await,
        ["case_created", "status_changed"]
    );
    assert!(verify(&mut analyst, &case.id).await.valid);
}
