//! Bad input gets `INVALID_ARGUMENT` naming the field and the rule, and changes nothing.

use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::{CasesClient, TestAegis};
use tonic::Code;

use crate::support::*;

async fn case_count(client: &mut CasesClient) -> usize {
    list_all(
        client,
        pb::CaseFilter::default(),
        pb::CaseOrder::Unspecified,
        0,
    )
    .await
    .len()
}

fn create(title: &str, severity: i32) -> pb::CreateCaseRequest {
    pb::CreateCaseRequest {
        title: title.to_owned(),
        severity,
        ..Default::default()
    }
}

#[tokio::test]
async fn titles_must_be_1_to_255_characters() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let high = pb::Severity::High as i32;

    for title in ["", "   ", &"x".repeat(256), &"é".repeat(256)] {
        let error = analyst.create_case(create(title, high)).await.unwrap_err();
        assert_eq!(
            violated_fields(&error),
            ["title"],
            "title of {} chars",
            title.chars().count()
        );
        let details = tonic_types::StatusExt::get_error_details(&error);
        let rule = &details.bad_request().unwrap().field_violations[0].description;
        assert!(rule.contains("1 to 255 characters"), "{rule}");
    }
    assert_eq!(case_count(&mut analyst).await, 0);

    let longest = analyst
        .create_case(create(&"é".repeat(255), high))
        .await
        .unwrap();
    assert_eq!(
        longest.into_inner().case.unwrap().title.chars().count(),
        255
    );
}

#[tokio::test]
async fn descriptions_are_limited_to_20000_characters() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let mut request = create("Long", pb::Severity::Low as i32);
    request.description = "d".repeat(20_001);

    let error = analyst.create_case(request.clone()).await.unwrap_err();

    assert_eq!(violated_fields(&error), ["description"]);
    request.description = "d".repeat(20_000);
    analyst.create_case(request).await.unwrap();
}

#[tokio::test]
async fn unspecified_and_unknown_enum_values_are_refused() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;

    let unspecified = analyst
        .create_case(create("No severity", 0))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unspecified), ["severity"]);
    let unknown = analyst
        .create_case(create("Odd severity", 42))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown), ["severity"]);
    assert!(unknown.message().contains("42 is not a severity"));

    let case = create_case(&mut analyst, "Real", pb::Severity::Low).await;
    let no_status = analyst
        .transition_case(pb::TransitionCaseRequest {
            case_id: case.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_status), ["status"]);
    let bad_filter = analyst
        .list_cases(pb::ListCasesRequest {
            filter: Some(pb::CaseFilter {
                statuses: vec![1, 99],
                ..Default::default()
            }),
            order_by: 17,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad_filter),
        ["filter.statuses[1]", "order_by"]
    );
    assert_eq!(
        get_case(&mut analyst, &case.id).await.status,
        pb::CaseStatus::Open as i32
    );
}

#[tokio::test]
async fn several_violations_are_reported_together() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;

    let error = analyst.create_case(create("", 0)).await.unwrap_err();

    assert_eq!(violated_fields(&error), ["title", "severity"]);
}

#[tokio::test]
async fn a_missing_case_id_is_refused_and_an_unknown_one_is_not_found() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;

    let missing = analyst
        .get_case(pb::GetCaseRequest {
            case_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&missing), ["case_id"]);

    let unknown = analyst
        .get_case(pb::GetCaseRequest {
            case_id: "CASE-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let comment = analyst
        .add_comment(pb::AddCommentRequest {
            case_id: "no-such-case".into(),
            body: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(comment.code(), Code::NotFound);
}

#[tokio::test]
async fn page_tokens_from_another_query_or_altered_are_refused() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    for n in 0..3 {
        create_case(&mut analyst, &format!("case {n}"), pb::Severity::High).await;
    }
    let first = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let other_query = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: 1,
            page_token: token.clone(),
            filter: Some(pb::CaseFilter {
                severities: vec![pb::Severity::High as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&other_query), ["page_token"]);
    assert!(
        other_query.message().contains("another query"),
        "{}",
        other_query.message()
    );

    let other_order = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: 1,
            page_token: token.clone(),
            order_by: pb::CaseOrder::SeverityDesc as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&other_order), ["page_token"]);

    let mut altered = token.clone().into_bytes();
    altered[2] = if altered[2] == b'A' { b'B' } else { b'A' };
    let altered = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: 1,
            page_token: String::from_utf8(altered).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&altered), ["page_token"]);

    let garbage = analyst
        .list_cases(pb::ListCasesRequest {
            page_token: "not a token!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&garbage), ["page_token"]);

    let other_list = analyst
        .list_comments(pb::ListCommentsRequest {
            case_id: "CASE-1".into(),
            page_token: token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&other_list), ["page_token"]);
}

#[tokio::test]
async fn page_size_below_zero_is_refused_and_large_ones_are_capped() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    create_case(&mut analyst, "one", pb::Severity::High).await;

    let negative = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&negative), ["page_size"]);

    let huge = analyst
        .list_cases(pb::ListCasesRequest {
            page_size: i32::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(huge.into_inner().cases.len(), 1);
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_reaches_the_service() {
    let aegis = TestAegis::builder()
        .max_message_bytes(64 * 1024)
        .start()
        .await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let mut request = create("Huge", pb::Severity::Low as i32);
    request.description = "d".repeat(100 * 1024);

    let error = analyst.create_case(request).await.unwrap_err();

    assert!(
        matches!(error.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{error:?}"
    );
    assert_eq!(case_count(&mut analyst).await, 0);
}

#[tokio::test]
async fn control_characters_and_bad_urls_are_refused() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;

    let bell = analyst
        .create_case(create("ring\u{7}", pb::Severity::Low as i32))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bell), ["title"]);

    let finding = analyst
        .create_finding(pb::CreateFindingRequest {
            finding: Some(pb::Finding {
                title: "Key".into(),
                rule: "key".into(),
                severity: pb::Severity::Low as i32,
                content_id: "1".into(),
                page_url: "javascript:alert(1)".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&finding), ["finding.page_url"]);

    let no_finding = analyst
        .create_finding(pb::CreateFindingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_finding), ["finding"]);
}

#[tokio::test]
async fn a_malformed_etag_is_invalid_not_a_conflict() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Etag", pb::Severity::Low).await;

    let garbage = analyst
        .transition_case(pb::TransitionCaseRequest {
            case_id: case.id.clone(),
            etag: "garbage".into(),
            status: pb::CaseStatus::Closed as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();

    assert_eq!(violated_fields(&garbage), ["etag"]);
    assert_eq!(
        get_case(&mut analyst, &case.id).await.status,
        pb::CaseStatus::Open as i32
    );
}

#[tokio::test]
async fn detection_times_outside_reason_are_refused() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let at = |seconds: i64| pb::CreateFindingRequest {
        finding: Some(pb::Finding {
            title: "Key".into(),
            rule: "key".into(),
            severity: pb::Severity::Low as i32,
            content_id: "1".into(),
            detect_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let ancient = analyst
        .create_finding(at(-2_208_988_800))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&ancient), ["finding.detect_time"]);
    let future = analyst
        .create_finding(at(253_402_214_400))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&future), ["finding.detect_time"]);
    analyst.create_finding(at(1_767_225_600)).await.unwrap();
}
