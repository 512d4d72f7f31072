//! Text output: each reply rendered for a person. `--json` prints the same reply
//! serialized instead, so both always say the same thing.

use commons_node::{
    api::{
        AddOutcome, ExportOutcome, FileListing, GcOutcome, GetOutcome, KeyListing, Listing,
        MirrorChanged, NameList, NameRecordOut, NameRemoved, PackOutcome, PeerStatsList,
        PinOutcome, ProvidersReport, PublicKeyOut, PublishOutcome, RemoveOutcome, ResolveOutcome,
        SignOutcome, UnpackOutcome, VerifyReport,
    },
    mirror::{MirrorEntryStatus, MirrorState},
    net::{NatCounters, NatStatus, NetworkStatus},
    provenance::keys::KeyInfo,
    status::NodeStatus,
    store::NameEntry,
};
use indicatif::HumanBytes;

/// "s" when `n` is not one.
fn plural(n: impl Into<u64>) -> &'static str {
    if n.into() == 1 {
        ""
    } else {
        "s"
    }
}

pub fn imported(r: &commons_node::api::ImportOutcome) {
    println!(
        "imported {} at commit {}: {} file{}, {}",
        r.source,
        r.commit,
        r.files,
        plural(r.files),
        HumanBytes(r.size)
    );
    println!(
        "from the origin: {}, from peers: {}, already held: {} file{}",
        HumanBytes(r.origin_bytes),
        HumanBytes(r.peer_bytes),
        r.held_files,
        plural(r.held_files)
    );
    for refused in &r.refused_peers {
        println!("refused a peer: {refused}");
    }
    println!("hash:   {}", r.hash);
    for name in &r.names {
        println!("name:   {name}");
    }
}

pub fn added(r: &AddOutcome, path: &std::path::Path) {
    println!(
        "added {} {}: {} file{}, {} ({} new blob{})",
        r.kind,
        path.display(),
        r.files,
        plural(r.files),
        HumanBytes(r.size),
        r.new_blobs,
        plural(r.new_blobs),
    );
    println!("hash:   {}", r.hash);
    let hash_only = r
        .ticket
        .parse::<commons_protocol::Ticket>()
        .is_ok_and(|t| t.providers.is_empty());
    println!("ticket: {}", r.ticket);
    if hash_only {
        // Added with no node running: the ticket can name no address to fetch from.
        println!(
            "        hash only (no address): `commons get` finds holders through the DHT once a\n        \
             node serves this store; `commons node run` prints tickets that name its addresses"
        );
    }
    if let Some(name) = &r.name {
        println!("name:   {name}");
    }
}

/// "complete", or "partial 49 %" for something whose fetch has not finished.
fn state(complete: bool, held: u64, size: u64) -> String {
    if complete {
        return "complete".into();
    }
    // Rounded down, so something missing one byte never shows 100 %.
    let percent = (held as u128 * 100).checked_div(size as u128).unwrap_or(0);
    format!("partial {percent} %")
}

pub fn listing(l: &Listing, pinned_only: bool) {
    if l.datasets.is_empty() && l.blobs.is_empty() {
        if pinned_only {
            println!("nothing is pinned: garbage collection may remove everything stored");
        } else {
            println!("the store is empty: add something with `commons add <path>`");
        }
        return;
    }
    if !l.datasets.is_empty() {
        println!("datasets:");
        for d in &l.datasets {
            println!(
                "  {}  {:>7} files  {:>11}  {:<12}  {:<6}  {}",
                d.hash,
                d.files,
                HumanBytes(d.size).to_string(),
                state(d.complete, d.held, d.size),
                if d.pinned { "pinned" } else { "" },
                d.names.join(", "),
            );
        }
    }
    if !l.blobs.is_empty() {
        println!("blobs:");
        for b in &l.blobs {
            println!(
                "  {}  {:>11}  {:<12}  {}",
                b.hash,
                HumanBytes(b.size).to_string(),
                state(b.complete, b.held, b.size),
                if b.pinned { "pinned" } else { "" },
            );
        }
    }
}

pub fn files(l: &FileListing) {
    let (size, held) = l
        .files
        .iter()
        .fold((0, 0), |(s, h), f| (s + f.size, h + f.held));
    let complete = l.files.iter().all(|f| f.complete);
    println!(
        "{} {}: {} file{}, {}, {}",
        if l.dataset { "dataset" } else { "blob" },
        l.hash,
        l.files.len(),
        plural(l.files.len() as u64),
        HumanBytes(size),
        state(complete, held, size)
    );
    for f in &l.files {
        println!(
            "  {:>11}  {:<12}  {}",
            HumanBytes(f.size).to_string(),
            state(f.complete, f.held, f.size),
            f.path
        );
    }
}

