//! The one error type of the core crate.
//!
//! It crosses the NIF boundary as `{reason, message, details}` and becomes
//! `%AWSCluster.Error{}` in Elixir, so `reason` is a closed set a caller can match on
//! and `details` carries the raw facts (AWS error code, interface names, ...).

use std::fmt;

/// Why an operation failed; each variant becomes one Elixir atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InvalidArgument,
    NoSuchInterface,
    NoAddress,
    Throttled,
    Unauthorized,
    Unreachable,
    Timeout,
    NotFound,
    BadResponse,
    Internal,
}

impl Reason {
    /// The Elixir atom for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "invalid_argument",
            Reason::NoSuchInterface => "no_such_interface",
            Reason::NoAddress => "no_address",
            Reason::Throttled => "throttled",
            Reason::Unauthorized => "unauthorized",
            Reason::Unreachable => "unreachable",
            Reason::Timeout => "timeout",
            Reason::NotFound => "not_found",
            Reason::BadResponse => "bad_response",
            Reason::Internal => "internal",
        }
    }
}

/// One `details` value: numbers stay numbers, so `details.status == 503` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Text(String),
    Number(i64),
}

/// A failure with a human message and machine-readable details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reason: Reason,
    pub message: String,
    pub details: Vec<(&'static str, Detail)>,
}

impl Error {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Error {
            reason,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Adds one `details` entry; keys are static so they can become atoms safely.
    pub fn with_detail(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.details.push((key, Detail::Text(value.into())));
        self
    }

    /// Adds one numeric `details` entry (an HTTP status, an index).
    pub fn with_number(mut self, key: &'static str, value: i64) -> Self {
        self.details.push((key, Detail::Number(value)));
        self
    }

    /// The text detail under `key`.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.iter().find_map(|(k, v)| match v {
            Detail::Text(text) if *k == key => Some(text.as_str()),
            _ => None,
        })
    }

    /// The numeric detail under `key`.
    pub fn number(&self, key: &str) -> Option<i64> {
        self.details.iter().find_map(|(k, v)| match v {
            Detail::Number(n) if *k == key => Some(*n),
            _ => None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_kept_in_order_and_found_by_key() {
        let e = Error::new(Reason::Throttled, "slow down")
            .with_detail("code", "RequestLimitExceeded")
            .with_detail("operation", "DescribeInstances");
        assert_eq!(e.detail("code"), Some("RequestLimitExceeded"));
        assert_eq!(e.detail("missing"), None);
        assert_eq!(e.to_string(), "throttled: slow down");
    }
}
