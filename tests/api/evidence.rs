//! The evidence trail: one event per change, a hash chain that verifies, and tampering that
//! the verify RPC names.

use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::TestAegis;

use crate::support::*;

#[tokio::test]
async fn every_change_writes_one_linked_event_and_the_chain_verifies() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Chain", pb::Severity::High).await;
    create_finding(&mut analyst, "Key", &case.id).await;
    analyst
        .add_comment(pb::AddCommentRequest {
            case_id: case.id.clone(),
            body: "looking".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    transition(&mut analyst, &case.id, pb::CaseStatus::InProgress)
        .await
        .unwrap();

    let trail = events(&mut analyst, &case.id).await;
    let types: Vec<&str> = trail.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "case_created",
            "finding_linked",
            "comment_added",
            "status_changed"
        ]
    );
    assert_eq!(trail[0].previous_hash, "0".repeat(64));
    for pair in trail.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash);
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
    assert!(trail.iter().all(|e| e.actor.as_ref().unwrap().id == "ana"));

    let verified = verify(&mut analyst, &case.id).await;
    assert!(verified.valid, "{}", verified.problem);
    assert_eq!(verified.event_count, 4);
    assert_eq!(verified.head_hash, trail[3].hash);
}

#[tokio::test]
async fn an_event_altered_in_the_database_is_named_by_verify() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Tamper", pb::Severity::High).await;
    for body in ["one", "two", "three"] {
        analyst
            .add_comment(pb::AddCommentRequest {
                case_id: case.id.clone(),
                body: body.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let db = aegis.database().await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query(
        "UPDATE evidence_events SET payload = '{\"body\":\"nothing to see\"}' \
         WHERE case_id = $1 AND seq = 3",
    )
    .bind(&case.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    db.close().await;

    let verified = verify(&mut analyst, &case.id).await;
    assert!(!verified.valid);
    assert_eq!(verified.broken_at_sequence, 3);
    assert!(verified.problem.contains("event 3"), "{}", verified.problem);
}

#[tokio::test]
async fn a_removed_last_event_is_detected() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Truncate", pb::Severity::High).await;
    transition(&mut analyst, &case.id, pb::CaseStatus::InProgress)
        .await
        .unwrap();

    let db = aegis.database().await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("DELETE FROM evidence_events WHERE case_id = $1 AND seq = 2")
        .bind(&case.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.close().await;

    let verified = verify(&mut analyst, &case.id).await;
    assert!(!verified.valid);
    assert_eq!(verified.broken_at_sequence, 2);
}

#[tokio::test]
async fn concurrent_changes_to_one_case_keep_one_unbroken_chain() {
    let aegis = TestAegis::start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let case = create_case(&mut analyst, "Busy", pb::Severity::High).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(aegis.cases_as("ana", ANALYST).await);
    }

    let results = futures::future::join_all(clients.iter_mut().enumerate().map(|(n, client)| {
        let case_id = case.id.clone();
        async move {
            client
                .add_comment(pb::AddCommentRequest {
                    case_id,
                    body: format!("comment {n}"),
                    ..Default::default()
                })
                .await
        }
    }))
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let verified = verify(&mut analyst, &case.id).await;
    assert!(verified.valid, "{}", verified.problem);
    assert_eq!(verified.event_count, 11);
    assert_eq!(get_case(&mut analyst, &case.id).await.comment_count, 10);
}
