//! The HTTP side of a Hub-compatible origin: resolve a revision to a commit, list a
//! commit's files with their ids, and stream one file. Only the calls `huggingface_hub`
//! itself makes (`/api/{type}s/{repo}/revision/{rev}`, `…/tree/{commit}?recursive=true`
//! with `Link` pagination, `/{repo}/resolve/{commit}/{path}`).
//!
//! Nothing an origin says sizes an allocation beyond [`MAX_API_RESPONSE_BYTES`] per answer
//! and [`MAX_ENTRIES`](commons_protocol::manifest::MAX_ENTRIES) files per listing; `Link`s
//! are followed only to the same origin (the token goes nowhere else), and reqwest drops
//! the `Authorization` header on a redirect to another host (an LFS file's CDN).

use std::time::Duration;

use commons_protocol::{hub::validate_repo_id, GitOid, RepoKind};
use reqwest::{header, StatusCode, Url};

mod listing;

use listing::Listing;
pub use listing::{ListedFile, Revision, MAX_LISTING_PATH_BYTES};

/// Largest JSON answer read from an origin (one revision or one page of a listing).
pub const MAX_API_RESPONSE_BYTES: usize = 64 << 20;
/// Pages of one tree listing followed, at most.
pub const MAX_LISTING_PAGES: usize = 10_000;
/// Time to connect to an origin.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time an origin may stay silent in the middle of an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time one metadata answer (a revision, one page of a listing) may take in all: an origin
/// trickling bytes cannot hold an import forever.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(300);

