//! What a Hub-compatible origin answers in JSON, read and checked: a revision
//! (`/api/{type}s/{repo}/revision/{rev}`) and the pages of a tree listing
//! (`…/tree/{commit}?recursive=true`).
//!
//! A listing's page is read one entry at a time: only the files kept stay in memory, each
//! checked as it is read (a path that could escape the dataset, a size past the largest
//! blob, an LFS id that does not match the file's git id, more files or path bytes than a
//! manifest holds). Pure (serde and `commons_protocol` only): the `origin_json` fuzz target
//! (`fuzz/`) includes this very file and checks [`fuzz_property`] without building the node.

use std::fmt;

use commons_protocol::{
    hub::{git_blob_oid, lfs_pointer, ListedIds, MAX_LAST_MODIFIED_BYTES},
    manifest::{validate_path, MAX_ENTRIES, MAX_MANIFEST_BYTES},
    wire::MAX_BLOB_SIZE,
    GitOid, Sha256,
};
use serde::{
    de::{DeserializeSeed, Error as _, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

/// Bytes of file paths one listing may hold in all: what a manifest of them can encode.
pub const MAX_LISTING_PATH_BYTES: u64 = MAX_MANIFEST_BYTES / 2;

/// A commit a revision resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The commit.
    pub commit: GitOid,
    /// When it was made, as the origin says (`lastModified`).
    pub last_modified: Option<String>,
}

/// One file of a commit, as the origin lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Path in the repository (checked against the manifest's path rules).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The ids its content must have.
    pub ids: ListedIds,
}

#[derive(Deserialize)]
struct RevisionJson {
    sha: String,
    #[serde(rename = "lastModified", default)]
    last_modified: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntryJson {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    lfs: Option<LfsJson>,
}

#[derive(Deserialize)]
struct LfsJson {
    oid: String,
}

/// Reads a revision answer (`{"sha": "<commit>", "lastModified": "…", …}`). A
/// `lastModified` that is too long or not printable ASCII is left out.
pub(crate) fn parse_revision(body: &[u8]) -> Result<Revision, String> {
    let json: RevisionJson = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let commit = GitOid::parse(&json.sha).map_err(|e| e.to_string())?;
    let last_modified = json
        .last_modified
        .filter(|t| t.len() <= MAX_LAST_MODIFIED_BYTES && t.bytes().all(|b| b.is_ascii_graphic()));
    Ok(Revision {
        commit,
        last_modified,
    })
}

/// A tree listing being read, page by page.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    files: Vec<ListedFile>,
    path_bytes: u64,
}

impl Listing {
    /// Reads one page (a JSON array of entries): its files are checked and kept, its
    /// folders skipped.
    pub(crate) fn add_page(&mut self, body: &[u8]) -> Result<(), String> {
        let mut json = serde_json::Deserializer::from_slice(body);
        Page(self)
            .deserialize(&mut json)
            .and_then(|()| json.end())
            .map_err(|e| e.to_string())
    }

    /// Every file listed, sorted by path; an error if a path is listed twice.
    pub(crate) fn finish(mut self) -> Result<Vec<ListedFile>, String> {
        self.files
            .sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        if let Some(pair) = self.files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(format!("the listing names {:?} twice", pair[0].path));
        }
        Ok(self.files)
    }

    /// Checks one entry and keeps it if it is a file.
    fn add(&mut self, e: TreeEntryJson) -> Result<(), String> {
        if e.kind != "file" {
            return Ok(());
        }
        if self.files.len() == MAX_ENTRIES {
            return Err("more files than a manifest may list".into());
        }
        validate_path(&e.path).map_err(|p| format!("path {:?} {p}", e.path))?;
        self.path_bytes += e.path.len() as u64;
        if self.path_bytes > MAX_LISTING_PATH_BYTES {
            return Err("more path bytes than a manifest may hold".into());
        }
        if e.size > MAX_BLOB_SIZE {
            return Err(format!("{:?} claims {} bytes", e.path, e.size));
        }
        let git_oid = e
            .oid
            .as_deref()
            .ok_or_else(|| format!("{:?} has no oid", e.path))
            .and_then(|o| GitOid::parse(o).map_err(|err| err.to_string()))?;
        let lfs_sha256 = e
            .lfs
            .map(|l| Sha256::parse(&l.oid).map_err(|err| err.to_string()))
            .transpose()?;
        // An LFS file's tree id is its pointer's git id: both follow from the SHA-256 and
        // the size, so a listing cannot pair them otherwise.
        if let Some(sha256) = &lfs_sha256 {
            if git_blob_oid(lfs_pointer(sha256, e.size).as_bytes()) != git_oid {
                return Err(format!(
                    "{:?}: its oid is not the id of its LFS pointer",
                    e.path
                ));
            }
        }
        self.files.push(ListedFile {
            path: e.path,
            size: e.size,
            ids: ListedIds {
                git_oid,
                lfs_sha256,
            },
        });
        Ok(())
    }
}

