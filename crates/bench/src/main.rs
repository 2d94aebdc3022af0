//! `aegis-bench`: starts the real Aegis server on 127.0.0.1 over a fresh database, seeds it with
//! cases, and measures ListCases latency, CreateCase throughput and one BulkCloseCases call.
//!
//! The database is a new SQLite file, or a new database on the PostgreSQL server named by
//! `--database-url` (created and dropped by the test harness). Every loop is bounded in count
//! and in time, so a slow backend makes a run report fewer samples rather than never end.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its numbers on stdout"
)]

mod explain;
mod seed;
mod stats;

use std::time::{Duration, Instant};

use aegis_platform::{auth::Role, storage::Backend, storage::Database};
use aegis_proto::aegis::cases::v1 as pb;
use aegis_test_support::{CasesClient, TestAegis};
use anyhow::Context as _;
use clap::Parser;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::Row as _;

use crate::stats::Latencies;

/// Page size of every ListCases call.
const PAGE_SIZE: i32 = 50;
/// Untimed calls of each query kind before its samples are taken.
const WARMUP_CALLS: usize = 10;
/// The longest one query kind of step b may take; it reports fewer samples when reached.
const LIST_KIND_BUDGET: Duration = Duration::from_secs(120);
/// Pages timed in a row once a deep walk reached its start.
const DEEP_PAGES_PER_WALK: usize = 10;
/// Concurrent CreateCase clients.
const CREATE_CLIENTS: usize = 32;
/// Upper bound of creates per client, whatever `--create-seconds` says.
const CREATES_PER_CLIENT_MAX: usize = 100_000;
/// The longest any single call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest the bulk close may take.
const BULK_TIMEOUT: Duration = Duration::from_secs(600);

/// Seeds cases and measures ListCases, CreateCase and BulkCloseCases.
#[derive(Debug, Parser)]
#[command(name = "aegis-bench", version, about)]
struct Args {
    /// Cases to seed.
    #[arg(
        long,
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000)
    )]
    cases: u64,
    /// A PostgreSQL server (`postgres://USER@127.0.0.1:5432/postgres`) on which to create and
    /// drop a database for the run; a fresh SQLite file when unset.
    #[arg(long)]
    database_url: Option<String>,
    /// Timed ListCases calls of the filtered query (half first pages, half deep pages), and
    /// of the title search and the assignee filter each.
    #[arg(
        long,
        default_value_t = 200,
        value_parser = clap::value_parser!(u64).range(2..=100_000)
    )]
    list_samples: u64,
    /// How long 32 clients create cases.
    #[arg(
        long,
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    create_seconds: u64,
    /// Seeded Open cases closed by the one BulkCloseCases call (at most 10,000, what one bulk
    /// action accepts).
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    bulk_size: u64,
    /// Prints the query plans of the ListCases queries after timing them.
    #[arg(long)]
    explain: bool,
}

/// What a run measured, for the summary.
#[derive(Debug, Default)]
struct Results {
    seed_rows_per_sec: f64,
    lists: Vec<(&'static str, Latencies)>,
    creates_per_sec: f64,
    create_latencies: Option<Latencies>,
    create_errors: usize,
    bulk_seconds: f64,
    bulk_events_ok: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bulk_size = usize::try_from(args.bulk_size)?;

    let mut builder = TestAegis::builder();
    if let Some(url) = &args.database_url {
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--database-url takes a postgres:// URL; leave it out for SQLite"
        );
        builder = builder.database(url.clone());
    }
    let aegis = builder.start().await;
    let db = aegis.database().await;
    println!(
        "aegis-bench: {} ({}), server on {}",
        backend_name(db.backend()),
        database_version(&db).await?,
        aegis.addr()
    );

    let mut results = Results::default();
    let seeded = step_seed(&db, args.cases, &mut results).await?;
    let client = aegis.cases_as(seed::ASSIGNEE_ME, &[Role::Analyst]).await;
    step_list(&client, args.list_samples, &mut results).await?;
    if args.explain {
        // Before the creates and the bulk close change the newest rows.
        explain::print_plans(&db).await?;
    }
    step_create(&aegis, args.create_seconds, &mut results).await?;
    step_bulk_close(
        &db,
        &client,
        args.cases,
        bulk_size,
        seeded.open,
        &mut results,
    )
    .await?;

