//! Publisher keys kept in `<data dir>/keys/<name>.key`: PKCS#8 PEM, mode 0600, in a 0700
//! folder. Plain PEM files, so the same key works with `openssl` and `model_signing`.
//! Never the node's libp2p identity (`node.key`): a publisher's key may sign on many
//! nodes, and moving a node must not move who vouches for data.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use commons_protocol::provenance::{KeyAlgorithm, PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorKind};

/// The folder inside the data dir.
pub const KEYS_DIR: &str = "keys";
/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;

/// A key this node holds, as `key ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its local name.
    pub name: String,
    /// `p256` or `ed25519`.
    pub algorithm: KeyAlgorithm,
    /// The public key's text form (what trust policies and `--publisher` take).
    pub public_key: String,
    /// The PEM file holding the secret key.
    pub path: PathBuf,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidInput,
            format!(
                "key name {name:?}: use up to {MAX_KEY_NAME} letters, digits, '.', '_' or '-', \
                 not starting with '.' or '-'"
            ),
        ))
    }
}

fn io_error(path: &Path, e: io::Error) -> ApiError {
    ApiError::new(ErrorKind::Io, format!("{}: {e}", path.display()))
}

fn key_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(KEYS_DIR).join(format!("{name}.key"))
}

fn info(name: &str, key: &SecretKey, path: PathBuf) -> KeyInfo {
    let public = key.public();
    KeyInfo {
        name: name.to_string(),
        algorithm: public.algorithm(),
        public_key: public.to_string(),
        path,
    }
}

/// Creates a new key `name` (refusing to replace one).
pub fn generate(data_dir: &Path, name: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, ApiError> {
    let key = loop {
        if let Some(key) = SecretKey::from_seed(algorithm, &rand::random::<[u8; 32]>()) {
            break key;
        }
    };
    store(data_dir, name, &key)
}

/// Stores an existing PEM private key (PKCS#8, or SEC1 as `openssl ecparam` writes) as
/// `name`.
pub fn import(data_dir: &Path, name: &str, pem: &str) -> Result<KeyInfo, ApiError> {
    let key = SecretKey::from_pem(pem)
        .map_err(|e| ApiError::new(ErrorKind::InvalidInput, e.to_string()))?;
    store(data_dir, name, &key)
}

fn store(data_dir: &Path, name: &str, key: &SecretKey) -> Result<KeyInfo, ApiError> {
    check_name(name)?;
    let dir = data_dir.join(KEYS_DIR);
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(|e| io_error(&dir, e))?;
    let path = key_path(data_dir, name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            ApiError::new(
                ErrorKind::InvalidInput,
                format!("a key named {name:?} exists already ({})", path.display()),
            )
        } else {
            io_error(&path, e)
        }
    })?;
    file.write_all(key.to_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&path, e))?;
    Ok(info(name, key, path))
}

/// Loads key `name`.
pub fn load(data_dir: &Path, name: &str) -> Result<SecretKey, ApiError> {
    check_name(name)?;
    let path = key_path(data_dir, name);
    let pem = match fs::read_to_string(&path) {
        Ok(pem) => zeroize::Zeroizing::new(pem),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no key named {name:?} (see `commons key ls`, `commons key generate`)"),
            ))
        }
        Err(e) => return Err(io_error(&path, e)),
    };
    SecretKey::from_pem(&pem)
        .map_err(|e| ApiError::new(ErrorKind::Corrupt, format!("{}: {e}", path.display())))
}

/// Every key held, by name.
pub fn list(data_dir: &Path) -> Result<Vec<KeyInfo>, ApiError> {
    let dir = data_dir.join(KEYS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir, e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&dir, e))?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".key")) else {
            continue;
        };
        match load(data_dir, name) {
            Ok(key) => keys.push(info(name, &key, entry.path())),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable key file"),
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(keys)
}

/// A publisher as a user names one: a key text (`p256:…`), a PEM public key file, or the
/// name of a key held here.
pub fn parse_publisher(data_dir: &Path, text: &str) -> Result<PublicKey, ApiError> {
    if let Ok(key) = PublicKey::parse(text) {
        return Ok(key);
    }
    if text.contains("PRIVATE KEY") {
        // A secret key given where a public one belongs: its public half, never echoed.
        return SecretKey::from_pem(text).map(|k| k.public()).map_err(|_| {
            ApiError::new(
                ErrorKind::InvalidInput,
                "the publisher given is a private key that does not parse (give a public key)",
            )
        });
    }
    if check_name(text).is_ok() && key_path(data_dir, text).is_file() {
        return load(data_dir, text).map(|k| k.public());
    }
    let path = Path::new(text);
    if path.is_file() {
        let pem = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        return PublicKey::parse(&pem)
            .or_else(|_| SecretKey::from_pem(&pem).map(|k| k.public()))
            .map_err(|e| {
                ApiError::new(ErrorKind::InvalidInput, format!("{}: {e}", path.display()))
            });
    }
    // Echoed only when short: a long text may be a key file's contents.
    let shown = if text.len() <= 128 && !text.contains('\n') {
        format!("{text:?}")
    } else {
        format!("of {} bytes", text.len())
    };
    Err(ApiError::new(
        ErrorKind::InvalidInput,
        format!(
            "publisher {shown} is neither a key (p256:<hex>, ed25519:<hex>, or a PEM public \
             key), a PEM file, nor a key held here"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_files_that_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "lab-x", KeyAlgorithm::P256).expect("generate");
        let ed = generate(dir.path(), "fast", KeyAlgorithm::Ed25519).expect("generate");
        assert_eq!(
            list(dir.path()).expect("ls"),
            vec![ed.clone(), made.clone()]
        );
        assert_eq!(
            load(dir.path(), "lab-x")
                .expect("load")
                .public()
                .to_string(),
            made.public_key
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&made.path), 0o600);
            assert_eq!(mode(&dir.path().join(KEYS_DIR)), 0o700);
        }
        let again = generate(dir.path(), "lab-x", KeyAlgorithm::P256).expect_err("exists");
        assert!(
            again.message.contains("exists already"),
            "{}",
            again.message
        );
        for bad in ["", "../x", ".hidden", "a/b", &"k".repeat(MAX_KEY_NAME + 1)] {
            assert!(
                generate(dir.path(), bad, KeyAlgorithm::P256).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            load(dir.path(), "nope").expect_err("none").kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            parse_publisher(dir.path(), "lab-x")
                .expect("by name")
                .to_string(),
            made.public_key
        );
        assert_eq!(
            parse_publisher(dir.path(), &made.public_key)
                .expect("by text")
                .to_string(),
            made.public_key
        );
        assert!(parse_publisher(dir.path(), "p256:zz").is_err());
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = generate(dir.path(), "k", KeyAlgorithm::P256).expect("generate");
        fs::write(
            &made.path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("damage");
        let err = load(dir.path(), "k").expect_err("damaged");
        assert_eq!(err.kind, ErrorKind::Corrupt);
        assert!(import(dir.path(), "imp", "not a key").is_err());
    }
}
