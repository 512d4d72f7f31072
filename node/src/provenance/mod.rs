//! Provenance on a node: publisher keys kept in the data dir ([`keys`]), dataset
//! signatures kept beside manifests and carried with them ([`signatures`]), and signed
//! names published to and resolved from the DHT ([`names`]). The formats and checks are
//! `commons_protocol::provenance`'s; this module adds the files, the store and the network.

pub mod keys;
pub mod names;
pub mod signatures;
