//! The body of a `paths-info` request: which paths it asks about.
//!
//! Pure: no HTTP types, no I/O, so the `paths_info` fuzz target (`fuzz/`) includes this
//! very file and checks [`fuzz_property`] without building the node.

use serde::Deserialize;

/// Paths one `paths-info` request may ask for.
pub const MAX_PATHS_INFO_PATHS: usize = 10_000;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathsInfoError {
    /// A JSON body that is not `{"paths": [...]}`.
    #[error("the body must be a form (paths=a&paths=b) or JSON {{\"paths\": [...]}}: {0}")]
    BadJson(String),
    /// More paths than [`MAX_PATHS_INFO_PATHS`].
    #[error("{0} paths asked for; at most {MAX_PATHS_INFO_PATHS} at a time")]
    TooMany(usize),
}

/// A JSON `paths-info` body.
#[derive(Debug, Deserialize)]
struct PathsBody {
    paths: OneOrMany,
}

/// `"paths"`: a list, or one path.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

/// The paths a `paths-info` body asks for: a form (`paths=a&paths=b&expand=False`, what
/// `huggingface_hub` sends) or JSON (`{"paths": [...]}`).
pub(crate) fn parse_paths(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<String>, PathsInfoError> {
    let json = content_type.is_some_and(|t| t.contains("json"))
        || body.trim_ascii_start().starts_with(b"{");
    let paths = if json {
        match serde_json::from_slice::<PathsBody>(body) {
            Ok(PathsBody {
                paths: OneOrMany::Many(paths),
            }) => paths,
            Ok(PathsBody {
                paths: OneOrMany::One(path),
            }) => vec![path],
            Err(e) => return Err(PathsInfoError::BadJson(e.to_string())),
        }
    } else {
        form_urlencoded::parse(body)
            .filter(|(k, _)| k == "paths" || k == "paths[]")
            .map(|(_, v)| v.into_owned())
            .collect()
    };
    if paths.len() > MAX_PATHS_INFO_PATHS {
        return Err(PathsInfoError::TooMany(paths.len()));
    }
    Ok(paths)
}

/// What the `paths_info` fuzz target checks of any input: the answer is repeatable, never
/// more than [`MAX_PATHS_INFO_PATHS`] paths, and the paths read from a body written again as
/// a form and as JSON are read back the same.
#[allow(dead_code)] // Used by the fuzz target and the corpus replay test.
pub(crate) fn fuzz_property(data: &[u8]) {
    let (content_type, body) = match data.split_first() {
        Some((0, rest)) => (Some("application/json"), rest),
        Some((1, rest)) => (Some("application/x-www-form-urlencoded"), rest),
        _ => (None, data),
    };
    let answer = parse_paths(content_type, body);
    assert_eq!(parse_paths(content_type, body), answer, "repeatable");
    let Ok(paths) = answer else { return };
    assert!(paths.len() <= MAX_PATHS_INFO_PATHS);
    let mut form = form_urlencoded::Serializer::new(String::new());
    for path in &paths {
        form.append_pair("paths", path);
    }
    let form = form.finish();
    let json = serde_json::json!({ "paths": paths }).to_string();
    assert_eq!(
        parse_paths(None, form.as_bytes()).as_ref(),
        Ok(&paths),
        "{form}"
    );
    assert_eq!(parse_paths(None, json.as_bytes()), Ok(paths), "{json}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_info_reads_forms_and_json() {
        let form = b"paths=model.safetensors&paths=a%2Fb&paths=nope&expand=False";
        assert_eq!(
            parse_paths(Some("application/x-www-form-urlencoded"), form),
            Ok(vec![
                "model.safetensors".into(),
                "a/b".into(),
                "nope".into()
            ])
        );
        assert_eq!(
            parse_paths(Some("application/json"), br#"{"paths": ["x", "y/z"]}"#),
            Ok(vec!["x".into(), "y/z".into()])
        );
        assert_eq!(
            parse_paths(None, br#"{"paths": "x"}"#),
            Ok(vec!["x".into()])
        );
        assert!(matches!(
            parse_paths(Some("application/json"), br#"{"path": 1}"#),
            Err(PathsInfoError::BadJson(_))
        ));
        let many = "paths=a&".repeat(MAX_PATHS_INFO_PATHS + 1);
        assert_eq!(
            parse_paths(None, many.as_bytes()),
            Err(PathsInfoError::TooMany(MAX_PATHS_INFO_PATHS + 1))
        );
    }

    #[test]
    fn the_fuzz_corpus_replays_clean() {
        crate::config::replay_fuzz_corpus("paths_info", fuzz_property);
    }
}
