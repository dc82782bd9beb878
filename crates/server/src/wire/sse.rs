//! Server-Sent Events: each publication is an event whose `id:` is the
//! stream's position in every channel of the stream, so a reconnecting
//! `EventSource` (which sends `Last-Event-ID`) resumes all of them.
//!
//! An id is `<channel>~<epoch>~<offset>` for each channel, joined by `,`
//! (channel names never contain `~` or `,`). When that would be longer than
//! [`NAMED_ID_MAX`] bytes (many channels, long names), the id is compact:
//! `h<hash>/<offset>.<epoch>/<offset>/...`, one position per channel in
//! name order, the epoch written only where it differs from the one
//! before, and `<hash>` a digest of the channel names, so an id is never
//! applied to another set of channels. Every event carries an id, and a
//! named one would cost the stream its channels' names on every event.

use std::collections::BTreeMap;

use crate::channel::ChannelName;
use crate::history::StreamPosition;
use crate::hub::Delivery;

/// The comment line sent as a heartbeat (keeps proxies from closing an idle
/// stream).
pub(crate) const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Positions of a stream's channels, as carried by event ids.
pub(crate) type Positions = BTreeMap<ChannelName, StreamPosition>;

/// The longest named id; a longer one is written compact.
pub(crate) const NAMED_ID_MAX: usize = 256;

/// Formats positions as an event id (named, or compact when long).
pub(crate) fn format_id(positions: &Positions) -> String {
    use std::fmt::Write as _;
    let mut id = String::new();
    for (c, p) in positions {
        if !id.is_empty() {
            id.push(',');
        }
        let _ = write!(id, "{c}~{}~{}", p.epoch, p.offset);
        if id.len() > NAMED_ID_MAX {
            return compact_id(positions);
        }
    }
    id
}

