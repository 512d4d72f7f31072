//! Sans-IO core of Commons.
//!
//! Everything a node *decides* lives here and is tested with plain byte slices: BLAKE3
//! content addresses ([`Hash`]), verified chunk trees over 16 KiB chunk groups ([`tree`]),
//! the dataset [`manifest`], copy-pasteable [`ticket`]s, the [`wire`] messages, serving
//! parts of a blob held in part ([`partial`]), dataset [`name`]s, and [`provenance`]:
//! publisher keys, signatures and signed name records; and the [`archive`] format of
//! bundles that carry datasets into air-gapped sites. Nothing in this crate opens a
//! socket, a database or a file: callers hand it readers and writers.

pub mod archive;
pub mod fuzzing;
pub mod hash;
pub mod hub;
pub mod manifest;
pub mod name;
pub mod partial;
pub mod provenance;
pub mod subtree;
pub mod ticket;
pub mod tree;
pub mod wire;

pub use hash::{Hash, HashParseError};
pub use hub::{GitOid, HubIds, RepoKind, Sha256, Upstream};
pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use name::{DatasetName, NameError, NameRef};
pub use ticket::{Ticket, TicketError, TicketKind};