pub fn pin(r: &PinOutcome) {
    let (verb, already) = if r.pinned {
        ("pinned", "was already pinned")
    } else {
        ("unpinned", "was not pinned")
    };
    if r.changed {
        println!("{verb} {}", r.hash);
    } else {
        println!("{} {already}", r.hash);
    }
    if !r.pinned {
        println!("it stays stored until garbage collection (`commons gc`) needs the space");
    }
}

pub fn named(e: &NameEntry) {
    println!("{}@{} → {} (pinned)", e.name, e.revision, e.root);
}

pub fn names(l: &NameList) {
    if l.names.is_empty() {
        println!("no names: bind one with `commons name set org/name <hash>`");
    }
    for e in &l.names {
        println!("{:<40}  {}", format!("{}@{}", e.name, e.revision), e.root);
    }
}

pub fn unnamed(r: &NameRemoved) {
    println!("removed the name {}", r.name);
}

/// `pack`'s summary, on `out` (stderr when the bundle itself goes to stdout).
pub fn packed(r: &PackOutcome, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let names = if r.names > 0 {
        format!(", {} name record{}", r.names, plural(r.names as u64))
    } else {
        String::new()
    };
    writeln!(
        out,
        "packed {} dataset{}: {} blob{}, {} of data, {} signature{}{names}; {} in all",
        r.roots.len(),
        plural(r.roots.len() as u64),
        r.blobs,
        plural(r.blobs as u64),
        HumanBytes(r.data_bytes),
        r.signatures,
        plural(r.signatures as u64),
        HumanBytes(r.bundle_bytes)
    )?;
    for root in &r.roots {
        writeln!(out, "  {root}")?;
    }
    for root in &r.requires {
        writeln!(
            out,
            "delta: leaves out what {root} holds; the receiver needs it"
        )?;
    }
    for file in &r.files {
        writeln!(out, "wrote {}", file.display())?;
    }
    Ok(())
}

pub fn unpacked(r: &UnpackOutcome) {
    println!(
        "unpacked: {} blob{} imported ({} verified), {} already held ({}); {} signature{}, {} name record{} kept",
        r.blobs_imported,
        plural(r.blobs_imported as u64),
        HumanBytes(r.bytes_imported),
        r.blobs_held,
        HumanBytes(r.bytes_held),
        r.signatures,
        plural(r.signatures as u64),
        r.names,
        plural(r.names as u64)
    );
    for root in &r.complete {
        println!("complete:   {root}");
    }
    for root in &r.incomplete {
        println!("incomplete: {root} (unpack again with the rest of the bundle)");
    }
    if let Some(cut) = &r.truncated {
        println!("{cut}");
    }
}

pub fn extracted(r: &commons_node::bundle::ExtractOutcome) {
    for d in &r.datasets {
        println!(
            "wrote {} into {}: {} file{}, {} (verified)",
            d.root,
            d.dir.display(),
            d.files,
            plural(d.files as u64),
            HumanBytes(d.bytes)
        );
        if let Some(sig) = &d.signature {
            println!("signature: {}", sig.display());
        }
    }
    for c in &r.hf_caches {
        println!(
            "wrote {} into the Hugging Face cache {}: {} file{}, {} (verified), revision {} = commit {}",
            c.root,
            c.repo_dir.display(),
            c.files,
            plural(c.files as u64),
            HumanBytes(c.bytes),
            c.revision,
            c.commit
        );
    }
}

pub fn bundle_verified(
    v: &commons_protocol::archive::Verified,
    file: &std::path::Path,
    quick: bool,
    trusted_names: usize,
) {
    println!(
        "{} is good{}: {} dataset{}, complete; {} blob{}, {} {}; {} signature{} naming their datasets; {} name record{} signed by their publishers",
        file.display(),
        if quick { " (quick check: structure, signatures, 16 groups per file)" } else { "" },
        v.roots,
        plural(v.roots as u64),
        v.blobs,
        plural(v.blobs as u64),
        HumanBytes(v.bytes),
        if quick { "listed" } else { "verified" },
        v.signatures,
        plural(v.signatures as u64),
        v.names,
        plural(v.names as u64)
    );
    if v.signed_by_publisher > 0 {
        println!(
            "every dataset is signed by the publisher given ({} of {})",
            v.signed_by_publisher, v.roots
        );
    }
    if trusted_names > 0 {
        println!(
            "{trusted_names} name record{} covered by the trust policy: by the publisher it names, pointing at a dataset that publisher signed",
            plural(trusted_names as u64)
        );
    }
    for root in &v.requires {
        println!("a delta bundle: it needs {root} in the store it is unpacked into");
    }
}

