//! The rules of risk exceptions that need no storage: what a valid request is, when an
//! exception expires and when its reminder is due, in the organisation's time zone, and when
//! the daily maintenance job runs.
//!
//! Dates are calendar dates ([`NaiveDate`]): an exception's `expiry_date` is the last day it is
//! valid, as a day in the organisation's time zone, not an instant.

use std::collections::BTreeMap;

use aegis_platform::error::Violation;
use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;

/// The residual risk an approver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RiskLevel {
    /// Low residual risk.
    Low,
    /// Medium residual risk.
    Medium,
    /// High residual risk.
    High,
    /// Critical residual risk.
    Critical,
}

/// Where an exception stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionStatus {
    /// Submitted, waiting for an approver.
    PendingApproval,
    /// Approved: the case is in Exception until the expiry date has passed.
    Approved,
    /// Revoked (rejected while pending, withdrawn after approval, superseded or ended by the
    /// case's resolution).
    Revoked,
    /// Its expiry date has passed.
    Expired,
}

impl ExceptionStatus {
    /// Whether an approver may approve it.
    pub fn can_approve(self) -> bool {
        self == Self::PendingApproval
    }

    /// Whether it may be revoked.
    pub fn can_revoke(self) -> bool {
        matches!(self, Self::PendingApproval | Self::Approved)
    }
}

/// Limits of a request.
pub mod limits {
    /// Fewest characters of a reason, after trimming.
    pub const REASON_MIN: usize = 10;
    /// Most characters of a reason.
    pub const REASON_MAX: usize = 10_000;
    /// Longest maximum duration an Admin may set, in days.
    pub const MAX_DURATION_DAYS: u32 = 3_650;
}

/// The Admin's settings of risk exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionSettings {
    /// Longest an exception may run, in days after today (default 365).
    pub max_duration_days: u32,
    /// Shorter maxima per risk level (for example Critical 30 days).
    pub max_duration_days_by_level: BTreeMap<RiskLevel, u32>,
    /// Whether a requester may approve their own request (recorded as a self-approval).
    pub allow_self_approval: bool,
    /// The organisation's time zone, in which dates begin and end.
    pub time_zone: Tz,
    /// Local time of day the maintenance job runs.
    pub maintenance_time: NaiveTime,
    /// Days before the expiry date that the reminder is sent; 0 sends none.
    pub reminder_days: u32,
}

impl Default for ExceptionSettings {
    fn default() -> Self {
        Self {
            max_duration_days: 365,
            max_duration_days_by_level: BTreeMap::new(),
            allow_self_approval: false,
            time_zone: Tz::UTC,
            maintenance_time: NaiveTime::from_hms_opt(1, 0, 0).unwrap_or(NaiveTime::MIN),
            reminder_days: 7,
        }
    }
}

impl ExceptionSettings {
    /// The longest an exception of `level` may run, in days.
    pub fn max_days(&self, level: RiskLevel) -> u32 {
        self.max_duration_days_by_level
            .get(&level)
            .copied()
            .unwrap_or(self.max_duration_days)
            .min(self.max_duration_days)
    }

    /// The violations of settings an Admin asks for.
    pub fn violations(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        if !(1..=limits::MAX_DURATION_DAYS).contains(&self.max_duration_days) {
            violations.push(Violation::new(
                "settings.max_duration_days",
                format!("must be 1 to {} days", limits::MAX_DURATION_DAYS),
            ));
        }
        for (level, days) in &self.max_duration_days_by_level {
            if *days == 0 || *days > self.max_duration_days {
                violations.push(Violation::new(
                    "settings.max_duration_days_by_level",
                    format!(
                        "the maximum of {level:?} must be 1 to {} days (the overall maximum)",
                        self.max_duration_days
                    ),
                ));
            }
        }
        if self.reminder_days > self.max_duration_days {
            violations.push(Violation::new(
                "settings.reminder_days",
                "must not exceed the maximum duration",
            ));
        }
        violations
    }
}

/// The calendar date it is at `now` in `time_zone`.
pub fn local_date(now: DateTime<Utc>, time_zone: Tz) -> NaiveDate {
    now.with_timezone(&time_zone).date_naive()
}

/// A request whose fields passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    /// The reason, as written (its length counted after trimming).
    pub reason: String,
    /// The residual risk level.
    pub risk_level: RiskLevel,
    /// The last day the exception is valid.
    pub expiry_date: NaiveDate,
}

