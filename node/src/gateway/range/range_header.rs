//! The `Range` header (RFC 9110 §14.1-14.2) read against a file's size: which bytes a
//! request asks for, or that it asks for none the file has (416).
//!
//! Pure: no HTTP types, no I/O, so the `http_range` fuzz target (`fuzz/`) includes this
//! very file and checks [`fuzz_property`] without building the node.

use std::ops::Range;

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// No (usable) range: the whole file, 200.
    All,
    /// One satisfiable range, 206.
    Part(Range<u64>),
    /// Outside the file, 416.
    Unsatisfiable,
}

/// Reads a `Range` header's value as RFC 9110 §14 says. Several ranges at once (multipart
/// answers) are not supported: such a request gets the whole file if any of its ranges is
/// satisfiable, which the RFC allows. An invalid header (bad syntax, a range whose end is
/// before its start, a unit other than `bytes`) is ignored: the whole file. A header whose
/// every range lies past the end, or is a suffix of zero bytes, is unsatisfiable: 416.
pub(crate) fn wanted(value: &str, size: u64) -> Wanted {
    let Some((unit, set)) = value.split_once('=') else {
        return Wanted::All;
    };
    // Range units are case-insensitive (§14.1).
    if !unit.eq_ignore_ascii_case("bytes") {
        return Wanted::All;
    }
    let mut specs = 0usize;
    let mut satisfiable = None;
    // `1#range-spec`: elements separated by commas with optional whitespace; empty
    // elements are allowed (RFC 9110 §5.6.1).
    for spec in set.split(',').map(|s| s.trim_matches([' ', '\t'])) {
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        match range_spec(spec, size) {
            None => return Wanted::All,
            Some(Some(range)) => satisfiable = Some(range),
            Some(None) => {}
        }
    }
    match (specs, satisfiable) {
        (0, _) => Wanted::All,
        (_, None) => Wanted::Unsatisfiable,
        (1, Some(range)) => Wanted::Part(range),
        _ => Wanted::All,
    }
}

/// One `range-spec`: `None` if invalid, `Some(None)` if it has no byte of the file, else
/// the bytes it names (never empty, within `0..size`).
fn range_spec(spec: &str, size: u64) -> Option<Option<Range<u64>>> {
    let (first, last) = spec.split_once('-')?;
    if first.is_empty() {
        // `-N`: the last N bytes; the last zero bytes are none.
        let n = Decimal::parse(last)?.value().unwrap_or(u64::MAX);
        return Some((n > 0 && size > 0).then(|| size - n.min(size)..size));
    }
    let start = Decimal::parse(first)?;
    let end = if last.is_empty() {
        None
    } else {
        let end = Decimal::parse(last)?;
        if end < start {
            return None;
        }
        Some(end)
    };
    // A first byte beyond u64 lies past the end of any file.
    let Some(start) = start.value().filter(|&s| s < size) else {
        return Some(None);
    };
    let end = end.map_or(size, |e| {
        e.value().map_or(size, |e| e.saturating_add(1).min(size))
    });
    Some(Some(start..end))
}

/// A `1*DIGIT` number as written (leading zeros allowed), of any length: compared by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal<'a>(&'a str);

impl<'a> Decimal<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(text.trim_start_matches('0')))
    }

    /// The value, or `None` beyond `u64::MAX`.
    fn value(self) -> Option<u64> {
        if self.0.is_empty() {
            return Some(0);
        }
        self.0.parse().ok()
    }
}

impl PartialOrd for Decimal<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal<'_> {
    /// Without leading zeros, a longer number is larger; equal lengths compare as text.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.len(), self.0).cmp(&(other.0.len(), other.0))
    }
}