    print_summary(db.backend(), args.cases, bulk_size, &results);
    db.close().await;
    aegis.stop().await;
    anyhow::ensure!(
        results.bulk_events_ok && results.create_errors == 0,
        "a check failed; see above"
    );
    Ok(())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

async fn database_version(db: &Database) -> anyhow::Result<String> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT sqlite_version() AS v",
        Backend::Postgres => "SELECT current_setting('server_version') AS v",
    };
    let row = sqlx::query(sql).fetch_one(db.reader()).await?;
    Ok(row.try_get::<String, _>("v")?)
}

async fn step_seed(
    db: &Database,
    cases: u64,
    results: &mut Results,
) -> anyhow::Result<seed::Seeded> {
    println!("\na. seeding {cases} cases with multi-row INSERTs, 1,000 rows a transaction");
    let seeded = seed::seed_cases(db, cases, chrono::Utc::now()).await?;
    let rate = seeded.rows as f64 / seeded.elapsed.as_secs_f64();
    println!(
        "   {} rows in {:.1} s: {:.0} rows/s ({} Open)",
        seeded.rows,
        seeded.elapsed.as_secs_f64(),
        rate,
        seeded.open
    );
    if db.backend() == Backend::Postgres {
        // What autovacuum would soon do after such a load; run now so the plans do not depend
        // on when it wakes up. SQLite has no such daemon and Aegis never runs ANALYZE on it.
        let started = Instant::now();
        sqlx::query("ANALYZE cases").execute(db.reader()).await?;
        println!("   ANALYZE cases: {:.1} s", started.elapsed().as_secs_f64());
    }
    results.seed_rows_per_sec = rate;
    Ok(seeded)
}

/// The filter of the main list query: Open and In Progress, High and Critical.
fn triage_filter() -> pb::CaseFilter {
    pb::CaseFilter {
        statuses: vec![
            pb::CaseStatus::Open as i32,
            pb::CaseStatus::InProgress as i32,
        ],
        severities: vec![pb::Severity::High as i32, pb::Severity::Critical as i32],
        ..Default::default()
    }
}

fn list_request(filter: pb::CaseFilter, page_token: String) -> pb::ListCasesRequest {
    pb::ListCasesRequest {
        filter: Some(filter),
        order_by: pb::CaseOrder::CreateTimeDesc as i32,
        page_size: PAGE_SIZE,
        page_token,
    }
}

/// One ListCases call: its latency and the next page token.
async fn list_once(
    client: &CasesClient,
    request: pb::ListCasesRequest,
) -> anyhow::Result<(Duration, pb::ListCasesResponse)> {
    let mut client = client.clone();
    let started = Instant::now();
    let response = tokio::time::timeout(CALL_TIMEOUT, client.list_cases(request))
        .await
        .context("ListCases timed out")?
        .context("ListCases failed")?
        .into_inner();
    Ok((started.elapsed(), response))
}

/// Times first pages of `filter` until `samples` are taken or the budget is spent.
async fn time_first_pages(
    client: &CasesClient,
    filter: &pb::CaseFilter,
    samples: usize,
) -> anyhow::Result<(Latencies, usize)> {
    for _ in 0..WARMUP_CALLS {
        list_once(client, list_request(filter.clone(), String::new())).await?;
    }
    let budget = Instant::now() + LIST_KIND_BUDGET;
    let mut latencies = Vec::with_capacity(samples);
    let mut rows = 0;
    while latencies.len() < samples && Instant::now() < budget {
        let (elapsed, page) =
            list_once(client, list_request(filter.clone(), String::new())).await?;
        rows = page.cases.len();
        latencies.push(elapsed);
    }
    Ok((Latencies::new(latencies), rows))
}

