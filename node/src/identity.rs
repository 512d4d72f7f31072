//! The node's identity: an ed25519 keypair kept in the data dir.
//!
//! Its public key is the node's libp2p `PeerId`, which peers use to dial it and which
//! libp2p's TLS binds every connection to. Created on first use, stored with mode 0600, and
//! never regenerated silently: a damaged key file is an error, not a new identity.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "node.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error("{path} does not hold a valid node key; move it away to create a new identity")]
    Damaged {
        /// The key file.
        path: PathBuf,
    },
}

/// Loads the node key from `data_dir`, creating it (mode 0600) on first use.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let io_err = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| IdentityError::Damaged { path: path.clone() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io_err)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io_err(io::Error::other(e)))?;
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).map_err(io_err)?;
            file.write_all(&bytes).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("create");
        let again = load_or_create(dir.path()).expect("load");
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(KEY_FILE), b"garbage").expect("write");
        let err = load_or_create(dir.path()).expect_err("damaged");
        assert!(matches!(err, IdentityError::Damaged { .. }), "{err}");
    }
}
