//! The Commons node as a library.
//!
//! - [`api`]: the typed requests, replies and errors every caller uses, and the [`Client`]
//!   that runs them in-process or on the running node; [`ops`]: how a node runs each one;
//! - [`node`]: the node assembled once (store, host, publisher, counters, peer scores) for the
//!   daemon and for one-shot commands;
//! - [`store`]: the RocksDB store of blobs, outboards, datasets and pins;
//! - [`export`]: writing blobs and datasets back to the file system, verified;
//! - [`identity`]: the node's ed25519 key, which is its libp2p `PeerId`;
//! - [`net`]: the one libp2p host (QUIC) that carries everything;
//! - [`discovery`]: Kademlia provider records for roots, the paced publisher, holders;
//! - [`config`]: the node's TOML configuration file;
//! - [`transfer`]: serving and fetching verified ranges over `/commons/transfer/1`;
//! - [`fetch`]: `get`, a blob or dataset from the providers a ticket names;
//! - [`daemon`]: the long-running node, and `admin`, the socket it serves the API on;
//! - [`mirror`]: the datasets a mirror keeps; [`gateway`]: read-only HTTP (and Hugging Face) access.
//!
//! The `commons` binary is a thin layer over this crate.

#[cfg(unix)]
pub mod admin;
pub mod api;
pub mod bundle;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod error;
pub mod export;
pub mod fetch;
pub mod gateway;
pub mod hf_cache;
pub mod identity;
pub mod include;
pub mod metrics;
pub mod mirror;
pub mod net;
pub mod node;
pub mod ops;
pub mod origin;
pub mod progress;
pub mod provenance;
pub mod resolve;
pub mod scores;
pub mod status;
pub mod store;
pub mod transfer;

pub use api::Client;
pub use node::Node;
pub use store::{Store, StoreError, StoreOptions};
