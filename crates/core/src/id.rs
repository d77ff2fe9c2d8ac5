//! Layer identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name of a layer inside a driver: 1 to 128 characters of
/// `[A-Za-z0-9_.-]`, not starting with `.` or `-` (so it is always one safe
/// path component of the driver's root and never an option).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LayerId(String);

impl LayerId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 128;

    /// Check and wrap an id: 1 to [`Self::MAX_LEN`] bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                format!("layer id {s:?}"),
                format!("must be 1 to {} characters long", Self::MAX_LEN),
            ));
        }
        if s.starts_with('.') || s.starts_with('-') {
            return Err(Error::invalid(
                format!("layer id {s:?}"),
                "must not start with '.' or '-'",
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(Error::invalid(
                format!("layer id {s:?}"),
                format!("character {c:?} is not allowed (use A-Z a-z 0-9 _ . -)"),
            ));
        }
        Ok(LayerId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for LayerId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LayerId::new(s)
    }
}

impl TryFrom<String> for LayerId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        LayerId::new(s)
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.0
    }
}

impl AsRef<str> for LayerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_style_ids() {
        assert!(LayerId::new("a".repeat(64)).is_ok());
        assert!(LayerId::new("layer-1_x.y").is_ok());
    }

    #[test]
    fn refuses_path_tricks() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "-rf",
            ".hidden",
            "a b",
            "x\0",
            &"a".repeat(129),
        ] {
            let e = LayerId::new(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
