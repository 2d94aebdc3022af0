//! The runtime every Aegis service shares.
//!
//! A service's `main` resolves [`config`], starts [`telemetry`], opens its [`storage`] and
//! hands its gRPC routes to [`server`], which adds health, reflection, gRPC-web, CORS,
//! authentication ([`auth`]) and graceful shutdown. Handlers report failures as
//! [`error::ApiError`], which becomes a `tonic::Status` with `google.rpc` details in one place.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod pagination;
pub mod server;
pub mod storage;
pub mod telemetry;
