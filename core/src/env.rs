//! Reading configuration from environment variables: one set of rules for every binary
//! (blank means unset; numbers must be positive; errors name the variable).

use std::time::Duration;

use crate::crypto::KeyRing;

/// A configuration variable is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

/// The variable's value, or `None` when unset or blank.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A required variable.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    var(name).ok_or(ConfigError::Missing(name))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), or `default` when unset.
pub fn flag(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::Invalid { name, why: "expected true or false".into() }),
        },
    }
}

/// A positive number, or `default` when unset.
pub fn positive<T: std::str::FromStr + PartialOrd + Default>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| *n > T::default())
            .ok_or(ConfigError::Invalid { name, why: "expected a positive number".into() }),
    }
}

/// A positive, finite number of seconds (fractions allowed), or `default` when unset.
pub fn seconds(name: &'static str, default: f64) -> Result<Duration, ConfigError> {
    let s: f64 = positive(name, default)?;
    if !s.is_finite() {
        return Err(ConfigError::Invalid { name, why: "expected a finite number of seconds".into() });
    }
    Ok(Duration::from_secs_f64(s))
}

/// A whole number from 0 to `max` (0 turns the feature off), or `default` when unset.
pub fn whole_or_off(name: &'static str, default: u64, max: u64) -> Result<u64, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or(ConfigError::Invalid { name, why: format!("expected a whole number from 0 to {max}") }),
    }
}

/// A finite number of seconds that may be 0 (0 turns the feature off), or `default` when unset.
pub fn seconds_or_off(name: &'static str, default: f64) -> Result<Duration, ConfigError> {
    match var(name) {
        None => Ok(Duration::from_secs_f64(default)),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or(ConfigError::Invalid { name, why: "expected seconds from 0 to 86400".into() }),
    }
}

/// `TURNSTONE_MASTER_KEY`, parsed.
pub fn master_keys() -> Result<KeyRing, ConfigError> {
    KeyRing::parse(&required("TURNSTONE_MASTER_KEY")?)
        .map_err(|e| ConfigError::Invalid { name: "TURNSTONE_MASTER_KEY", why: e.to_string() })
}