/// Times pages reached by following `next_page_token`: each walk pages 2 to 12 times untimed
/// from the first page, then times up to [`DEEP_PAGES_PER_WALK`] pages in a row.
async fn time_deep_pages(
    client: &CasesClient,
    filter: &pb::CaseFilter,
    samples: usize,
) -> anyhow::Result<(Latencies, usize)> {
    let mut rng = StdRng::seed_from_u64(7);
    let budget = Instant::now() + LIST_KIND_BUDGET;
    let mut latencies = Vec::with_capacity(samples);
    let mut deepest = 0;
    let walks_max = samples.saturating_mul(2).max(1);
    for _ in 0..walks_max {
        if latencies.len() >= samples || Instant::now() >= budget {
            break;
        }
        let skip = rng.random_range(2..=12);
        let mut token = String::new();
        let mut depth = 0;
        for _ in 0..skip {
            let (_, page) = list_once(client, list_request(filter.clone(), token)).await?;
            token = page.next_page_token;
            depth += 1;
            if token.is_empty() {
                break;
            }
        }
        for _ in 0..DEEP_PAGES_PER_WALK {
            if token.is_empty() || latencies.len() >= samples || Instant::now() >= budget {
                break;
            }
            let (elapsed, page) = list_once(client, list_request(filter.clone(), token)).await?;
            latencies.push(elapsed);
            token = page.next_page_token;
            depth += 1;
            deepest = deepest.max(depth);
        }
    }
    Ok((Latencies::new(latencies), deepest))
}

async fn step_list(
    client: &CasesClient,
    samples: u64,
    results: &mut Results,
) -> anyhow::Result<()> {
    let samples = usize::try_from(samples)?;
    let first = samples / 2;
    let deep = samples - first;
    println!(
        "\nb. ListCases, pages of {PAGE_SIZE} newest first ({WARMUP_CALLS} warm-up calls per kind)"
    );

    let triage = triage_filter();
    let (latencies, rows) = time_first_pages(client, &triage, first).await?;
    println!(
        "   Open+In Progress, High+Critical, first page ({rows} rows): {}",
        latencies.summary()
    );
    results.lists.push(("filtered, first page", latencies));

    let (latencies, deepest) = time_deep_pages(client, &triage, deep).await?;
    println!(
        "   same filter, deep pages (up to page {}): {}",
        deepest + 1,
        latencies.summary()
    );
    results.lists.push(("filtered, deep page", latencies));

    let search = pb::CaseFilter {
        title_contains: seed::TITLE_SEARCH.to_owned(),
        ..Default::default()
    };
    let (latencies, rows) = time_first_pages(client, &search, samples).await?;
    println!(
        "   title contains {:?}, first page ({rows} rows): {}",
        seed::TITLE_SEARCH,
        latencies.summary()
    );
    results
        .lists
        .push(("title_contains, first page", latencies));

    let mine = pb::CaseFilter {
        assignee: "me".to_owned(),
        ..Default::default()
    };
    let (latencies, rows) = time_first_pages(client, &mine, samples).await?;
    println!(
        "   assignee = me, first page ({rows} rows): {}",
        latencies.summary()
    );
    results.lists.push(("assignee = me, first page", latencies));
    Ok(())
}

async fn step_create(aegis: &TestAegis, seconds: u64, results: &mut Results) -> anyhow::Result<()> {
    println!("\nc. CreateCase from {CREATE_CLIENTS} concurrent clients for {seconds} s");
    let mut clients = Vec::with_capacity(CREATE_CLIENTS);
    for index in 0..CREATE_CLIENTS {
        let user = format!("analyst-{:02}", index % 20);
        clients.push(aegis.cases_as(&user, &[Role::Analyst]).await);
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0_usize;
            for call in 0..CREATES_PER_CLIENT_MAX {
                if Instant::now() >= deadline {
                    break;
                }
                let severity = [
                    pb::Severity::Low,
                    pb::Severity::Medium,
                    pb::Severity::High,
                    pb::Severity::Critical,
                ][call % 4];
                let request = pb::CreateCaseRequest {
                    title: format!("Benchmark: exposed token on page {index}-{call}"),
                    description: "Created by aegis-bench.".to_owned(),
                    severity: severity as i32,
                    ..Default::default()
                };
                let call_started = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, client.create_case(request)).await {
                    Ok(Ok(_)) => latencies.push(call_started.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (client_latencies, client_errors) = joined.context("a create client panicked")?;
        latencies.extend(client_latencies);
        errors += client_errors;
    }
    let elapsed = started.elapsed();

    let latencies = Latencies::new(latencies);
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "   {} created in {:.1} s: {:.0} creates/s, {errors} failed",
        latencies.len(),
        elapsed.as_secs_f64(),
        rate
    );
    println!("   latency {}", latencies.summary());
    results.creates_per_sec = rate;
    results.create_errors = errors;
    results.create_latencies = Some(latencies);
    Ok(())
}

async fn count_status_changed(db: &Database) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM evidence_events WHERE event_type = 'status_changed'",
    )
    .fetch_one(db.reader())
    .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

