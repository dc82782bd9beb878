//! Server-Sent Events: each publication is an event whose `id:` is the
//! stream's position in every channel of the stream, so a reconnecting
//! `EventSource` (which sends `Last-Event-ID`) resumes all of them.
//!
//! An id is `<channel>~<epoch>~<offset>` for each channel, joined by `,`
//! (channel names never contain `~` or `,`).

use std::collections::BTreeMap;

use crate::channel::ChannelName;
use crate::history::StreamPosition;
use crate::hub::Delivery;

/// The comment line sent as a heartbeat (keeps proxies from closing an idle
/// stream).
pub(crate) const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Positions of a stream's channels, as carried by event ids.
pub(crate) type Positions = BTreeMap<ChannelName, StreamPosition>;

/// Formats positions as an event id.
pub(crate) fn format_id(positions: &Positions) -> String {
    positions
        .iter()
        .map(|(c, p)| format!("{c}~{}~{}", p.epoch, p.offset))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a `Last-Event-ID`; parts that do not parse are ignored (that
/// channel then starts from now, and says it was not recovered).
pub(crate) fn parse_id(id: &str) -> Positions {
    id.split(',')
        .filter_map(|part| {
            let mut it = part.rsplitn(3, '~');
            let offset = it.next()?.parse().ok()?;
            let epoch = it.next()?.to_owned();
            let channel = ChannelName::parse(it.next()?).ok()?;
            Some((channel, StreamPosition { offset, epoch }))
        })
        .collect()
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
        assert_eq!(parse_id(&id), p);
        let partial = parse_id("chat:lobby~ab12~12,garbage,x~y~z");
        assert_eq!(partial.len(), 1);
        assert!(parse_id("").is_empty());
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
