//! Human-readable dataset names (`org/name`) and revisions (`main`, `v1.2`).
//!
//! A node binds a name and a revision to a dataset root so people (and Hugging Face
//! clients) can ask for `org/name` instead of a hash. Names are local to a node for now;
//! the rules here keep them safe to use in URLs, file names and keys: two parts of ASCII
//! letters, digits, `.`, `_` and `-`, never a path component like `..`.

use serde::{Deserialize, Serialize};

/// Longest part (`org` or `name`) of a dataset name, in bytes.
pub const MAX_NAME_PART: usize = 96;
/// Longest revision, in bytes.
pub const MAX_REVISION: usize = 128;
/// The revision used when none is given, as on the Hugging Face Hub.
pub const DEFAULT_REVISION: &str = "main";

/// Why a name or revision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not of the form `org/name`.
    #[error("{0:?} is not a dataset name: expected org/name (letters, digits, '.', '_', '-')")]
    Shape(String),
    /// A part breaks the character or length rules.
    #[error("{name:?}: {why}")]
    Part {
        /// The whole name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The revision breaks the rules.
    #[error("revision {revision:?}: {why}")]
    Revision {
        /// The revision.
        revision: String,
        /// What is wrong.
        why: String,
    },
}

/// A valid `org/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl DatasetName {
    /// Checks and wraps `org/name`.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (org, name) = text
            .split_once('/')
            .ok_or_else(|| NameError::Shape(text.to_string()))?;
        for part in [org, name] {
            check_part(part, MAX_NAME_PART).map_err(|why| NameError::Part {
                name: text.to_string(),
                why,
            })?;
        }
        Ok(Self(text.to_string()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DatasetName {
    type Error = NameError;
    fn try_from(text: String) -> Result<Self, NameError> {
        Self::parse(&text)
    }
}

impl From<DatasetName> for String {
    fn from(name: DatasetName) -> String {
        name.0
    }
}

/// Checks a revision (`main`, `v1.2`, a commit id).
pub fn check_revision(revision: &str) -> Result<(), NameError> {
    check_part(revision, MAX_REVISION).map_err(|why| NameError::Revision {
        revision: revision.to_string(),
        why,
    })
}

/// `org/name` with an optional `@revision` (default [`DEFAULT_REVISION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// The name.
    pub name: DatasetName,
    /// The revision.
    pub revision: String,
}

impl NameRef {
    /// Parses `org/name` or `org/name@revision`.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (name, revision) = text.split_once('@').unwrap_or((text, DEFAULT_REVISION));
        check_revision(revision)?;
        Ok(Self {
            name: DatasetName::parse(name)?,
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for NameRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.revision)
    }
}

fn check_part(part: &str, max: usize) -> Result<(), String> {
    if part.is_empty() {
        return Err("empty part".into());
    }
    if part.len() > max {
        return Err(format!("longer than {max} bytes"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    if part.starts_with(['.', '-']) || part.ends_with('.') || part.contains("..") {
        return Err("may not start with '.' or '-', end with '.', or contain '..'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_parse_and_bad_ones_say_why() {
        for good in ["org/name", "Big-Lab/llama_3.1-8B", "a/b"] {
            assert_eq!(DatasetName::parse(good).expect(good).as_str(), good);
        }
        for bad in [
            "name",
            "/name",
            "org/",
            "org/na/me",
            "../x",
            "org/..",
            "org/.hidden",
            "org/a b",
            "org/é",
            "org/-x",
            "org/x.",
        ] {
            let err = DatasetName::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad) || err.contains("org"), "{bad}: {err}");
        }
        assert!(DatasetName::parse(&format!("o/{}", "x".repeat(MAX_NAME_PART + 1))).is_err());
    }

    #[test]
    fn a_name_ref_carries_a_revision_or_main() {
        let r = NameRef::parse("org/name").expect("plain");
        assert_eq!((r.name.as_str(), r.revision.as_str()), ("org/name", "main"));
        let r = NameRef::parse("org/name@v1.2").expect("with revision");
        assert_eq!(r.revision, "v1.2");
        assert!(NameRef::parse("org/name@").is_err());
        assert!(NameRef::parse("org/name@a/b").is_err());
        assert!(NameRef::parse("org/name@..").is_err());
    }

    #[test]
    fn names_round_trip_through_serde_and_refuse_bad_input() {
        let name = DatasetName::parse("org/name").expect("valid");
        let bytes = postcard::to_allocvec(&name).expect("encodes");
        assert_eq!(postcard::from_bytes::<DatasetName>(&bytes), Ok(name));
        let bad = postcard::to_allocvec(&"../etc").expect("encodes");
        assert!(postcard::from_bytes::<DatasetName>(&bad).is_err());
    }
}
