//! The trust policy: which publisher key speaks for which names.
//!
//! Rules map a name pattern to one key: `"lab-x/corpus"` (one name), `"lab-x/*"` (an
//! organisation) or `"*"` (everything). The most specific rule wins, so a site can trust
//! one key for an organisation and another for one of its datasets. A name no rule covers
//! is outside the policy: it resolves as a local name only, never through the network.

use std::collections::BTreeMap;

use super::key::PublicKey;
use crate::{name::MAX_NAME_PART, DatasetName};

/// Rules one policy may hold, at most.
pub const MAX_TRUST_RULES: usize = 10_000;

/// Why a policy or a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// A rule's pattern is not `org/name`, `org/*` or `*`.
    #[error("trust rule {0:?}: expected org/name, org/* or *")]
    Pattern(String),
    /// A rule's key does not parse.
    #[error("trust rule {pattern:?}: {why}")]
    Key {
        /// The rule.
        pattern: String,
        /// What is wrong with its key.
        why: String,
    },
    /// Too many rules.
    #[error("{0} trust rules, more than {MAX_TRUST_RULES}")]
    TooMany(usize),
}

/// How specific a rule is (higher wins).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Pattern {
    Everything,
    Org(String),
    Name(DatasetName),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, TrustError> {
        let bad = || TrustError::Pattern(text.to_string());
        if text == "*" {
            return Ok(Self::Everything);
        }
        if let Some(org) = text.strip_suffix("/*") {
            // An org is valid when `org/x` is a valid name.
            DatasetName::parse(&format!("{org}/x")).map_err(|_| bad())?;
            if org.len() > MAX_NAME_PART {
                return Err(bad());
            }
            return Ok(Self::Org(org.to_string()));
        }
        DatasetName::parse(text).map(Self::Name).map_err(|_| bad())
    }

    fn covers(&self, name: &DatasetName) -> bool {
        match self {
            Self::Everything => true,
            Self::Org(org) => name.as_str().split_once('/').is_some_and(|(o, _)| o == org),
            Self::Name(n) => n == name,
        }
    }
}

/// A set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    rules: BTreeMap<Pattern, PublicKey>,
}

impl TrustPolicy {
    /// A policy from `(pattern, key text)` pairs, as a config file lists them.
    pub fn from_rules<'a>(
        rules: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TrustError> {
        let mut policy = Self::default();
        for (pattern, key) in rules {
            let key = PublicKey::parse(key).map_err(|e| TrustError::Key {
                pattern: pattern.to_string(),
                why: e.to_string(),
            })?;
            policy.rules.insert(Pattern::parse(pattern)?, key);
            if policy.rules.len() > MAX_TRUST_RULES {
                return Err(TrustError::TooMany(policy.rules.len()));
            }
        }
        Ok(policy)
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The key that speaks for `name`, from the most specific rule covering it.
    pub fn publisher_of(&self, name: &DatasetName) -> Option<&PublicKey> {
        self.rules
            .iter()
            .rev()
            .find(|(pattern, _)| pattern.covers(name))
            .map(|(_, key)| key)
    }

    /// The rules as `(pattern, key)` text, most specific first.
    pub fn rules(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .rev()
            .map(|(p, k)| {
                let pattern = match p {
                    Pattern::Everything => "*".to_string(),
                    Pattern::Org(org) => format!("{org}/*"),
                    Pattern::Name(n) => n.to_string(),
                };
                (pattern, k.to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{KeyAlgorithm, SecretKey};

    fn key(n: u8) -> String {
        SecretKey::from_seed(KeyAlgorithm::Ed25519, &[n; 32])
            .expect("key")
            .public()
            .to_string()
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let (a, b, c) = (key(1), key(2), key(3));
        let policy =
            TrustPolicy::from_rules([("*", a.as_str()), ("lab-x/*", &b), ("lab-x/corpus", &c)])
                .expect("policy");
        let of = |n: &str| {
            policy
                .publisher_of(&DatasetName::parse(n).expect("name"))
                .map(|k| k.to_string())
        };
        assert_eq!(of("lab-x/corpus"), Some(c.clone()));
        assert_eq!(of("lab-x/other"), Some(b.clone()));
        assert_eq!(of("lab-y/corpus"), Some(a.clone()));
        let narrow = TrustPolicy::from_rules([("lab-x/*", b.as_str())]).expect("policy");
        assert_eq!(
            narrow.publisher_of(&DatasetName::parse("lab-xy/z").expect("name")),
            None
        );
    }

    #[test]
    fn bad_rules_say_which() {
        let k = key(1);
        for pattern in ["lab-x", "lab-x/*/*", "../*", "*/corpus", ""] {
            assert_eq!(
                TrustPolicy::from_rules([(pattern, k.as_str())]),
                Err(TrustError::Pattern(pattern.into()))
            );
        }
        assert!(matches!(
            TrustPolicy::from_rules([("lab-x/*", "p256:00")]),
            Err(TrustError::Key { .. })
        ));
    }
}