/// The `http_range` fuzz target's property, for one input: `<file size>\n<Range value>`
/// (a size that does not parse is the first line's length). What [`wanted`] answers lies
/// within the file, agrees with a simple reference reading of each range alone, refuses
/// (416) exactly the headers whose every range misses the file, and does not depend on how
/// an equivalent header is written (unit case, leading zeros, whitespace around commas).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn fuzz_property(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (size, value) = match text.split_once('\n') {
        Some((first, rest)) => (
            first.trim().parse::<u64>().unwrap_or(first.len() as u64),
            rest,
        ),
        None => (4096, text),
    };
    let answer = wanted(value, size);
    assert_eq!(wanted(value, size), answer, "the answer is repeatable");
    if let Wanted::Part(r) = &answer {
        assert!(
            r.start < r.end && r.end <= size,
            "{value:?} of {size} bytes gave {r:?}"
        );
    }
    let Some((unit, set)) = value.split_once('=') else {
        assert_eq!(answer, Wanted::All, "{value:?} names no range");
        return;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        assert_eq!(answer, Wanted::All, "{value:?}: another unit");
        return;
    }
    for unit in ["bytes", "BYTES", "Bytes"] {
        assert_eq!(
            wanted(&format!("{unit}={set}"), size),
            answer,
            "{unit}={set}"
        );
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
        .collect();
    let long = |s: &&str| {
        s.split(|c: char| !c.is_ascii_digit())
            .any(|n| n.trim_start_matches('0').len() > REFERENCE_DIGITS)
    };
    if specs.iter().any(long) {
        // Beyond the reference's arithmetic: the unit tests cover such numbers.
        return;
    }
    assert_eq!(
        wanted(&format!("bytes={}", specs.join(" ,\t")), size),
        answer,
        "whitespace around commas does not matter: {value:?}"
    );
    let alone: Vec<Option<Option<Range<u64>>>> =
        specs.iter().map(|s| reference_spec(s, size)).collect();
    for (spec, expected) in specs.iter().zip(&alone) {
        let single = match expected {
            None => Wanted::All,
            Some(None) => Wanted::Unsatisfiable,
            Some(Some(r)) => Wanted::Part(r.clone()),
        };
        assert_eq!(
            wanted(&format!("bytes={spec}"), size),
            single,
            "{spec:?} of {size}"
        );
        // Equivalent forms of one range.
        let equivalent = match expected {
            Some(Some(r)) if r.end == size => vec![
                format!("bytes={}-", r.start),
                format!("bytes=-{}", size - r.start),
                format!("bytes=00{}-{}", r.start, u64::MAX),
                format!("bytes={}-{}", r.start, size - 1),
            ],
            Some(Some(r)) => vec![format!("bytes={}-{}", r.start, r.end - 1)],
            Some(None) => vec![format!("bytes={size}-"), "bytes=-0".into()],
            None => vec![],
        };
        for form in equivalent {
            assert_eq!(wanted(&form, size), single, "{form:?} ≡ {spec:?} of {size}");
        }
    }
    let expected = if specs.is_empty() || alone.iter().any(Option::is_none) {
        Wanted::All
    } else if alone.iter().all(|a| matches!(a, Some(None))) {
        Wanted::Unsatisfiable
    } else if let [Some(Some(r))] = &alone[..] {
        Wanted::Part(r.clone())
    } else {
        Wanted::All
    };
    assert_eq!(answer, expected, "{value:?} of {size} bytes");
}

/// Longest number (without leading zeros) [`reference_spec`] reads.
#[cfg_attr(not(test), allow(dead_code))]
const REFERENCE_DIGITS: usize = 30;

