//! A Hub repository as a source of data: which repository, which revision, on which
//! origin, with which token. Used by `commons add hf://…`, mirror entries and the API
//! (kept free of the node so the API can name it).

use std::path::PathBuf;

use commons_protocol::{hub::validate_repo_id, Hash, RepoKind};
use serde::{Deserialize, Serialize};

/// The Hugging Face Hub.
pub const DEFAULT_ORIGIN: &str = "https://huggingface.co";
/// How often a mirror checks whether a followed revision moved (1 hour).
pub const DEFAULT_FOLLOW_INTERVAL_SECS: u64 = 3600;
/// Shortest follow interval accepted. One check costs the origin one small API call; tests
/// use 1 s, a mirror of the public Hub should keep the default.
pub const MIN_FOLLOW_INTERVAL_SECS: u64 = 1;
/// Largest token file read.
pub const MAX_TOKEN_BYTES: u64 = 4096;

/// A Hub repository at a revision, on an origin:
/// `{ hf = "org/name", type = "model|dataset", revision = "main", origin = "https://…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// The repository id, `org/name`.
    pub hf: String,
    /// Model or dataset repository (`model` unless given).
    #[serde(rename = "type", default = "default_kind")]
    pub kind: RepoKind,
    /// A branch, tag or commit (`main` unless given). A branch is followed by a mirror.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// The Hub-compatible server (the Hugging Face Hub unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// A file holding the token for gated or private repositories; sent only to `origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Seconds between checks of whether the revision moved (mirrors; 3600 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Also bind this local name (`org/name`) at the revision (defaults to the repository id
    /// when that is a valid name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn default_kind() -> RepoKind {
    RepoKind::Model
}

fn default_revision() -> String {
    commons_protocol::name::DEFAULT_REVISION.to_string()
}

impl HubSource {
    /// Parses `hf://[models/|datasets/]org/name[@revision]` (the form `HfFileSystem` uses).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("hf://")
            .ok_or_else(|| format!("{url:?} is not an hf:// address"))?;
        let (kind, rest) = if let Some(r) = rest.strip_prefix("datasets/") {
            (RepoKind::Dataset, r)
        } else if let Some(r) = rest.strip_prefix("models/") {
            (RepoKind::Model, r)
        } else {
            (RepoKind::Model, rest)
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, rev.to_string()),
            None => (rest, default_revision()),
        };
        let source = Self {
            hf: repo.to_string(),
            kind,
            revision,
            origin: None,
            token_file: None,
            interval: None,
            name: None,
        };
        source.check()?;
        Ok(source)
    }

    /// Checks the repository id, revision and interval.
    pub fn check(&self) -> Result<(), String> {
        validate_repo_id(&self.hf).map_err(|e| e.to_string())?;
        if self.revision.is_empty()
            || self.revision.len() > 256
            || self.revision.chars().any(char::is_control)
        {
            return Err(format!("{:?} is not a revision", self.revision));
        }
        if self.interval.is_some_and(|i| i < MIN_FOLLOW_INTERVAL_SECS) {
            return Err("interval must be at least 1 second".into());
        }
        Ok(())
    }

    /// The origin's address.
    pub fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or(DEFAULT_ORIGIN)
    }

    /// How this source is named in messages and mirror listings:
    /// `hf://datasets/org/name@revision` (with the origin when not the Hub's).
    pub fn label(&self) -> String {
        let kind = match self.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        let at = match &self.origin {
            Some(o) if o.trim_end_matches('/') != DEFAULT_ORIGIN => format!(" from {o}"),
            _ => String::new(),
        };
        format!("hf://{kind}{}@{}{at}", self.hf, self.revision)
    }

    /// Reads the token file, if one is set (trimmed; never logged).
    pub fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let cannot = |e: &dyn std::fmt::Display| {
            format!("cannot read the token file {}: {e}", path.display())
        };
        let meta = std::fs::metadata(path).map_err(|e| cannot(&e))?;
        if meta.len() > MAX_TOKEN_BYTES {
            return Err(cannot(&"larger than 4 KiB"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| cannot(&e))?;
        let token = text.trim();
        if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(cannot(&"it does not hold one token"));
        }
        Ok(Some(token.to_string()))
    }
}

/// What an import did: the reply of `commons add hf://…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// The dataset's root.
    pub hash: Hash,
    /// The source, as `hf://…@revision`.
    pub source: String,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Files in the dataset.
    pub files: u64,
    /// Their total size.
    pub size: u64,
    /// File bytes downloaded from the origin by this import.
    pub origin_bytes: u64,
    /// File bytes received from peers by this import.
    pub peer_bytes: u64,
    /// Files that were held already (from earlier imports or commits).
    pub held_files: u64,
    /// Peers whose manifest or data was refused, and why.
    pub refused_peers: Vec<String>,
    /// The local names bound (`org/name@revision`, `org/name@commit`).
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_addresses_parse() {
        let s = HubSource::parse("hf://acme/model").expect("parses");
        assert_eq!(
            (s.kind, s.hf.as_str(), s.revision.as_str()),
            (RepoKind::Model, "acme/model", "main")
        );
        let d = HubSource::parse("hf://datasets/acme/data@v1.0").expect("parses");
        assert_eq!((d.kind, d.revision.as_str()), (RepoKind::Dataset, "v1.0"));
        assert_eq!(d.label(), "hf://datasets/acme/data@v1.0");
        for bad in [
            "acme/model",
            "hf://",
            "hf://a/b/c",
            "hf://../x",
            "hf://a/b@",
        ] {
            assert!(HubSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_mirror_table_parses_with_defaults() {
        let s: HubSource = toml::from_str("hf = \"acme/data\"\ntype = \"dataset\"").expect("toml");
        assert_eq!(s.origin(), DEFAULT_ORIGIN);
        assert_eq!(s.revision, "main");
        assert!(toml::from_str::<HubSource>("hf = \"acme/data\"\nrevison = \"x\"").is_err());
    }
}
