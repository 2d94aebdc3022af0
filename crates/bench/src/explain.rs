//! Query plans of the ListCases queries the benchmark times, for a reader who wants to know
//! why a number is what it is.
//!
//! The statements mirror what `aegis_cases::storage` builds for these filters (its
//! `list_cases` with `push_filter` and `push_keyset`), with the values written in rather than
//! bound, and `*` for its column list: every column is read from the table row either way.

use aegis_platform::storage::{Backend, Database};
use sqlx::Row as _;

use crate::seed::{ASSIGNEE_ME, TITLE_SEARCH};

const TRIAGE: &str = "status IN ('open', 'in_progress') AND severity IN (3, 4)";
const NEWEST_FIRST: &str = " ORDER BY created_at DESC, number DESC LIMIT 51";

/// Prints the plan of each timed ListCases query; on PostgreSQL with the actual row counts
/// and buffers, since `EXPLAIN ANALYZE` runs the query.
pub(crate) async fn print_plans(db: &Database) -> anyhow::Result<()> {
    // A cursor 500 matching rows deep, as a followed page token would carry.
    let cursor = sqlx::query(&format!(
        "SELECT created_at, number FROM cases WHERE {TRIAGE}{} OFFSET 500",
        NEWEST_FIRST.replace("LIMIT 51", "LIMIT 1")
    ))
    .fetch_optional(db.reader())
    .await?;
    let (created_at, number) = match cursor {
        Some(row) => (
            row.try_get::<i64, _>("created_at")?,
            row.try_get::<i64, _>("number")?,
        ),
        None => (i64::MAX, i64::MAX),
    };

    let me = ASSIGNEE_ME;
    let queries = [
        (
            "filtered, first page",
            format!("SELECT * FROM cases WHERE 1 = 1 AND {TRIAGE}{NEWEST_FIRST}"),
        ),
        (
            "filtered, deep page",
            format!(
                "SELECT * FROM cases WHERE 1 = 1 AND {TRIAGE} AND (created_at, number) < \
                 ({created_at}, {number}){NEWEST_FIRST}"
            ),
        ),
        (
            "title_contains, first page",
            format!(
                "SELECT * FROM cases WHERE 1 = 1 AND title_folded LIKE '%{TITLE_SEARCH}%' \
                 ESCAPE '\\'{NEWEST_FIRST}"
            ),
        ),
        (
            "assignee = me, first page",
            format!("SELECT * FROM cases WHERE 1 = 1 AND assignee_id = '{me}'{NEWEST_FIRST}"),
        ),
    ];

    println!("\nQuery plans");
    for (kind, sql) in queries {
        println!("\n-- {kind}\n{sql};");
        let (explain, column) = match db.backend() {
            Backend::Sqlite => (format!("EXPLAIN QUERY PLAN {sql}"), "detail"),
            Backend::Postgres => (format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), "QUERY PLAN"),
        };
        let rows = sqlx::query(&explain).fetch_all(db.reader()).await?;
        for row in rows {
            println!("   {}", row.try_get::<String, _>(column)?);
        }
    }
    Ok(())
}