/// RFC 9110 §14.1.2 for one range, in the plainest terms (u128 arithmetic, numbers of at
/// most [`REFERENCE_DIGITS`] digits): the fuzz property's reference.
#[cfg_attr(not(test), allow(dead_code))]
fn reference_spec(spec: &str, size: u64) -> Option<Option<Range<u64>>> {
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u128>().ok())
            .flatten()
    };
    let size = u128::from(size);
    let (first, last) = spec.split_once('-')?;
    let (start, end) = if first.is_empty() {
        (size.saturating_sub(number(last)?), size)
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            size
        } else {
            let last = number(last)?;
            if last < start {
                return None;
            }
            (last + 1).min(size)
        };
        (start, end)
    };
    let to = |v: u128| u64::try_from(v).ok();
    Some(if start < end {
        Some(to(start)?..to(end)?)
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(wanted("bytes=0-0", 10), Wanted::Part(0..1));
        assert_eq!(wanted("bytes=2-", 10), Wanted::Part(2..10));
        assert_eq!(wanted("bytes=-3", 10), Wanted::Part(7..10));
        assert_eq!(wanted("bytes=5-100", 10), Wanted::Part(5..10), "clipped");
        assert_eq!(wanted("bytes=10-", 10), Wanted::Unsatisfiable);
        assert_eq!(wanted("bytes=20-30", 10), Wanted::Unsatisfiable);
        assert_eq!(wanted("bytes=100-200", 10), Wanted::Unsatisfiable);
        assert_eq!(wanted("bytes=-0", 10), Wanted::Unsatisfiable, "zero suffix");
        assert_eq!(wanted("bytes=-20", 10), Wanted::Part(0..10), "long suffix");
        assert_eq!(wanted("bytes=9-9", 10), Wanted::Part(9..10));
        assert_eq!(wanted("bytes=15-12", 10), Wanted::All, "reversed: ignored");
        assert_eq!(wanted("bytes=0-5,3-8", 10), Wanted::All, "overlapping");
        assert_eq!(wanted("bytes=0-5,20-30", 10), Wanted::All, "one of two");
        assert_eq!(wanted("bytes=20-30,40-", 10), Wanted::Unsatisfiable);
        assert_eq!(wanted("bytes=0-", 0), Wanted::Unsatisfiable, "empty file");
        assert_eq!(wanted("bytes=0-1,4-5", 10), Wanted::All, "multipart");
        assert_eq!(wanted("pages=1-2", 10), Wanted::All, "other units");
    }

    /// Broken before the `http_range` fuzz target (http-range-header 0.4 read the header): a
    /// zero-byte suffix beside a satisfiable range made the whole header unsatisfiable (416
    /// for a request the file can answer).
    #[test]
    fn a_zero_suffix_beside_a_satisfiable_range_is_not_a_416() {
        assert_eq!(wanted("bytes=0-0,-0", 10), Wanted::All);
        assert_eq!(wanted("bytes=-0,5-", 10), Wanted::All);
        assert_eq!(wanted("bytes=-0,20-", 10), Wanted::Unsatisfiable);
    }

    /// Broken before the `http_range` fuzz target (its property compares equivalent forms):
    /// equivalent headers got different answers (RFC 9110 allows leading zeros and any case
    /// of the unit, numbers past u64 name bytes past any file, whitespace may surround
    /// commas).
    #[test]
    fn equivalent_headers_get_the_same_answer() {
        assert_eq!(wanted("bytes=007-", 10), Wanted::Part(7..10));
        assert_eq!(wanted("bytes=-00", 10), Wanted::Unsatisfiable);
        assert_eq!(wanted("Bytes=0-0", 10), Wanted::Part(0..1));
        assert_eq!(wanted("BYTES=-3", 10), Wanted::Part(7..10));
        assert_eq!(
            wanted("bytes=99999999999999999999999-", 10),
            Wanted::Unsatisfiable
        );
        assert_eq!(
            wanted("bytes=0-99999999999999999999999", 10),
            Wanted::Part(0..10)
        );
        assert_eq!(
            wanted("bytes=99999999999999999999999-9999999999999999999999", 10),
            Wanted::All,
            "reversed, however long"
        );
        assert_eq!(wanted("bytes=20-30 , 40-", 10), Wanted::Unsatisfiable);
    }

    #[test]
    fn the_fuzz_corpus_replays_clean() {
        crate::config::replay_fuzz_corpus("http_range", fuzz_property);
    }
}