pub fn exported(r: &ExportOutcome, dir: &std::path::Path) {
    let unchanged = if r.unchanged > 0 {
        format!(
            "; {} file{} already there, identical",
            r.unchanged,
            plural(r.unchanged)
        )
    } else {
        String::new()
    };
    println!(
        "exported {}: {} file{}, {} (verified) to {}{unchanged}",
        r.hash,
        r.files.len(),
        plural(r.files.len() as u64),
        HumanBytes(r.bytes),
        dir.display()
    );
    if let Some(sig) = &r.signature {
        println!("signature: {sig}");
    }
}

pub fn fetched(r: &GetOutcome, output: Option<&std::path::Path>, no_keep: bool) {
    println!(
        "fetched {} {}: {} file{}, {} ({} received, all verified)",
        r.kind,
        r.hash,
        r.files,
        plural(r.files),
        HumanBytes(r.size),
        HumanBytes(r.bytes_received),
    );
    for peer in &r.dropped {
        println!("dropped provider {peer}: it sent data that failed verification");
    }
    if let Some(dir) = output {
        let unchanged = r.exported.as_ref().map_or(0, |e| e.unchanged);
        if unchanged > 0 {
            println!(
                "exported to {} ({unchanged} file{} already there, identical)",
                dir.display(),
                plural(unchanged)
            );
        } else {
            println!("exported to {}", dir.display());
        }
    }
    if !r.kept {
        println!(
            "the store's copy was dropped (--no-keep): the files in the folder are the only copy"
        );
    } else if no_keep {
        println!(
            "the store's copy is kept: it was pinned here before this get (`commons rm` drops it)"
        );
    }
}

pub fn verified(r: &VerifyReport) {
    for p in &r.corrupt {
        let files = if p.files.is_empty() {
            String::new()
        } else {
            format!(" (file {})", p.files.join(", "))
        };
        match &p.range {
            Some(range) => println!(
                "CORRUPT blob {}{files}: bytes {}..{} ({}) fail verification",
                p.blob,
                range.start,
                range.end,
                HumanBytes(range.end - range.start)
            ),
            None => println!("MISSING blob {}{files}: not in the store", p.blob),
        }
    }
    for p in &r.store_problems {
        println!("INCONSISTENT store: {p}");
    }
    if r.store_problem_count > r.store_problems.len() as u64 {
        println!(
            "INCONSISTENT store: {} more problems",
            r.store_problem_count - r.store_problems.len() as u64
        );
    }
    let summary = if r.corrupt.is_empty() && r.store_problems.is_empty() {
        "all intact".to_string()
    } else {
        format!(
            "{} problem{} found",
            r.corrupt.len() as u64 + r.store_problem_count,
            plural(r.corrupt.len() as u64 + r.store_problem_count)
        )
    };
    println!(
        "checked {} blobs ({}): {summary}",
        r.checked_blobs,
        HumanBytes(r.checked_bytes)
    );
    if r.partial_blobs > 0 {
        println!(
            "also checked: what {} partly fetched blob{} hold ({}; run `commons get` again to \
             finish them)",
            r.partial_blobs,
            plural(r.partial_blobs),
            HumanBytes(r.partial_bytes)
        );
    }
    for sig in &r.signatures {
        let state = match (sig.verified, &sig.problem) {
            (Some(true), _) => "verified with the publisher's key".to_string(),
            (_, Some(problem)) => problem.clone(),
            (None, None) => "matches the files (no --publisher given to check the key)".into(),
            (Some(false), None) => "does not verify".into(),
        };
        // The hint is checked to be hex when a bundle is read; shown printable all the same.
        let hint: String = sig
            .key_hint
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        println!(
            "signature {} ({} digests, key hint {}): {state}",
            sig.id.short(),
            sig.file_digest,
            if hint.is_empty() { "none" } else { &hint }
        );
    }
    if let Some(publisher) = &r.signed_by {
        println!("signed by {publisher}");
    }
}

pub fn key_made(k: &KeyInfo) {
    println!("key {} ({:?}): {}", k.name, k.algorithm, k.public_key);
    println!(
        "secret key: {} (keep it private; back it up)",
        k.path.display()
    );
}