/// Checks a request against the rules of PRODUCT.md: a reason of 10 to 10,000 characters, and
/// an expiry date after today and at most the maximum duration of its risk level ahead, both
/// in the organisation's time zone. `expiry_date` is the `YYYY-MM-DD` text of the request.
pub fn validate_request(
    reason: &str,
    risk_level: Option<RiskLevel>,
    expiry_date: &str,
    now: DateTime<Utc>,
    settings: &ExceptionSettings,
) -> Result<ValidRequest, Vec<Violation>> {
    let mut violations = Vec::new();
    let length = reason.trim().chars().count();
    if !(limits::REASON_MIN..=limits::REASON_MAX).contains(&length) {
        violations.push(Violation::new(
            "reason",
            format!(
                "must be {} to {} characters (got {length}): say why the risk is accepted",
                limits::REASON_MIN,
                limits::REASON_MAX
            ),
        ));
    } else if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        violations.push(Violation::new(
            "reason",
            "must not contain control characters other than tab and line breaks",
        ));
    }
    if risk_level.is_none() {
        violations.push(Violation::new(
            "risk_level",
            "must be RISK_LEVEL_LOW, RISK_LEVEL_MEDIUM, RISK_LEVEL_HIGH or RISK_LEVEL_CRITICAL",
        ));
    }

    let today = local_date(now, settings.time_zone);
    let parsed = NaiveDate::parse_from_str(expiry_date.trim(), "%Y-%m-%d").ok();
    match (parsed, risk_level) {
        (None, _) => violations.push(Violation::new(
            "expiry_date",
            "must be a calendar date written YYYY-MM-DD",
        )),
        (Some(date), _) if date <= today => violations.push(Violation::new(
            "expiry_date",
            format!("must be after today ({today} in {})", settings.time_zone),
        )),
        (Some(date), Some(level)) => {
            let days = settings.max_days(level);
            let latest = today
                .checked_add_days(Days::new(u64::from(days)))
                .unwrap_or(NaiveDate::MAX);
            if date > latest {
                violations.push(Violation::new(
                    "expiry_date",
                    format!(
                        "must be at most {days} days ahead for {level:?} risk (on or before \
                         {latest})"
                    ),
                ));
            }
        }
        (Some(_), None) => {}
    }

    match (violations.is_empty(), risk_level, parsed) {
        (true, Some(risk_level), Some(expiry_date)) => Ok(ValidRequest {
            reason: reason.to_owned(),
            risk_level,
            expiry_date,
        }),
        _ => Err(violations),
    }
}

/// Whether an approved exception whose last valid day is `expiry_date` has expired on a
/// maintenance run at `run_at`: the run's date in the organisation's time zone is later.
pub fn has_expired(expiry_date: NaiveDate, run_at: DateTime<Utc>, time_zone: Tz) -> bool {
    local_date(run_at, time_zone) > expiry_date
}

/// Whether the reminder of an exception expiring on `expiry_date` is due on `run_date`: from
/// `reminder_days` before the expiry date up to the expiry date itself (so a missed day still
/// sends it), never when `reminder_days` is 0.
pub fn reminder_due(expiry_date: NaiveDate, run_date: NaiveDate, reminder_days: u32) -> bool {
    if reminder_days == 0 {
        return false;
    }
    let first = expiry_date
        .checked_sub_days(Days::new(u64::from(reminder_days)))
        .unwrap_or(NaiveDate::MIN);
    (first..=expiry_date).contains(&run_date)
}

/// The days a maintenance run must cover: every day after the last one it completed, up to
/// today, so missed days are caught up; only today when it never ran.
pub fn days_to_catch_up(last_completed: Option<NaiveDate>, today: NaiveDate) -> Vec<NaiveDate> {
    match last_completed {
        None => vec![today],
        Some(last) if last >= today => Vec::new(),
        Some(last) => last
            .iter_days()
            .skip(1)
            .take_while(|day| *day <= today)
            .collect(),
    }
}

/// When the daily run at local `time` next happens after `now`. A local time skipped by a
/// daylight-saving change runs at the first instant after the gap; a repeated one runs at its
/// first occurrence.
pub fn next_run_after(now: DateTime<Utc>, time_zone: Tz, time: NaiveTime) -> DateTime<Utc> {
    let mut date = local_date(now, time_zone);
    for _ in 0..3 {
        let candidate = run_instant(date, time_zone, time);
        if candidate > now {
            return candidate;
        }
        date = date.succ_opt().unwrap_or(date);
    }
    now + chrono::Duration::days(1)
}

