//! The value types shipping decisions are made of: country codes and carrier names, both
//! parsed on the way in, so a stored or decided value is always a valid one.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// An ISO 3166-1 alpha-2 country code, upper case (`"nl"` parses as `NL`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(pub(super) String);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CountryCode {
    type Error = DomainError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let code = value.trim();
        if code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_uppercase()))
        } else {
            Err(DomainError::InvalidCountry(value.to_owned()))
        }
    }
}

impl TryFrom<String> for CountryCode {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_from(value.as_str())
    }
}

impl From<CountryCode> for String {
    fn from(code: CountryCode) -> Self {
        code.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A carrier's name. Restricted to `[a-z0-9_-]{1,40}` because it is part of stream ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CarrierName(pub(super) String);

impl CarrierName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for CarrierName {
    type Error = DomainError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let valid = (1..=40).contains(&value.len())
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid { Ok(Self(value.to_owned())) } else { Err(DomainError::InvalidCarrierName(value.to_owned())) }
    }
}

impl TryFrom<String> for CarrierName {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::try_from(value.as_str())
    }
}

impl From<CarrierName> for String {
    fn from(name: CarrierName) -> Self {
        name.0
    }
}

impl fmt::Display for CarrierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
