//! ListCases: every filter, every order, keyset pages that neither skip nor repeat.

use aegis_platform::clock::ManualClock;
use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::TestAegis;
use chrono::{Duration, TimeZone, Utc};

use crate::support::*;

fn titles(cases: &[pb::Case]) -> Vec<&str> {
    cases.iter().map(|c| c.title.as_str()).collect()
}

#[tokio::test]
async fn pages_cover_every_case_once_in_each_order() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap());
    let aegis = TestAegis::builder().clock(clock.clone()).start().await;
    let mut analyst = aegis.cases_as("ana", ANALYST).await;
    let severities = [
        pb::Severity::Low,
        pb::Severity::Critical,
        pb::Severity::Medium,
        pb::Severity::High,
    ];
    for n in 0..11 {
        create_case(&mut analyst, &format!("case {n:02}"), severities[n % 4]).await;
        if n % 3 != 0 {
            // Some cases share a creation time, so the tie-breaker matters.
            clock.advance(Duration::minutes(1));
        }
    }

    let newest = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::CreateTimeDesc,
        3,
    )
    .await;
    let expected: Vec<String> = (0..11).rev().map(|n| format!("case {n:02}")).collect();
    assert_eq!(titles(&newest), expected);

    let oldest = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::CreateTimeAsc,
        4,
    )
    .await;
    let expected: Vec<String> = (0..11).map(|n| format!("case {n:02}")).collect();
    assert_eq!(titles(&oldest), expected);

    let by_severity = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::SeverityDesc,
        2,
    )
    .await;
    assert_eq!(by_severity.len(), 11);
    let ranks: Vec<i32> = by_severity.iter().map(|c| c.severity).collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    for pair in by_severity
        .windows(2)
        .filter(|w| w[0].severity == w[1].severity)
    {
        assert!(pair[0].create_time.unwrap().seconds >= pair[1].create_time.unwrap().seconds);
    }

    let by_due = list_all(
        &mut analyst,
        pb::CaseFilter::default(),
        pb::CaseOrder::SlaDueTimeAsc,
        5,
    )
    .await;
    let dues: Vec<i64> = by_due
        .iter()
        .map(|c| c.sla_due_time.unwrap().seconds)
        .collect();
    assert_eq!(by_due.len(), 11);
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "{dues:?}");
}

