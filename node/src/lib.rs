//! The Commons node as a library.
//!
//! - [`store`]: the RocksDB store of blobs, outboards, datasets and pins;
//! - [`export`]: writing blobs and datasets back to the file system, verified;
//! - [`identity`]: the node's ed25519 key, which is its libp2p `PeerId`;
//! - [`net`]: the one libp2p host (QUIC) that carries everything;
//! - [`discovery`]: Kademlia provider records for roots, the paced publisher, holders;
//! - [`config`]: the node's TOML configuration file;
//! - [`transfer`]: serving and fetching verified ranges over `/commons/transfer/1`;
//! - [`fetch`]: `get`, a blob or dataset from the providers a ticket names;
//! - [`ops`]: add, list, get, export as plain requests and results;
//! - [`daemon`]: the long-running node, and `admin`, its local control socket;
//! - [`mirror`]: the datasets a mirror keeps; [`gateway`]: read-only HTTP (and Hugging Face) access.
//!
//! The `commons` binary is a thin layer over this crate.

#[cfg(unix)]
pub mod admin;
pub mod bans;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod export;
pub mod fetch;
pub mod gateway;
pub mod identity;
pub mod metrics;
pub mod mirror;
pub mod net;
pub mod ops;
pub mod status;
pub mod store;
pub mod transfer;

pub use store::{Store, StoreError, StoreOptions};