pub fn keys(l: &KeyListing) {
    if l.keys.is_empty() {
        println!("no keys (create one with `commons key generate <name>`)");
    }
    for k in &l.keys {
        println!("{}\t{}", k.name, k.public_key);
    }
}

pub fn public_key(k: &PublicKeyOut, written: Option<&std::path::Path>) {
    match written {
        Some(file) => println!("wrote the public key of {} to {}", k.name, file.display()),
        None => print!("{}", k.pem),
    }
    eprintln!("{}", k.public_key);
}

pub fn signed(r: &SignOutcome) {
    println!(
        "signed {} ({} file{}) as {}; signature {}",
        r.hash,
        r.files,
        plural(r.files),
        r.publisher,
        r.signature.short()
    );
}

fn record_line(r: &NameRecordOut) -> String {
    let expires = r.expires_unix.saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    );
    format!(
        "{} -> {} (sequence {}, valid {} more day{})",
        r.name,
        r.root,
        r.seq,
        expires / 86_400,
        plural(expires / 86_400)
    )
}

pub fn published(r: &PublishOutcome) {
    println!("published {}", record_line(&r.record));
    println!("publisher {}", r.record.publisher);
    match &r.error {
        None => println!("stored at {} peer{}", r.peers, plural(r.peers)),
        Some(e) => println!(
            "not stored in the DHT yet ({e}); kept here, and a running node publishes it again"
        ),
    }
}

pub fn resolved(r: &ResolveOutcome) {
    println!("{}", record_line(&r.record));
    println!("publisher {}", r.record.publisher);
    let source = if r.from_network {
        format!("{} answer{} from the network", r.answers, plural(r.answers))
    } else {
        "this node's copy (the network had nothing newer)".to_string()
    };
    println!("from {source} in {} ms", r.millis);
    if r.stale_peers > 0 {
        println!(
            "{} peer{} held an older record and were sent this one",
            r.stale_peers,
            plural(r.stale_peers)
        );
    }
    if r.history.len() > 1 {
        println!("history seen here:");
        for h in &r.history {
            println!("  {}", record_line(h));
        }
    }
}

pub fn removed(r: &RemoveOutcome) {
    println!(
        "removed {} {}: {} blob{} ({}) deleted",
        r.kind,
        r.hash,
        r.removed_blobs,
        plural(r.removed_blobs),
        HumanBytes(r.freed_bytes)
    );
    if r.kept_shared > 0 {
        println!(
            "kept {} blob{} still used by other pinned data",
            r.kept_shared,
            plural(r.kept_shared)
        );
    }
}

pub fn collected(r: &GcOutcome) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for b in &r.blobs {
        println!("{verb} {}  {}", b.hash, HumanBytes(b.size));
    }
    println!(
        "{verb} {} blob{} ({})",
        r.blobs.len(),
        plural(r.blobs.len() as u64),
        HumanBytes(r.bytes)
    );
    if r.over_quota > 0 {
        println!(
            "pinned data alone is {} over the quota: unpin something to make room",
            HumanBytes(r.over_quota)
        );
    }
}

pub fn providers(r: &ProvidersReport) {
    if r.providers.is_empty() {
        println!(
            "no provider of {} found ({} DHT requests)",
            r.hash, r.cost.requests
        );
        return;
    }
    println!(
        "{} provider{} of {}:",
        r.providers.len(),
        plural(r.providers.len() as u64),
        r.hash
    );
    for p in &r.providers {
        println!("  {}", p.peer_id);
        for a in &p.addrs {
            println!("    {a}");
        }
    }
}

pub fn peers(s: &NetworkStatus) {
    println!("peer id: {}", s.peer_id);
    println!("dht mode: {}", s.dht_mode);
    println!("reachability: {}", reachability_line(&s.nat));
    println!("routing table: {} peers", s.routing_table);
    println!("provider records held: {} keys", s.provider_keys);
    println!("connected: {} peers", s.connected.len());
    for p in &s.connected {
        println!("  {p}");
    }
}

/// Connections and bytes by path (direct or through a relay), and hole punches.
fn paths_line(c: &NatCounters) -> String {
    let b = &c.bytes;
    format!(
        "{} direct ({} sent, {} received), {} relayed ({} sent, {} received) connections; \
         hole punches {} succeeded, {} failed",
        c.direct_connections,
        HumanBytes(b.direct_sent),
        HumanBytes(b.direct_received),
        c.relayed_connections,
        HumanBytes(b.relayed_sent),
        HumanBytes(b.relayed_received),
        c.punches_succeeded,
        c.punches_failed
    )
}