async fn step_bulk_close(
    db: &Database,
    client: &CasesClient,
    seeded: u64,
    bulk_size: usize,
    open: u64,
    results: &mut Results,
) -> anyhow::Result<()> {
    println!("\nd. BulkCloseCases of {bulk_size} seeded Open cases in one call");
    anyhow::ensure!(
        open >= bulk_size as u64,
        "only {open} seeded cases are Open: seed more or lower --bulk-size"
    );
    let rows = sqlx::query(
        "SELECT id FROM cases WHERE status = 'open' AND number <= $1 ORDER BY number LIMIT $2",
    )
    .bind(i64::try_from(seeded)?)
    .bind(i64::try_from(bulk_size)?)
    .fetch_all(db.reader())
    .await?;
    let ids = rows
        .iter()
        .map(|row| row.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        ids.len() == bulk_size,
        "found {} Open seeded cases",
        ids.len()
    );
    let before = count_status_changed(db).await?;

    let first_id = ids[0].clone();
    let request = pb::BulkCloseCasesRequest {
        selection: Some(pb::BulkSelection {
            case_ids: ids,
            filter: None,
        }),
        note: "Closed by aegis-bench".to_owned(),
        ..Default::default()
    };
    let mut bulk_client = client.clone();
    let started = Instant::now();
    let response = tokio::time::timeout(BULK_TIMEOUT, bulk_client.bulk_close_cases(request))
        .await
        .context("BulkCloseCases timed out")?
        .context("BulkCloseCases failed")?
        .into_inner();
    let elapsed = started.elapsed();

    let done = response
        .outcomes
        .iter()
        .filter(|o| o.result == pb::bulk_outcome::Result::Done as i32)
        .count();
    let after = count_status_changed(db).await?;
    let written = after - before;
    let ok = before == 0 && written == bulk_size as i64 && done == bulk_size;
    println!(
        "   {:.2} s wall time: {done} of {bulk_size} done, {:.0} cases/s",
        elapsed.as_secs_f64(),
        bulk_size as f64 / elapsed.as_secs_f64()
    );
    println!(
        "   status_changed events: {before} before, {after} after: {}",
        if ok {
            format!("exactly {bulk_size} written")
        } else {
            format!("MISMATCH, expected exactly {bulk_size} written")
        }
    );

    let mut verify_client = client.clone();
    let verification = verify_client
        .verify_evidence_chain(pb::VerifyEvidenceChainRequest {
            case_id: first_id.clone(),
        })
        .await
        .context("VerifyEvidenceChain failed")?
        .into_inner();
    println!(
        "   evidence chain of {first_id}: valid = {}, {} event(s)",
        verification.valid, verification.event_count
    );
    results.bulk_seconds = elapsed.as_secs_f64();
    results.bulk_events_ok = ok && verification.valid;
    Ok(())
}

fn print_summary(backend: Backend, cases: u64, bulk_size: usize, results: &Results) {
    let backend = backend_name(backend);
    println!("\nSummary ({backend}, {cases} cases)");
    println!("| backend | cases | measurement | result |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {backend} | {cases} | seed (SQL) | {:.0} rows/s |",
        results.seed_rows_per_sec
    );
    for (kind, latencies) in &results.lists {
        println!(
            "| {backend} | {cases} | ListCases {kind} | p50 {:.2} / p95 {:.2} / p99 {:.2} ms |",
            latencies.percentile_ms(50.0),
            latencies.percentile_ms(95.0),
            latencies.percentile_ms(99.0)
        );
    }
    if let Some(latencies) = &results.create_latencies {
        println!(
            "| {backend} | {cases} | CreateCase, {CREATE_CLIENTS} clients | {:.0} creates/s, \
             p50 {:.2} / p99 {:.2} ms |",
            results.creates_per_sec,
            latencies.percentile_ms(50.0),
            latencies.percentile_ms(99.0)
        );
    }
    println!(
        "| {backend} | {cases} | BulkCloseCases of {bulk_size} | {:.2} s, events {} |",
        results.bulk_seconds,
        if results.bulk_events_ok {
            "exact"
        } else {
            "MISMATCH"
        }
    );
}