fn run_instant(date: NaiveDate, time_zone: Tz, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    match time_zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Inside a gap: step forward a minute at a time until the clock exists again.
            (1..=180)
                .find_map(|minutes| {
                    let later = local + chrono::Duration::minutes(minutes);
                    time_zone.from_local_datetime(&later).earliest()
                })
                .map_or_else(
                    || Utc.from_utc_datetime(&local),
                    |at| at.with_timezone(&Utc),
                )
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike as _;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date")
    }

    fn la() -> ExceptionSettings {
        ExceptionSettings {
            time_zone: chrono_tz::America::Los_Angeles,
            ..ExceptionSettings::default()
        }
    }

    #[test]
    fn an_exception_expiring_on_march_31_is_valid_through_that_day_in_utc() {
        let expiry = date("2026-03-31");
        assert!(!has_expired(expiry, utc("2026-03-31T23:30:00Z"), Tz::UTC));
        assert!(has_expired(expiry, utc("2026-04-01T00:30:00Z"), Tz::UTC));
    }

    #[test]
    fn in_los_angeles_it_expires_after_local_midnight() {
        let expiry = date("2026-03-31");
        let zone = chrono_tz::America::Los_Angeles;
        // 00:30 UTC on April 1 is still March 31 in Los Angeles (PDT, UTC-7).
        assert!(!has_expired(expiry, utc("2026-04-01T00:30:00Z"), zone));
        assert!(!has_expired(expiry, utc("2026-04-01T06:59:00Z"), zone));
        assert!(has_expired(expiry, utc("2026-04-01T07:00:00Z"), zone));
    }

    #[test]
    fn requests_are_checked_against_today_and_the_maximum_of_their_level() {
        let mut settings = la();
        settings
            .max_duration_days_by_level
            .insert(RiskLevel::Critical, 30);
        // 2026-06-01 03:00 UTC is May 31 in Los Angeles.
        let now = utc("2026-06-01T03:00:00Z");
        let reason = "compensating control: the page is restricted to the security team";
        let check =
            |level, expiry: &str| validate_request(reason, Some(level), expiry, now, &settings);

        assert!(
            check(RiskLevel::Low, "2026-06-01").is_ok(),
            "tomorrow, locally"
        );
        let today = check(RiskLevel::Low, "2026-05-31").expect_err("today");
        assert_eq!(today[0].field, "expiry_date");
        assert!(today[0].description.contains("2026-05-31"));
        assert!(check(RiskLevel::Critical, "2026-06-30").is_ok());
        let too_far = check(RiskLevel::Critical, "2026-07-01").expect_err("31 days");
        assert!(too_far[0].description.contains("30 days"));
        assert!(check(RiskLevel::Low, "2027-05-31").is_ok());
        assert!(check(RiskLevel::Low, "2027-06-01").is_err());
        assert!(check(RiskLevel::Low, "31/12/2026").is_err());
    }

    #[test]
    fn a_request_reports_every_broken_rule() {
        let now = utc("2026-06-01T12:00:00Z");
        let violations =
            validate_request("too short", None, "", now, &ExceptionSettings::default())
                .expect_err("invalid");
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["reason", "risk_level", "expiry_date"]);
    }

    #[test]
    fn reminders_start_the_configured_days_before_expiry() {
        let expiry = date("2026-03-31");
        assert!(!reminder_due(expiry, date("2026-03-23"), 7));
        assert!(reminder_due(expiry, date("2026-03-24"), 7));
        assert!(reminder_due(expiry, date("2026-03-31"), 7));
        assert!(!reminder_due(expiry, date("2026-04-01"), 7));
        assert!(!reminder_due(expiry, date("2026-03-31"), 0));
    }

    #[test]
    fn missed_days_are_caught_up() {
        assert_eq!(
            days_to_catch_up(None, date("2026-04-03")),
            [date("2026-04-03")]
        );
        assert_eq!(
            days_to_catch_up(Some(date("2026-03-31")), date("2026-04-03")),
            [date("2026-04-01"), date("2026-04-02"), date("2026-04-03")]
        );
        assert!(days_to_catch_up(Some(date("2026-04-03")), date("2026-04-03")).is_empty());
    }

    #[test]
    fn the_daily_run_survives_daylight_saving_changes() {
        let zone = chrono_tz::America::Los_Angeles;
        let at = |h, m| NaiveTime::from_hms_opt(h, m, 0).expect("time");

        // 02:30 does not exist on 2026-03-08 in Los Angeles: the run is at 03:00 PDT.
        let spring = next_run_after(utc("2026-03-08T09:00:00Z"), zone, at(2, 30));
        assert_eq!(spring, utc("2026-03-08T10:00:00Z"));
        // 01:30 happens twice on 2026-11-01: the run is at the first, 01:30 PDT.
        let autumn = next_run_after(utc("2026-11-01T07:00:00Z"), zone, at(1, 30));
        assert_eq!(autumn, utc("2026-11-01T08:30:00Z"));
        // An ordinary day: tomorrow when today's run has passed.
        let ordinary = next_run_after(utc("2026-06-02T10:00:00Z"), Tz::UTC, at(1, 0));
        assert_eq!(ordinary, utc("2026-06-03T01:00:00Z"));
        assert_eq!(ordinary.minute(), 0);
    }

    #[test]
    fn settings_refuse_level_maxima_beyond_the_overall_one() {
        let mut settings = ExceptionSettings::default();
        settings
            .max_duration_days_by_level
            .insert(RiskLevel::High, 400);
        assert_eq!(settings.violations().len(), 1);
        assert_eq!(settings.max_days(RiskLevel::High), 365);
        assert_eq!(settings.max_days(RiskLevel::Low), 365);
    }

    #[test]
    fn only_pending_exceptions_are_approved_and_ended_ones_are_not_revoked() {
        assert!(ExceptionStatus::PendingApproval.can_approve());
        assert!(!ExceptionStatus::Approved.can_approve());
        assert!(ExceptionStatus::Approved.can_revoke());
        assert!(!ExceptionStatus::Expired.can_revoke());
        assert!(!ExceptionStatus::Revoked.can_revoke());
    }
}
