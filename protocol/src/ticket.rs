//! Tickets: one copy-pasteable string that says what to fetch and from whom.
//!
//! `commons1` + lowercase unpadded base32 of a postcard-encoded body: the kind (blob or
//! dataset), the hash, and optional provider addresses (libp2p multiaddrs ending in
//! `/p2p/<peer id>`, kept as strings here: checking them is the network layer's job).
//! The `1` in the prefix is the format version. Format: `docs/formats.md`.

use std::{fmt, str::FromStr};

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};

use crate::Hash;

/// Prefix of every version-1 ticket.
pub const TICKET_PREFIX: &str = "commons1";
/// Longest ticket string accepted, in bytes.
pub const MAX_TICKET_LEN: usize = 8192;
/// Most provider addresses one ticket may carry.
pub const MAX_TICKET_PROVIDERS: usize = 16;
/// Longest provider address accepted, in bytes.
pub const MAX_PROVIDER_ADDR_LEN: usize = 256;

/// What a ticket's hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketKind {
    /// A single blob (a file's bytes).
    Blob,
    /// A dataset: the hash is its manifest's.
    Dataset,
}

impl fmt::Display for TicketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blob => "blob",
            Self::Dataset => "dataset",
        })
    }
}

/// Everything needed to fetch a blob or dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Whether `hash` is a blob or a dataset.
    pub kind: TicketKind,
    /// The content address.
    pub hash: Hash,
    /// Where to find it (may be empty: discovery fills in).
    pub providers: Vec<String>,
}

/// Why a string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Does not start with [`TICKET_PREFIX`].
    #[error("not a Commons ticket (tickets start with '{TICKET_PREFIX}')")]
    WrongPrefix,
    /// Longer than [`MAX_TICKET_LEN`].
    #[error("ticket is {0} bytes long, more than the limit of {MAX_TICKET_LEN}")]
    TooLong(usize),
    /// The body is not base32 or does not decode.
    #[error("ticket is damaged (was it copied whole?)")]
    Damaged,
    /// Too many or too long provider addresses.
    #[error("ticket carries too many or too long provider addresses")]
    TooManyProviders,
}

impl Ticket {
    /// A ticket with no provider addresses.
    pub fn new(kind: TicketKind, hash: Hash) -> Self {
        Self {
            kind,
            hash,
            providers: Vec::new(),
        }
    }

    /// Whether `s` is meant as a ticket (it starts with [`TICKET_PREFIX`], any case), so a
    /// caller can tell tickets from hashes before parsing either.
    pub fn looks_like(s: &str) -> bool {
        s.len() > TICKET_PREFIX.len()
            && s.get(..TICKET_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(TICKET_PREFIX))
    }

    fn check_limits(&self) -> Result<(), TicketError> {
        if self.providers.len() > MAX_TICKET_PROVIDERS
            || self
                .providers
                .iter()
                .any(|p| p.len() > MAX_PROVIDER_ADDR_LEN)
        {
            return Err(TicketError::TooManyProviders);
        }
        Ok(())
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoding an enum, 32 bytes and strings into a Vec cannot fail.
        let body = postcard::to_stdvec(self).unwrap_or_default();
        write!(
            f,
            "{TICKET_PREFIX}{}",
            BASE32_NOPAD.encode(&body).to_ascii_lowercase()
        )
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(s.len()));
        }
        let body = s
            .get(..TICKET_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(TICKET_PREFIX))
            .map(|_| &s[TICKET_PREFIX.len()..])
            .ok_or(TicketError::WrongPrefix)?;
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Damaged)?;
        let (ticket, rest) =
            postcard::take_from_bytes::<Ticket>(&bytes).map_err(|_| TicketError::Damaged)?;
        if !rest.is_empty() {
            return Err(TicketError::Damaged);
        }
        ticket.check_limits()?;
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_providers() {
        let plain = Ticket::new(TicketKind::Dataset, Hash::of(b"x"));
        let s = plain.to_string();
        assert!(s.starts_with(TICKET_PREFIX));
        assert!(s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(s.parse::<Ticket>(), Ok(plain));

        let with = Ticket {
            kind: TicketKind::Blob,
            hash: Hash::of(b"y"),
            providers: vec![
                "/ip4/127.0.0.1/udp/4433/quic-v1/p2p/12D3KooWabc".into(),
                "/ip6/::1/udp/4433/quic-v1/p2p/12D3KooWabc".into(),
            ],
        };
        assert_eq!(with.to_string().parse::<Ticket>(), Ok(with.clone()));
        // Pasted with surrounding whitespace or in upper case: still fine.
        assert_eq!(
            format!("  {}\n", with.to_string().to_uppercase()).parse::<Ticket>(),
            Ok(with)
        );
    }

    #[test]
    fn malformed_tickets_get_clear_errors() {
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::WrongPrefix));
        assert_eq!("".parse::<Ticket>(), Err(TicketError::WrongPrefix));
        assert_eq!("é".parse::<Ticket>(), Err(TicketError::WrongPrefix));
        assert_eq!("commons1!!!".parse::<Ticket>(), Err(TicketError::Damaged));
        let good = Ticket::new(TicketKind::Blob, Hash::of(b"z")).to_string();
        let truncated = &good[..good.len() - 5];
        assert_eq!(truncated.parse::<Ticket>(), Err(TicketError::Damaged));
        let long = format!("{TICKET_PREFIX}{}", "a".repeat(MAX_TICKET_LEN));
        assert!(matches!(
            long.parse::<Ticket>(),
            Err(TicketError::TooLong(_))
        ));
    }

    #[test]
    fn too_many_providers_are_refused() {
        let t = Ticket {
            kind: TicketKind::Blob,
            hash: Hash::of(b"z"),
            providers: vec!["/ip4/1.2.3.4".into(); MAX_TICKET_PROVIDERS + 1],
        };
        assert_eq!(
            t.to_string().parse::<Ticket>(),
            Err(TicketError::TooManyProviders)
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(s in ".{0,300}") {
            let _ = s.parse::<Ticket>();
            let _ = format!("{TICKET_PREFIX}{s}").parse::<Ticket>();
        }
    }
}