/// One page, read into a [`Listing`] entry by entry.
struct Page<'a>(&'a mut Listing);

impl<'de> DeserializeSeed<'de> for Page<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Page<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tree entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while let Some(entry) = entries.next_element::<TreeEntryJson>()? {
            self.0.add(entry).map_err(A::Error::custom)?;
        }
        Ok(())
    }
}

/// The `origin_json` fuzz target's property, for one input: a first byte choosing a
/// revision answer (even) or a listing (odd), then the JSON; a listing's pages are
/// separated by NUL bytes (which JSON text never holds). What is accepted holds only paths
/// that stay inside the dataset (relative, no `..`, `.` or empty part, no NUL or
/// backslash), sizes and ids that agree, no more files or path bytes than a manifest holds,
/// sorted and each once; and it reads back the same from the JSON it is written as, however
/// that is cut into pages.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn fuzz_property(data: &[u8]) {
    let Some((&choice, json)) = data.split_first() else {
        return;
    };
    if choice % 2 == 0 {
        if let Ok(r) = parse_revision(json) {
            let t = r.last_modified.as_deref().unwrap_or("");
            assert!(t.len() <= MAX_LAST_MODIFIED_BYTES && t.bytes().all(|b| b.is_ascii_graphic()));
            let again =
                serde_json::json!({"sha": r.commit.to_string(), "lastModified": r.last_modified});
            assert_eq!(parse_revision(again.to_string().as_bytes()), Ok(r));
        }
        return;
    }
    let read = |pages: &mut dyn Iterator<Item = &[u8]>| {
        let mut listing = Listing::default();
        for page in pages {
            listing.add_page(page)?;
        }
        listing.finish()
    };
    let Ok(files) = read(&mut json.split(|&b| b == 0)) else {
        return;
    };
    assert!(files.len() <= MAX_ENTRIES);
    let path_bytes: u64 = files.iter().map(|f| f.path.len() as u64).sum();
    assert!(path_bytes <= MAX_LISTING_PATH_BYTES);
    for pair in files.windows(2) {
        assert!(
            pair[0].path.as_bytes() < pair[1].path.as_bytes(),
            "sorted, each once"
        );
    }
    for f in &files {
        assert!(
            !f.path.is_empty() && !f.path.starts_with('/'),
            "{:?}",
            f.path
        );
        assert!(!f.path.contains(['\0', '\\']), "{:?}", f.path);
        assert!(
            f.path.split('/').all(|c| !matches!(c, "" | "." | "..")),
            "{:?} escapes",
            f.path
        );
        assert!(f.size <= MAX_BLOB_SIZE);
        if let Some(sha) = &f.ids.lfs_sha256 {
            assert_eq!(
                git_blob_oid(lfs_pointer(sha, f.size).as_bytes()),
                f.ids.git_oid
            );
        }
    }
    // Written back as the Hub writes a listing: one page, or one page per file, backwards.
    let entry = |f: &ListedFile| {
        let mut e = serde_json::json!({
            "type": "file", "path": f.path, "size": f.size, "oid": f.ids.git_oid.to_string(),
        });
        if let Some(sha) = &f.ids.lfs_sha256 {
            e["lfs"] = serde_json::json!({"oid": sha.to_string(), "size": f.size});
        }
        e
    };
    let one_page = serde_json::Value::Array(files.iter().map(entry).collect()).to_string();
    assert_eq!(
        read(&mut std::iter::once(one_page.as_bytes())).as_ref(),
        Ok(&files)
    );
    let pages: Vec<String> = files
        .iter()
        .rev()
        .map(|f| serde_json::Value::Array(vec![entry(f)]).to_string())
        .collect();
    assert_eq!(read(&mut pages.iter().map(|p| p.as_bytes())), Ok(files));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_keeps_checked_files_sorted() {
        let sha = Sha256([7; 32]);
        let lfs_oid = git_blob_oid(lfs_pointer(&sha, 6).as_bytes());
        let mut listing = Listing::default();
        listing
            .add_page(
                format!(
                    r#"[{{"type":"directory","path":"d","oid":"{0}","size":0}},
                       {{"type":"file","path":"d/w.bin","size":6,"oid":"{lfs_oid}","lfs":{{"oid":"{sha}","size":6,"pointerSize":126}}}}]"#,
                    GitOid([1; 20])
                )
                .as_bytes(),
            )
            .expect("page 1");
        listing
            .add_page(
                format!(
                    r#"[{{"type":"file","path":"a.json","size":2,"oid":"{}"}}]"#,
                    GitOid([2; 20])
                )
                .as_bytes(),
            )
            .expect("page 2");
        let files = listing.finish().expect("listing");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.json", "d/w.bin"]);
        assert_eq!(files[1].ids.lfs_sha256, Some(sha));
    }

    #[test]
    fn bad_entries_are_refused_with_their_path() {
        let oid = GitOid([1; 20]);
        for (entry, says) in [
            (
                format!(r#"{{"type":"file","path":"../x","oid":"{oid}"}}"#),
                "../x",
            ),
            (
                format!(r#"{{"type":"file","path":"/etc/passwd","oid":"{oid}"}}"#),
                "/etc/passwd",
            ),
            (
                format!(r#"{{"type":"file","path":"a\u0000b","oid":"{oid}"}}"#),
                "a\\0b",
            ),
            (r#"{"type":"file","path":"a"}"#.to_string(), "has no oid"),
            (
                format!(
                    r#"{{"type":"file","path":"a","size":18446744073709551615,"oid":"{oid}"}}"#
                ),
                "claims",
            ),
            (
                format!(
                    r#"{{"type":"file","path":"a","oid":"{oid}","lfs":{{"oid":"{}"}}}}"#,
                    Sha256([3; 32])
                ),
                "LFS pointer",
            ),
        ] {
            let err = Listing::default()
                .add_page(format!("[{entry}]").as_bytes())
                .expect_err(&entry);
            assert!(err.contains(says), "{entry}: {err}");
        }
        let mut twice = Listing::default();
        let page = format!(r#"[{{"type":"file","path":"a","oid":"{oid}"}}]"#);
        twice.add_page(page.as_bytes()).expect("once");
        twice
            .add_page(page.as_bytes())
            .expect("twice, on another page");
        assert!(twice.finish().expect_err("twice").contains("twice"));
    }

    #[test]
    fn revisions_keep_a_printable_last_modified_only() {
        let sha = GitOid([5; 20]);
        let r = parse_revision(
            format!(r#"{{"sha":"{sha}","lastModified":"2026-01-02T03:04:05.000Z","id":"x"}}"#)
                .as_bytes(),
        )
        .expect("revision");
        assert_eq!(r.commit, sha);
        assert_eq!(r.last_modified.as_deref(), Some("2026-01-02T03:04:05.000Z"));
        let r = parse_revision(format!(r#"{{"sha":"{sha}","lastModified":"a\nb"}}"#).as_bytes())
            .expect("revision");
        assert_eq!(r.last_modified, None);
        assert!(parse_revision(br#"{"sha":"main"}"#).is_err());
    }

    #[test]
    fn the_fuzz_corpus_replays_clean() {
        crate::config::replay_fuzz_corpus("origin_json", fuzz_property);
    }
}
