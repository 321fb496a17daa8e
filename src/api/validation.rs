//! Checks the apiserver cannot make at admission — a cron expression, an IANA time zone, a
//! regular expression that must compile, a duration to parse — run by the controllers
//! before they act. A failure names the field path (`spec.schedule`) so the controller can
//! report it in a `Stalled` condition and wait for the spec to change.

use std::time::Duration;

use super::cron_job::CronJobSpec;
use super::edge_handler::{EdgeHandlerSpec, EdgeRule, MatchType, ValueMatchType};
use super::project::ProjectSpec;
use super::webhook::{WebhookSpec, is_event_pattern};

/// A spec field whose value the controller cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// JSON path of the field, e.g. `spec.rules[2].match.path.value`.
    pub field: String,
    /// What is wrong, for a human. Never contains secret values.
    pub message: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The condition and Event reason for an invalid spec.
    pub fn reason(&self) -> &'static str {
        "InvalidSpec"
    }
}

pub type Result<T = (), E = InvalidField> = std::result::Result<T, E>;

/// Validates a CronJob spec: the schedule and the time zone.
pub fn cron_job(spec: &CronJobSpec) -> Result {
    cron_schedule("spec.schedule", &spec.schedule)?;
    if let Some(zone) = &spec.time_zone {
        time_zone("spec.timeZone", zone)?;
    }
    Ok(())
}

/// Validates an EdgeHandler spec: every regular expression must compile.
pub fn edge_handler(spec: &EdgeHandlerSpec) -> Result {
    edge_handler_rules(&spec.rules)
}

/// Validates an EdgeHandler's rules (`spec.rules`): every regular expression must compile.
pub fn edge_handler_rules(rules: &[EdgeRule]) -> Result {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}].match");
        if rule.matches.path.kind == MatchType::RegularExpression {
            regex(&format!("{at}.path.value"), &rule.matches.path.value)?;
        }
        for (list, matches) in [
            ("headers", &rule.matches.headers),
            ("queryParams", &rule.matches.query_params),
        ] {
            for (j, m) in matches.iter().enumerate() {
                if m.kind == ValueMatchType::RegularExpression {
                    regex(&format!("{at}.{list}[{j}].value"), &m.value)?;
                }
            }
        }
    }
    Ok(())
}

/// Validates a Webhook spec: event patterns (also checked at admission) and the retry
/// schedule's durations.
pub fn webhook(spec: &WebhookSpec) -> Result {
    for (i, event) in spec.events.iter().enumerate() {
        if !is_event_pattern(event) {
            return Err(InvalidField::new(
                format!("spec.events[{i}]"),
                format!("unknown event type {event:?}"),
            ));
        }
    }
    for (i, delay) in spec.retry.schedule.iter().enumerate() {
        duration(&format!("spec.retry.schedule[{i}]"), delay)?;
    }
    Ok(())
}

/// Validates a Project spec: the build timeout.
pub fn project(spec: &ProjectSpec) -> Result {
    if let Some(build) = &spec.build {
        let timeout = duration("spec.build.timeout", &build.timeout)?;
        if timeout.is_zero() {
            return Err(InvalidField::new(
                "spec.build.timeout",
                "must be longer than zero",
            ));
        }
    }
    Ok(())
}

/// Parses a duration of whole units: `250ms`, `30s`, `5m`, `1h30m`.
pub fn duration(field: &str, value: &str) -> Result<Duration> {
    let invalid = || {
        InvalidField::new(
            field,
            format!("{value:?} is not a duration such as 30s, 5m or 1h30m"),
        )
    };
    if value.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(invalid());
        };
        rest = &rest[len..];
        let part = u32::try_from(amount)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

/// Checks an IANA time zone name such as `Europe/Berlin` against the tz database bundled
/// into the operator (independent of the image's `/usr/share/zoneinfo`).
pub fn time_zone(field: &str, value: &str) -> Result {
    if value == "Local" || value.is_empty() {
        return Err(InvalidField::new(
            field,
            format!("{value:?} is not an IANA time zone such as Europe/Berlin"),
        ));
    }
    jiff::tz::db().get(value).map(|_| ()).map_err(|_| {
        InvalidField::new(
            field,
            format!("unknown time zone {value:?}: use an IANA name such as Europe/Berlin or UTC"),
        )
    })
}

