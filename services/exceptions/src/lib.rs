//! The risk exceptions service: time-bounded waivers of a case's risk that an Approver signs
//! off and that expire by themselves.
//!
//! [`domain`] holds the rules that need no storage (valid requests, expiry and reminders in the
//! organisation's time zone, the daily schedule).
// TODO(#3): storage with the outbox of effects owed to the cases and notifications services,
// the RiskExceptionService gRPC boundary, and the maintenance job.

pub mod domain;