/// Why talking to an origin failed. Messages name the origin's URL (never the token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// The origin answered with an error status.
    #[error("{url} answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// What was asked (no query).
        url: String,
        /// The HTTP status.
        status: u16,
        /// The Hub's `X-Error-Code`, if any.
        code: Option<String>,
        /// What it means for the user.
        message: String,
    },
    /// The origin could not be reached or the answer broke off.
    #[error("{url}: {reason}")]
    Transport {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The origin's answer is not what the Hub's API sends, or exceeds a limit.
    #[error("{url}: unexpected answer: {reason}")]
    Answer {
        /// What was asked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The origin address or a repository id is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// A Hub-compatible server, with the token for it (if any).
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("HubClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl HubClient {
    /// A client for the origin at `base` (`https://huggingface.co`, or any Hub-compatible
    /// server), sending `token` as a bearer token to it.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, OriginError> {
        let base = Url::parse(base.trim_end_matches('/'))
            .map_err(|e| OriginError::Invalid(format!("origin {base:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(OriginError::Invalid(format!(
                "origin {base} must be an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("commons/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OriginError::Invalid(format!("cannot set up HTTP: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The origin's address.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str) -> Result<Url, OriginError> {
        Url::parse(&format!("{}{path}", self.base()))
            .map_err(|e| OriginError::Invalid(format!("bad URL for {path:?}: {e}")))
    }

    async fn send(&self, url: Url) -> Result<reqwest::Response, OriginError> {
        self.send_with(url, None).await
    }

    async fn send_with(
        &self,
        url: Url,
        range: Option<String>,
    ) -> Result<reqwest::Response, OriginError> {
        let shown = shown(&url);
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(range) = range {
            request = request.header(header::RANGE, range);
        }
        let response = request.send().await.map_err(|e| OriginError::Transport {
            url: shown.clone(),
            reason: describe(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = response
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(64).collect::<String>());
        let message = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                "the repository is gated or private: give a token (token_file) that may read it"
                    .to_string()
            }
            StatusCode::NOT_FOUND => match code.as_deref() {
                Some("RevisionNotFound") => "no such revision".to_string(),
                Some("EntryNotFound") => "no such file".to_string(),
                _ => "no such repository (or it is private)".to_string(),
            },
            _ => "the origin refused".to_string(),
        };
        Err(OriginError::Status {
            url: shown,
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// The commit `revision` (a branch, tag or commit id) of `repo` points to.
    pub async fn revision(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
    ) -> Result<Revision, OriginError> {
        validate_repo_id(repo).map_err(|e| OriginError::Invalid(e.to_string()))?;
        let url = self.url(&format!(
            "/api/{}/{repo}/revision/{}",
            kind.plural(),
            encode_segment(revision)
        ))?;
        let shown = shown(&url);
        let body = read_limited(self.send(url).await?, &shown).await?;
        listing::parse_revision(&body).map_err(|e| answer(&shown, e))
    }

    /// Every file of `repo` at `commit`, sorted by path, following `Link` pagination.
    pub async fn files(
        &self,
        kind: RepoKind,
        repo: &str,
        commit: &GitOid,
    ) -> Result<Vec<ListedFile>, OriginError> {
        validate_repo_id(repo).map_err(|e| OriginError::Invalid(e.to_string()))?;
        let mut next = Some(self.url(&format!(
            "/api/{}/{repo}/tree/{commit}?recursive=true&expand=false",
            kind.plural()
        ))?);
        let mut listing = Listing::default();
        let mut visited = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            let shown = shown(&url);
            if !visited.insert(url.to_string()) {
                return Err(answer(&shown, "its pages link back to a page already read"));
            }
            if visited.len() > MAX_LISTING_PAGES {
                return Err(answer(&shown, "more pages than the limit"));
            }
            let response = self.send(url.clone()).await?;
            next = next_link(&url, response.headers())
                .map(|link| self.same_origin(link, &shown))
                .transpose()?;
            let body = read_limited(response, &shown).await?;
            listing
                .add_page(&body)
                .map_err(|reason| answer(&shown, reason))?;
        }
        listing.finish().map_err(|reason| OriginError::Answer {
            url: self.base().to_string(),
            reason,
        })
    }

    /// A `Link` target, if it stays on this origin.
    fn same_origin(&self, link: Url, shown: &str) -> Result<Url, OriginError> {
        if link.origin() == self.base.origin() {
            Ok(link)
        } else {
            Err(answer(
                shown,
                format!(
                    "its next page is on another server ({})",
                    link.origin().ascii_serialization()
                ),
            ))
        }
    }

    /// Starts the download of `path` of `repo` at `commit` from byte `from` (following the
    /// redirect of an LFS file to where its bytes are). Returns the answer and the offset
    /// its body starts at: `from`, or 0 when the origin sends the whole file instead.
    pub async fn file(
        &self,
        kind: RepoKind,
        repo: &str,
        commit: &GitOid,
        path: &str,
        from: u64,
    ) -> Result<(reqwest::Response, u64), OriginError> {
        let url = self.file_url(kind, repo, commit, path)?;
        let range = (from > 0).then(|| format!("bytes={from}-"));
        let response = self.send_with(url, range).await?;
        let starts_at_from = response.status() == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {from}-")));
        Ok((response, if starts_at_from { from } else { 0 }))
    }

    /// Where `path` of `repo` at `commit` is downloaded from.
    pub fn file_url(
        &self,
        kind: RepoKind,
        repo: &str,
        commit: &GitOid,
        path: &str,
    ) -> Result<Url, OriginError> {
        validate_repo_id(repo).map_err(|e| OriginError::Invalid(e.to_string()))?;
        let prefix = match kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "/datasets",
        };
        let path: Vec<String> = path.split('/').map(encode_segment).collect();
        self.url(&format!(
            "{prefix}/{repo}/resolve/{commit}/{}",
            path.join("/")
        ))
    }
}

/// The `rel="next"` target of a `Link` header, resolved against `url`.
fn next_link(url: &Url, headers: &header::HeaderMap) -> Option<Url> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|part| {
            part.split(';')
                .skip(1)
                .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
        })
        .and_then(|part| {
            let target = part.split(';').next()?.trim();
            let target = target.strip_prefix('<')?.strip_suffix('>')?;
            url.join(target).ok()
        })
}

/// Reads a JSON answer, refusing more than [`MAX_API_RESPONSE_BYTES`].
async fn read_limited(
    mut response: reqwest::Response,
    shown: &str,
) -> Result<Vec<u8>, OriginError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_API_RESPONSE_BYTES as u64)
    {
        return Err(answer(shown, "answer larger than the limit"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| OriginError::Transport {
        url: shown.to_string(),
        reason: describe(&e),
    })? {
        if body.len() + chunk.len() > MAX_API_RESPONSE_BYTES {
            return Err(answer(shown, "answer larger than the limit"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn answer(shown: &str, reason: impl std::fmt::Display) -> OriginError {
    OriginError::Answer {
        url: shown.to_string(),
        reason: reason.to_string(),
    }
}

/// A URL as shown in messages: without its query.
pub(crate) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// A reqwest error with its causes, in one line.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

/// Percent-encodes one path segment (what the Hub's client does with revisions and file
/// path parts).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_and_resolved() {
        let url = Url::parse("http://o.test/api/models/a/b/tree/x?recursive=true").expect("url");
        let mut h = header::HeaderMap::new();
        h.insert(
            header::LINK,
            header::HeaderValue::from_static(
                "<http://o.test/api/models/a/b/tree/x?cursor=2>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&url, &h).map(|u| u.to_string()),
            Some("http://o.test/api/models/a/b/tree/x?cursor=2".to_string())
        );
        h.insert(
            header::LINK,
            header::HeaderValue::from_static("</p?cursor=3>; rel=\"prev\", </q?c=4>; rel=next"),
        );
        assert_eq!(
            next_link(&url, &h).map(|u| u.to_string()),
            Some("http://o.test/q?c=4".to_string())
        );
        assert!(next_link(&url, &header::HeaderMap::new()).is_none());
    }

    #[test]
    fn links_to_another_server_are_refused() {
        let client = HubClient::new("http://o.test", Some("secret".into())).expect("client");
        let elsewhere = Url::parse("http://evil.test/steal").expect("url");
        let err = client
            .same_origin(elsewhere, "http://o.test/api")
            .expect_err("refused");
        assert!(err.to_string().contains("another server"), "{err}");
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[test]
    fn file_urls_encode_each_part() {
        let client = HubClient::new("http://o.test/", None).expect("client");
        let commit = GitOid([0xab; 20]);
        let url = client
            .file_url(RepoKind::Dataset, "acme/data", &commit, "dir/a b#.csv")
            .expect("url");
        assert_eq!(
            url.as_str(),
            format!("http://o.test/datasets/acme/data/resolve/{commit}/dir/a%20b%23.csv")
        );
        assert!(HubClient::new("ftp://o.test", None).is_err());
        assert!(client
            .file_url(RepoKind::Model, "../x", &commit, "a")
            .is_err());
    }
}
