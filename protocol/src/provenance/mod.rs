//! Provenance: who published a dataset, checkable offline.
//!
//! - [`key`]: publisher keys (ECDSA P-256 by default, Ed25519), their text and PEM forms;
//! - [`bundle`]: dataset signatures as OpenSSF Model Signing bundles (`model.sig`);
//! - [`record`]: signed name records, the DHT's mutable pointers from a publisher's
//!   `org/name@rev` to a root;
//! - [`trust`]: which publisher may sign for which names.

/// Largest signature bundle read, in bytes: room for ~100,000 files (a 10,000-file bundle
/// is 1.9 MB). Here rather than in [`bundle`] because the wire format bounds by it too.
pub const MAX_SIGNATURE_BYTES: usize = 16 * 1024 * 1024;

pub mod bundle;
pub mod key;
pub mod record;
pub mod trust;

pub use bundle::{BundleError, SignatureBundle};
pub use key::{KeyAlgorithm, KeyError, PublicKey, SecretKey};
pub use record::{name_key, NameRecord, RecordError, SignedNameRecord};
pub use trust::{TrustError, TrustPolicy};