/// The digest of a stream's channel names (in name order) that a compact
/// id carries: FNV-1a, 64 bits, hex.
fn names_digest<'a>(names: impl Iterator<Item = &'a ChannelName>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for &b in name.as_str().as_bytes().iter().chain(b",") {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn compact_id(positions: &Positions) -> String {
    use std::fmt::Write as _;
    let mut id = format!("h{}", names_digest(positions.keys()));
    let mut epoch: Option<&str> = None;
    for p in positions.values() {
        let _ = write!(id, "/{}", p.offset);
        if epoch != Some(p.epoch.as_str()) {
            let _ = write!(id, ".{}", p.epoch);
            epoch = Some(&p.epoch);
        }
    }
    id
}

/// Parses a `Last-Event-ID` for a stream of `channels`; parts that do not
/// parse are ignored (that channel then starts from now, and says it was
/// not recovered). A compact id whose digest is not that of `channels`
/// gives no position at all.
pub(crate) fn parse_id(id: &str, channels: &[ChannelName]) -> Positions {
    if let Some(compact) = id.strip_prefix('h')
        && !id.contains('~')
    {
        return parse_compact(compact, channels).unwrap_or_default();
    }
    id.split(',')
        .filter_map(|part| {
            let mut it = part.rsplitn(3, '~');
            let offset = it.next()?.parse().ok()?;
            let epoch = it.next().filter(|e| is_epoch(e))?.to_owned();
            let channel = ChannelName::parse(it.next()?).ok()?;
            Some((channel, StreamPosition { offset, epoch }))
        })
        .collect()
}

/// Whether `e` can be an epoch: 1 to 32 ASCII letters and digits (the
/// stores make 8 hexadecimal digits). Anything else is no position.
fn is_epoch(e: &str) -> bool {
    (1..=32).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn parse_compact(id: &str, channels: &[ChannelName]) -> Option<Positions> {
    let mut names: Vec<&ChannelName> = channels.iter().collect();
    names.sort();
    names.dedup();
    let mut parts = id.split('/');
    if parts.next()? != names_digest(names.iter().copied()) {
        return None;
    }
    let mut positions = Positions::new();
    let mut epoch: Option<&str> = None;
    for name in names {
        let part = parts.next()?;
        let (offset, e) = match part.split_once('.') {
            Some((o, e)) if is_epoch(e) => (o, Some(e)),
            Some(_) => return None,
            None => (part, None),
        };
        epoch = e.or(epoch);
        let position = StreamPosition {
            offset: offset.parse().ok()?,
            epoch: epoch?.to_owned(),
        };
        positions.insert(name.clone(), position);
    }
    parts.next().is_none().then_some(positions)
}

/// One event: `id:`, `event:`, and `data:` lines (data is one JSON line).
pub(crate) fn event(id: Option<&str>, event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // JSON from serde_json has no raw newlines; guard anyway.
    for &b in data {
        if b == b'\n' {
            out.extend_from_slice(b"\\n");
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// The `data:` JSON of a publication (shared by every SSE stream; each
/// stream adds its own `id:`).
pub(crate) fn publication_data(d: &Delivery) -> Vec<u8> {
    serde_json::to_vec(&d.body()).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn ids_round_trip_every_channel_position() {
        let mut p = Positions::new();
        p.insert(ChannelName::parse("chat:lobby").unwrap(), pos(12, "ab12"));
        p.insert(ChannelName::parse("user:a=b:c").unwrap(), pos(3, "ff00"));
        let id = format_id(&p);
        assert_eq!(id, "chat:lobby~ab12~12,user:a=b:c~ff00~3");
        let channels: Vec<ChannelName> = p.keys().cloned().collect();
        assert_eq!(parse_id(&id, &channels), p);
        let partial = parse_id("chat:lobby~ab12~12,garbage,x~y~z", &channels);
        assert_eq!(partial.len(), 1);
        assert!(parse_id("", &channels).is_empty());
    }

    #[test]
    fn a_part_whose_epoch_is_not_letters_and_digits_is_no_position() {
        // Found by the fuzzer: such an epoch could not be written back
        // compact (`.` and `/` are its separators), nor can a store make it.
        let channels = [ChannelName::parse("chat:a").unwrap()];
        for id in ["chat:a~~3", "chat:a~a.b~3", "chat:a~a/b~3", "chat:a~{x}~3"] {
            assert!(parse_id(id, &channels).is_empty(), "{id}");
        }
        let long = format!("chat:a~{}~3", "a".repeat(33));
        assert!(parse_id(&long, &channels).is_empty());
        assert_eq!(parse_id("chat:a~Ab12~3", &channels).len(), 1);
    }

    #[test]
    fn many_long_channels_get_a_compact_id_bound_to_their_names() {
        // 128 channels of 200-byte names: a named id would be about 27 KB.
        let channels: Vec<ChannelName> = (0..128)
            .map(|i| ChannelName::parse(&format!("chat:{i:03}{}", "x".repeat(192))).unwrap())
            .collect();
        let mut p = Positions::new();
        for (i, c) in channels.iter().enumerate() {
            let epoch = if i < 100 { "ab12cd34" } else { "ffee0011" };
            p.insert(c.clone(), pos(i as u64 * 7, epoch));
        }
        let id = format_id(&p);
        assert!(id.starts_with('h') && !id.contains('~'), "{id}");
        assert!(id.len() < 1024, "compact: {} bytes", id.len());
        // Any order of the same channels reads it back exactly.
        let mut reversed = channels.clone();
        reversed.reverse();
        assert_eq!(parse_id(&id, &reversed), p);
        // Another set of channels, or a damaged id, gets no position.
        assert!(parse_id(&id, &channels[1..]).is_empty());
        assert!(parse_id(&id[..id.len() - 3], &channels).is_empty());
        assert!(parse_id(&format!("{id}/5"), &channels).is_empty());
        // A short id stays named.
        let mut few = Positions::new();
        few.insert(ChannelName::parse("chat:a").unwrap(), pos(3, "ab12cd34"));
        assert_eq!(format_id(&few), "chat:a~ab12cd34~3");
    }

    #[test]
    fn events_are_well_formed() {
        let e = event(Some("chat:x~e~1"), "message", br#"{"a":1}"#);
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            "id: chat:x~e~1\nevent: message\ndata: {\"a\":1}\n\n"
        );
        let e = event(None, "error", b"a\nb");
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            "event: error\ndata: a\\nb\n\n"
        );
    }
}
