//! A database that fails in the middle of a call loses nothing and duplicates nothing.

use std::time::Duration;

use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::TestAegis;
use sqlx::Connection as _;
use tonic::Code;

use crate::support::*;

/// Kills every connection the server holds to its PostgreSQL database, over and over, until
/// told to stop; returns how many it killed.
async fn kill_connections_until(
    admin_url: String,
    database: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> u64 {
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    let mut killed = 0;
    for _ in 0..2_000 {
        if stop.try_recv().is_ok() {
            break;
        }
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        killed += rows.len() as u64;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    killed
}

#[tokio::test]
async fn a_bulk_close_cut_by_the_database_and_retried_closes_each_case_once() {
    let Ok(admin_url) = std::env::var(aegis_test_support::TEST_DATABASE_URL) else {
        // Only PostgreSQL connections can be killed from outside; CI runs this on PostgreSQL.
        eprintln!(
            "skipped: set {} to run it",
            aegis_test_support::TEST_DATABASE_URL
        );
        return;
    };
    let aegis = TestAegis::start().await;
    let database = aegis.database_url().rsplit('/').next().unwrap().to_owned();
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let mut ids = Vec::new();
    for n in 0..600 {
        ids.push(
            create_case(&mut analyst, &format!("case {n}"), pb::Severity::Low)
                .await
                .id,
        );
    }
    let request = pb::BulkCloseCasesRequest {
        request_id: "close-under-fire".into(),
        selection: Some(pb::BulkSelection {
            case_ids: ids.clone(),
            filter: None,
        }),
        ..Default::default()
    };

    let (stop, stopped) = tokio::sync::oneshot::channel();
    let killer = tokio::spawn(kill_connections_until(admin_url, database, stopped));
    let first = analyst.bulk_close_cases(request.clone()).await;
    let _ = stop.send(());
    let killed = killer.await.unwrap();

    let first = first.expect_err("the database was cut during the call");
    assert_eq!(
        first.code(),
        Code::Unavailable,
        "a lost connection is UNAVAILABLE: {first:?}"
    );
    assert!(killed > 0);

    let mut retried = None;
    for _ in 0..50 {
        match analyst.bulk_close_cases(request.clone()).await {
            Ok(response) => {
                retried = Some(response.into_inner());
                break;
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let retried = retried.expect("the retry succeeds once the database is back");
    assert_eq!(retried.outcomes.len(), ids.len());

    for id in &ids {
        let types = event_types(&mut analyst, id).await;
        assert_eq!(types, ["case_created", "status_changed"], "case {id}");
        assert_eq!(
            get_case(&mut analyst, id).await.status,
            pb::CaseStatus::Closed as i32
        );
    }
    assert!(verify(&mut analyst, &ids[0]).await.valid);
}