/// Checks that a regular expression compiles (RE2 syntax, as Gateway implementations use:
/// no look-around, no back-references) and is not huge once compiled.
pub fn regex(field: &str, value: &str) -> Result {
    regex::RegexBuilder::new(value)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|error| {
            let detail = match error {
                regex::Error::Syntax(text) => text
                    .lines()
                    .last()
                    .unwrap_or("invalid syntax")
                    .trim_start_matches("error: ")
                    .to_string(),
                regex::Error::CompiledTooBig(_) => "the expression is too large".to_string(),
                _ => "invalid regular expression".to_string(),
            };
            InvalidField::new(
                field,
                format!("invalid regular expression {value:?}: {detail}"),
            )
        })
}

/// Checks a cron schedule the way batch/v1 CronJob reads it (the standard five fields
/// minute, hour, day of month, month, day of week, or a macro such as `@hourly`), so that
/// the CronJob the controller writes is not refused.
pub fn cron_schedule(field: &str, value: &str) -> Result {
    let invalid = |message: String| InvalidField::new(field, message);
    let value = value.trim();
    if value.starts_with("TZ=") || value.starts_with("CRON_TZ=") {
        return Err(invalid(
            "TZ= and CRON_TZ= are not supported in the schedule: use spec.timeZone".into(),
        ));
    }
    if let Some(name) = value.strip_prefix('@') {
        if let Some(every) = name.strip_prefix("every ") {
            return duration(field, every.trim())
                .and_then(|d| {
                    if d.is_zero() {
                        Err(invalid("@every needs a duration longer than zero".into()))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|_| invalid(format!("{value:?}: @every needs a duration such as 90m")));
        }
        return match name {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(invalid(format!(
                "unknown macro {value:?}: use @yearly, @monthly, @weekly, @daily or @hourly"
            ))),
        };
    }
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(invalid(format!(
            "{value:?} has {} fields; expected 5 (minute hour day-of-month month day-of-week)",
            fields.len()
        )));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let specs: [(&str, u32, u32, &[&str], u32); 5] = [
        ("minute", 0, 59, &[], 0),
        ("hour", 0, 23, &[], 0),
        ("day of month", 1, 31, &[], 0),
        ("month", 1, 12, MONTHS, 1),
        ("day of week", 0, 6, DAYS, 0),
    ];
    for (text, (name, min, max, names, first)) in fields.iter().zip(specs) {
        cron_field(text, min, max, names, first)
            .map_err(|why| invalid(format!("{value:?}: {name} field {text:?}: {why}")))?;
    }
    Ok(())
}

fn cron_field(text: &str, min: u32, max: u32, names: &[&str], first: u32) -> Result<(), String> {
    let number = |s: &str| -> Result<u32, String> {
        let n = match s.parse::<u32>() {
            Ok(n) => n,
            Err(_) => names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(s))
                .map(|i| i as u32 + first)
                .ok_or_else(|| format!("{s:?} is not a number"))?,
        };
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s > 0 => {}
                _ => return Err(format!("step {step:?} must be a positive number")),
            }
        }
        match range {
            "*" | "?" => {}
            _ => match range.split_once('-') {
                Some((low, high)) => {
                    let (low, high) = (number(low)?, number(high)?);
                    if low > high {
                        return Err(format!("range {range:?} is backwards"));
                    }
                }
                None => {
                    number(range)?;
                }
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_accepted() {
        for ok in [
            "0 * * * *",
            "*/15 9-17 * * 1-5",
            "0 0 1 jan,jul *",
            "30 2 * * SUN",
            "0 0 * * mon-fri",
            "5,35 */2 1-15/3 * ?",
            "@hourly",
            "@daily",
            "@every 90m",
        ] {
            assert_eq!(cron_schedule("spec.schedule", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn cron_schedules_refused_with_the_field() {
        for (bad, fragment) in [
            ("* * * *", "has 4 fields"),
            ("0 0 * * * *", "has 6 fields"),
            ("60 * * * *", "60 is outside 0-59"),
            ("0 24 * * *", "outside 0-23"),
            ("0 0 0 * *", "outside 1-31"),
            ("0 0 * 13 *", "outside 1-12"),
            ("0 0 * * 7", "outside 0-6"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("0 0 * * funday", "not a number"),
            ("@fortnightly", "unknown macro"),
            ("TZ=UTC 0 * * * *", "spec.timeZone"),
            ("", "has 0 fields"),
        ] {
            let error = cron_schedule("spec.schedule", bad).unwrap_err();
            assert_eq!(error.field, "spec.schedule");
            assert!(
                error.to_string().contains(fragment),
                "{bad}: {error} lacks {fragment}"
            );
            assert!(error.to_string().starts_with("spec.schedule: "));
        }
    }

    #[test]
    fn time_zones() {
        assert_eq!(time_zone("spec.timeZone", "Europe/Berlin"), Ok(()));
        assert_eq!(
            time_zone("spec.timeZone", "America/Argentina/Buenos_Aires"),
            Ok(())
        );
        assert_eq!(time_zone("spec.timeZone", "UTC"), Ok(()));
        for bad in ["Mars/Olympus_Mons", "Local", "", "Europe/Berlln"] {
            let error = time_zone("spec.timeZone", bad).unwrap_err();
            assert_eq!(error.field, "spec.timeZone", "{bad}");
        }
    }

    #[test]
    fn regexes() {
        assert_eq!(regex("f", r"^/docs/v[0-9]+/.*"), Ok(()));
        let error = regex("spec.rules[0].match.path.value", "^/(unclosed").unwrap_err();
        assert_eq!(error.field, "spec.rules[0].match.path.value");
        assert!(error.message.contains("invalid regular expression"));
        // RE2 syntax: look-around is not available at the edge either.
        assert!(regex("f", r"^/(?!admin)").is_err());
        assert!(regex("f", r"(a)\1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("f", "5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("f", "1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("f", "250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "s", "5d", "1.5h", "-5s", "5 s"] {
            assert!(duration("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_job_spec_names_the_time_zone_field() {
        let spec: CronJobSpec = serde_json::from_value(serde_json::json!({
            "projectRef": { "name": "web" },
            "schedule": "0 * * * *",
            "timeZone": "Nowhere/Special",
            "http": { "path": "/cron" }
        }))
        .unwrap();
        assert_eq!(cron_job(&spec).unwrap_err().field, "spec.timeZone");
    }

    #[test]
    fn edge_handler_spec_names_the_regex_field() {
        let spec: EdgeHandlerSpec = serde_json::from_value(serde_json::json!({
            "projectRef": { "name": "web" },
            "rules": [
                { "match": { "path": { "type": "PathPrefix", "value": "/ok" } }, "deny": {} },
                { "match": {
                    "path": { "type": "RegularExpression", "value": "^/fine$" },
                    "headers": [{ "name": "User-Agent", "type": "RegularExpression", "value": "(bot" }]
                  },
                  "deny": {} }
            ]
        }))
        .unwrap();
        let error = edge_handler(&spec).unwrap_err();
        assert_eq!(error.field, "spec.rules[1].match.headers[0].value");
    }

    #[test]
    fn webhook_spec_names_the_bad_event() {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({
            "url": "https://hooks.example.com",
            "events": ["deployment.*", "deployment.exploded"],
            "secretRefs": [{ "name": "s" }]
        }))
        .unwrap();
        assert_eq!(webhook(&spec).unwrap_err().field, "spec.events[1]");
    }

    #[test]
    fn project_build_timeout_must_be_positive() {
        let spec: ProjectSpec = serde_json::from_value(serde_json::json!({
            "git": { "url": "https://github.com/acme/web.git" },
            "build": { "timeout": "0s" }
        }))
        .unwrap();
        assert_eq!(project(&spec).unwrap_err().field, "spec.build.timeout");
    }
}