pub fn stats(s: &PeerStatsList) {
    println!("paths: {}", paths_line(&s.paths));
    if s.peers.is_empty() {
        println!("no data exchanged with any peer since the node started");
        return;
    }
    println!(
        "{:<54} {:>10} {:>10} {:>8} {:>8} {:>4}",
        "peer", "sent", "received", "served", "asked", "bad"
    );
    for p in &s.peers {
        println!(
            "{:<54} {:>10} {:>10} {:>8} {:>8} {:>4}",
            p.peer_id,
            HumanBytes(p.bytes_sent).to_string(),
            HumanBytes(p.bytes_received).to_string(),
            p.requests_served,
            p.requests_made,
            p.bad_responses
        );
    }
}

pub fn status(s: &NodeStatus) {
    let hours = s.uptime_secs as f64 / 3600.0;
    println!(
        "peer id:   {} (DHT {}, up {hours:.1} h)",
        s.peer_id, s.dht_mode
    );
    println!(
        "peers:     {} connected, {} in the routing table",
        s.connected_peers, s.routing_table
    );
    println!("reach:     {}", reachability_line(&s.nat));
    for a in &s.nat.relayed_addrs {
        println!("           reachable through a relay at {a}");
    }
    println!("paths:     {}", paths_line(&s.nat.counters));
    if s.nat.relay_serving {
        println!(
            "relay:     serving {} reservations, {} circuits",
            s.nat.relay_reservations, s.nat.relay_circuits
        );
    }
    println!(
        "data:      {} datasets, {} blobs ({} complete), {} pinned",
        s.datasets, s.blobs, s.complete_blobs, s.pinned
    );
    println!(
        "traffic:   {} served ({} requests), {} fetched, {} bad responses",
        HumanBytes(s.bytes_served),
        s.requests_served,
        HumanBytes(s.bytes_fetched),
        s.bad_responses
    );
    let quota = match s.quota_bytes {
        Some(q) => format!(
            "of a {} quota ({:.0} %)",
            HumanBytes(q),
            s.stored_bytes as f64 * 100.0 / q.max(1) as f64
        ),
        None => "(no quota)".into(),
    };
    println!(
        "disk:      {} stored {quota}; {} on disk",
        HumanBytes(s.stored_bytes),
        HumanBytes(s.disk_bytes)
    );
    if let Some(gw) = &s.gateway {
        println!(
            "gateway:   {gw}: {} served ({} responses)",
            HumanBytes(s.gateway_bytes),
            s.gateway_responses
        );
    }
    if !s.mirror.is_empty() {
        println!("mirror:");
        mirror_entries(&s.mirror);
    }
}

/// One line on reachability: what AutoNAT found, and at which addresses.
fn reachability_line(n: &NatStatus) -> String {
    use commons_node::net::reachability::Reachability;
    match n.reachability {
        Reachability::Public => format!("public, at {}", n.public_addrs.join(", ")),
        Reachability::Private if !n.local_addrs.is_empty() => format!(
            "private: reachable on the local network only (at {}){}",
            n.local_addrs.join(", "),
            if n.relayed_addrs.is_empty() {
                ""
            } else {
                "; through relays from elsewhere"
            }
        ),
        Reachability::Private if !n.relayed_addrs.is_empty() => {
            "private (behind NAT or a firewall): reachable through relays".into()
        }
        Reachability::Private => {
            "private (behind NAT or a firewall): no relay reservation yet".into()
        }
        Reachability::Unknown => "unknown (no AutoNAT probe has answered yet)".into(),
    }
}

pub fn mirror_changed(r: &MirrorChanged) {
    if r.changed {
        println!("done: {}", r.target);
    } else {
        println!("{} was mirrored already", r.target);
    }
}

/// One line per mirrored dataset: where it is, and what is wrong if anything.
pub fn mirror_entries(entries: &[MirrorEntryStatus]) {
    if entries.is_empty() {
        println!("nothing is mirrored: add a dataset with `commons mirror add <hash>`");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for e in entries {
        let state = match e.state {
            MirrorState::Waiting => "waiting (for a running node and the network)".to_string(),
            MirrorState::Fetching => {
                format!("fetching {} of {}", HumanBytes(e.held), HumanBytes(e.size))
            }
            MirrorState::Complete => format!("complete, {}", HumanBytes(e.size)),
            MirrorState::Failing => format!(
                "failing, retried in {} s: {}",
                e.retry_at.map_or(0, |t| t.saturating_sub(now)),
                e.last_error.as_deref().unwrap_or("")
            ),
        };
        let name = e
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        println!("  {}{name} [{}]: {state}", e.target, e.source);
    }
}
