//! What a user names, as a hash: a full hash, a unique prefix, a ticket or a name bound on
//! this node.

use commons_protocol::{Hash, NameRef, Ticket};

use crate::store::{Store, StoreError};

/// Why a user's hash, prefix or ticket names nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// A ticket that does not parse.
    #[error("invalid ticket: {0}")]
    Ticket(#[from] commons_protocol::TicketError),
    /// A name that does not parse.
    #[error(transparent)]
    Name(#[from] commons_protocol::NameError),
    /// A name bound to nothing here.
    #[error("no dataset is named {0} on this node (see `commons name ls`)")]
    NoName(String),
    /// A hex prefix no stored hash starts with.
    #[error("no blob or dataset in the store starts with '{0}'")]
    NoMatch(String),
    /// Neither a hash nor a ticket.
    #[error("'{0}' is neither a hash (64 hex characters, or a unique prefix of at least 4), a ticket (commons1…) nor a name (org/name)")]
    NotAHash(String),
    /// The store failed (or the prefix is ambiguous).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns a hash, a unique hash prefix (≥ 4 hex characters) or a ticket into a hash.
pub fn resolve(store: &Store, target: &str) -> Result<Hash, ResolveError> {
    let target = target.trim();
    if Ticket::looks_like(target) {
        return Ok(target.parse::<Ticket>()?.hash);
    }
    if target.contains('/') {
        let name = NameRef::parse(target)?;
        return store
            .resolve_name(&name.name, &name.revision)?
            .ok_or_else(|| ResolveError::NoName(format!("{}@{}", name.name, name.revision)));
    }
    if let Ok(hash) = target.parse::<Hash>() {
        return Ok(hash);
    }
    match store.resolve_prefix(target)? {
        Some(hash) => Ok(hash),
        None if target.len() >= 4 && target.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(ResolveError::NoMatch(target.to_string()))
        }
        None => Err(ResolveError::NotAHash(target.to_string())),
    }
}
