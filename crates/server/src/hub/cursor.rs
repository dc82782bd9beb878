//! Resume cursors: while a subscription replays what it missed, its live
//! deliveries are held, then sent after the replay, and nothing is sent
//! twice. Once live, a delivery passes its cursor with two atomic reads
//! and one atomic update: no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Delivery;
use crate::channel::ChannelName;

/// Orders one subscription's deliveries while it resumes: live deliveries
/// that arrive while the missed ones are being read are held, then sent
/// after them, and nothing is sent twice.
pub struct Cursor {
    /// True until [`Cursor::finish`]: live deliveries are held.
    recovering: AtomicBool,
    /// The highest offset sent (once live).
    last: AtomicU64,
    /// Live deliveries held during the replay. [`Cursor::finish`] turns
    /// `recovering` off under this lock.
    held: Mutex<Vec<Arc<Delivery>>>,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            recovering: AtomicBool::new(true),
            last: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        }
    }
}

impl Cursor {
    fn held(&self) -> MutexGuard<'_, Vec<Arc<Delivery>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live delivery: whether to send it now; if not, it is held (during
    /// recovery) or was already sent.
    pub fn pass(&self, delivery: &Arc<Delivery>) -> bool {
        if self.recovering.load(Ordering::Acquire) {
            let mut held = self.held();
            // Checked again under the lock: `finish` may have just ended
            // the replay (then the delivery follows everything it sent).
            if self.recovering.load(Ordering::Acquire) {
                held.push(Arc::clone(delivery));
                return false;
            }
        }
        let offset = delivery.publication.offset;
        self.last.fetch_max(offset, Ordering::AcqRel) < offset
    }

    /// Ends recovery once everything up to `last_sent` was sent: hands the
    /// held deliveries still to send, in order, to `send`, and goes live.
    /// `send` runs under the hold lock, so a live delivery arriving
    /// meanwhile waits and is sent after them: never before, never twice.
    pub fn finish(&self, last_sent: u64, mut send: impl FnMut(&Arc<Delivery>)) {
        let mut held = self.held();
        if !self.recovering.load(Ordering::Acquire) {
            self.last.fetch_max(last_sent, Ordering::AcqRel);
            return;
        }
        let mut out: Vec<_> = std::mem::take(&mut *held)
            .into_iter()
            .filter(|d| d.publication.offset > last_sent)
            .collect();
        out.sort_by_key(|d| d.publication.offset);
        out.dedup_by_key(|d| d.publication.offset);
        for d in &out {
            send(d);
        }
        let last = out.last().map_or(last_sent, |d| d.publication.offset);
        self.last.fetch_max(last, Ordering::AcqRel);
        self.recovering.store(false, Ordering::Release);
    }
}

/// The cursors of one connection, one per subscribed channel.
#[derive(Default)]
pub struct Cursors(Mutex<HashMap<ChannelName, Arc<Cursor>>>);

impl Cursors {
    fn map(&self) -> MutexGuard<'_, HashMap<ChannelName, Arc<Cursor>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new cursor (recovering) for a channel being subscribed.
    pub fn start(&self, channel: &ChannelName) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor::default());
        self.map().insert(channel.clone(), Arc::clone(&cursor));
        cursor
    }

    /// How many channels.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Whether a channel has a cursor (is subscribed or subscribing).
    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.map().contains_key(channel)
    }

    /// Forgets a channel.
    pub fn remove(&self, channel: &ChannelName) {
        self.map().remove(channel);
    }

    /// The cursor of a channel, if subscribed.
    pub fn get(&self, channel: &ChannelName) -> Option<Arc<Cursor>> {
        self.map().get(channel).cloned()
    }

    /// The channels.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.map().keys().cloned().collect()
    }

    /// Forgets every channel and returns them.
    pub fn drain(&self) -> Vec<ChannelName> {
        self.map().drain().map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Publication;

    fn delivery(offset: u64) -> Arc<Delivery> {
        Delivery::new(
            ChannelName::parse("chat:lobby").unwrap(),
            "e".into(),
            Publication {
                offset,
                data: serde_json::json!(offset).into(),
                from: None,
                time_ms: 0,
            },
        )
    }

    #[test]
    fn a_cursor_holds_live_deliveries_during_recovery_and_never_repeats() {
        let c = Cursor::default();
        // Recovery will send offsets up to 5; 4, 5, 6, 7 arrive live meanwhile.
        for o in [4, 5, 6, 7] {
            assert!(!c.pass(&delivery(o)));
        }
        let mut held = Vec::new();
        c.finish(5, |d| held.push(d.publication.offset));
        assert_eq!(held, vec![6, 7]);
        assert!(!c.pass(&delivery(7)), "already sent");
        assert!(c.pass(&delivery(8)));
        assert!(!c.pass(&delivery(8)), "never twice");
    }

    #[test]
    fn a_delivery_racing_the_end_of_recovery_is_sent_once_after_the_held_ones() {
        for _ in 0..200 {
            let c = Arc::new(Cursor::default());
            assert!(!c.pass(&delivery(2)));
            let sent = Arc::new(Mutex::new(Vec::new()));
            let racer = {
                let (c, sent) = (Arc::clone(&c), Arc::clone(&sent));
                std::thread::spawn(move || {
                    if c.pass(&delivery(3)) {
                        sent.lock().unwrap().push(3);
                    }
                })
            };
            c.finish(1, |d| sent.lock().unwrap().push(d.publication.offset));
            racer.join().unwrap();
            let sent = sent.lock().unwrap().clone();
            assert_eq!(
                sent,
                vec![2, 3],
                "the held one first, then the racing one, once (held or passed)"
            );
        }
    }
}