#[tokio::test]
async fn filters_combine_status_severity_assignee_title_jira_and_pending() {
    let aegis = TestAegis::start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let high = create_case(&mut ana, "AWS key in Runbook", pb::Severity::High).await;
    let low = create_case(&mut ana, "100% exposed page_name", pb::Severity::Low).await;
    let critical = create_case(&mut ana, "Passport scans", pb::Severity::Critical).await;
    transition(&mut ana, &critical.id, pb::CaseStatus::InProgress)
        .await
        .unwrap();
    ana.assign_case(pb::AssignCaseRequest {
        case_id: high.id.clone(),
        assignee_id: "me".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let filter = |f: pb::CaseFilter| f;
    let open_or_in_progress = filter(pb::CaseFilter {
        statuses: vec![pb::CaseStatus::InProgress as i32],
        ..Default::default()
    });
    let found = list_all(&mut ana, open_or_in_progress, pb::CaseOrder::Unspecified, 0).await;
    assert_eq!(titles(&found), ["Passport scans"]);

    let severe = pb::CaseFilter {
        severities: vec![pb::Severity::High as i32, pb::Severity::Critical as i32],
        ..Default::default()
    };
    let found = list_all(&mut ana, severe, pb::CaseOrder::CreateTimeAsc, 0).await;
    assert_eq!(titles(&found), ["AWS key in Runbook", "Passport scans"]);

    let mine = pb::CaseFilter {
        assignee: "me".into(),
        ..Default::default()
    };
    assert_eq!(
        titles(&list_all(&mut ana, mine, pb::CaseOrder::Unspecified, 0).await),
        ["AWS key in Runbook"]
    );
    let mut bob = aegis.cases_as("bob", ANALYST).await;
    let bobs = pb::CaseFilter {
        assignee: "me".into(),
        ..Default::default()
    };
    assert!(
        list_all(&mut bob, bobs, pb::CaseOrder::Unspecified, 0)
            .await
            .is_empty()
    );
    let nobody = pb::CaseFilter {
        assignee: "nobody".into(),
        ..Default::default()
    };
    assert_eq!(
        list_all(&mut ana, nobody, pb::CaseOrder::Unspecified, 0)
            .await
            .len(),
        2
    );

    let text = pb::CaseFilter {
        title_contains: "RUNBOOK".into(),
        ..Default::default()
    };
    assert_eq!(
        titles(&list_all(&mut ana, text, pb::CaseOrder::Unspecified, 0).await),
        ["AWS key in Runbook"]
    );
    let wildcard = pb::CaseFilter {
        title_contains: "0% e".into(),
        ..Default::default()
    };
    assert_eq!(
        list_all(&mut ana, wildcard, pb::CaseOrder::Unspecified, 0)
            .await
            .len(),
        1
    );
    let literal_underscore = pb::CaseFilter {
        title_contains: "e_n".into(),
        ..Default::default()
    };
    assert_eq!(
        titles(&list_all(&mut ana, literal_underscore, pb::CaseOrder::Unspecified, 0).await),
        [low.title.as_str()]
    );

    let jira_linked = pb::CaseFilter {
        jira_linked: Some(true),
        ..Default::default()
    };
    assert!(
        list_all(&mut ana, jira_linked, pb::CaseOrder::Unspecified, 0)
            .await
            .is_empty()
    );
    let pending = pb::CaseFilter {
        pending_exception: Some(false),
        ..Default::default()
    };
    assert_eq!(
        list_all(&mut ana, pending, pb::CaseOrder::Unspecified, 0)
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn sla_filters_follow_the_clock() {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let clock = ManualClock::new(start);
    let aegis = TestAegis::builder().clock(clock.clone()).start().await;
    let mut ana = aegis.cases_as("ana", ANALYST).await;
    let critical = create_case(&mut ana, "Critical", pb::Severity::Critical).await;
    let low = create_case(&mut ana, "Low", pb::Severity::Low).await;
    let resolved = create_case(&mut ana, "Resolved in time", pb::Severity::Critical).await;
    transition(&mut ana, &resolved.id, pb::CaseStatus::Remediated)
        .await
        .unwrap();

    let sla = |status: pb::SlaStatus| pb::CaseFilter {
        sla_statuses: vec![status as i32],
        ..Default::default()
    };
    let on_track = list_all(
        &mut ana,
        sla(pb::SlaStatus::OnTrack),
        pb::CaseOrder::CreateTimeAsc,
        0,
    )
    .await;
    assert_eq!(titles(&on_track), ["Critical", "Low"]);
    let met = list_all(
        &mut ana,
        sla(pb::SlaStatus::Met),
        pb::CaseOrder::CreateTimeAsc,
        0,
    )
    .await;
    assert_eq!(titles(&met), ["Resolved in time"]);

    // Six of seven days gone: less than 20% of a Critical window is left.
    clock.set(start + Duration::days(6));
    let at_risk = list_all(
        &mut ana,
        sla(pb::SlaStatus::AtRisk),
        pb::CaseOrder::Unspecified,
        0,
    )
    .await;
    assert_eq!(titles(&at_risk), ["Critical"]);
    assert_eq!(
        get_case(&mut ana, &critical.id).await.sla_status,
        pb::SlaStatus::AtRisk as i32
    );

    clock.set(start + Duration::days(8));
    let breached = list_all(
        &mut ana,
        sla(pb::SlaStatus::Breached),
        pb::CaseOrder::Unspecified,
        0,
    )
    .await;
    assert_eq!(titles(&breached), ["Critical"]);
    assert_eq!(
        get_case(&mut ana, &low.id).await.sla_status,
        pb::SlaStatus::OnTrack as i32
    );

    // Closing late settles the SLA as breached.
    transition(&mut ana, &critical.id, pb::CaseStatus::Closed)
        .await
        .unwrap();
    let either = pb::CaseFilter {
        sla_statuses: vec![pb::SlaStatus::Breached as i32, pb::SlaStatus::Met as i32],
        ..Default::default()
    };
    let settled = list_all(&mut ana, either, pb::CaseOrder::CreateTimeAsc, 0).await;
    assert_eq!(titles(&settled), ["Critical", "Resolved in time"]);
    assert_eq!(settled[0].sla_status, pb::SlaStatus::Breached as i32);
}
