//! Scale models: the node's own decisions run for many nodes in virtual time.
//!
//! - [`swarm`]: many nodes fetching one blob from each other, each driven by the node's
//!   [`SwarmRound`](commons_node::transfer::swarm_machine::SwarmRound) state machine.

pub mod swarm;
