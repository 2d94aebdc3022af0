//! End-to-end tests of the cases service: each test starts the real server on port 0 over a
//! fresh database (SQLite, or PostgreSQL when `AEGIS_TEST_DATABASE_URL` is set) and speaks
//! gRPC to it.

#![allow(clippy::unwrap_used, unreachable_pub)]

mod bad_input;
mod bulk;
mod cases;
mod evidence;
mod failures;
mod listing;
mod roles;
mod server;
mod service_calls;
mod support;
