//! Scale models: the node's own decisions run for many nodes in virtual time.
//!
//! - [`swarm`]: many nodes fetching one blob from each other, each driven by the node's
//!   [`SwarmRound`](commons_node::transfer::swarm_machine::SwarmRound) state machine.
//! - [`lockstep`]: runs a model's partitions on threads, in windows of virtual time.
//! - [`calendar`]: the swarm model's event queue.
//! - [`dht`]: the node's Kademlia provider lookups and records for 1,000 to 100,000 DHT
//!   servers, with and without churn.

pub mod calendar;
pub mod dht;
pub mod lockstep;
pub mod swarm;
