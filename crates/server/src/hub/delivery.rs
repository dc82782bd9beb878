//! What travels through the hub: a publication on its way to subscribers
//! ([`Delivery`]) and a presence signal ([`Signal`]), each encoded once per
//! wire protocol (the first subscriber of that protocol pays, the others
//! share the bytes).

use std::sync::{Arc, OnceLock};

use crate::channel::ChannelName;
use crate::history::Publication;

/// One publication in this many has its delivery latency measured (see
/// [`Delivery::sampled`]).
pub const LATENCY_SAMPLE: u64 = 16;

/// A publication on its way to subscribers.
#[derive(Debug)]
pub struct Delivery {
    /// The channel.
    pub channel: ChannelName,
    /// The channel's epoch.
    pub epoch: String,
    /// The publication.
    pub publication: Publication,
    /// When it was handed to the hub (for the delivery latency metric).
    pub published: std::time::Instant,
    /// Encodings, one slot per wire protocol, filled on first use.
    encodings: [OnceLock<Encoded>; 3],
}

/// A delivery's body: `{channel, offset, epoch, data, from}`.
#[derive(Debug, serde::Serialize)]
pub struct DeliveryBody<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    data: &'a crate::history::Payload,
    from: Option<&'a str>,
}

/// The wire protocols a delivery can be encoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Socket.IO event frames.
    SocketIo = 0,
    /// The plain WebSocket JSON protocol.
    Json = 1,
    /// Server-Sent Events.
    Sse = 2,
}

/// Encoded bytes shared by every subscriber of one protocol (a clone is a
/// reference count, no copy and no allocation).
pub type Encoded = bytes::Bytes;

impl Delivery {
    /// A delivery of `publication` in `channel`.
    pub fn new(channel: ChannelName, epoch: String, publication: Publication) -> Arc<Self> {
        Arc::new(Delivery {
            channel,
            epoch,
            publication,
            published: std::time::Instant::now(),
            encodings: Default::default(),
        })
    }

    /// The publication as every protocol carries it:
    /// `{channel, offset, epoch, data, from}` (the data's JSON text is
    /// copied as it is, not serialized again).
    pub fn body(&self) -> DeliveryBody<'_> {
        DeliveryBody {
            channel: self.channel.as_str(),
            offset: self.publication.offset,
            epoch: &self.epoch,
            data: &self.publication.data,
            from: self.publication.from.as_deref(),
        }
    }

    /// Whether its delivery latency is measured: one publication in
    /// [`LATENCY_SAMPLE`] by offset (a channel's first one included), for
    /// every subscriber, so that the fan-out reads no clock per delivery.
    pub fn sampled(&self) -> bool {
        self.publication.offset % LATENCY_SAMPLE == 1
    }

    /// The encoding for `wire`, made by `encode` the first time only.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Delivery) -> Vec<u8>) -> Encoded {
        self.encodings[wire as usize]
            .get_or_init(|| bytes::Bytes::from(encode(self)))
            .clone()
    }
}

/// A presence signal: a user's first connection joined a channel, or its
/// last one left. Not stored in history: delivered live, at most once.
#[derive(Debug)]
pub struct Signal {
    /// The channel.
    pub channel: ChannelName,
    /// Join or leave.
    pub kind: SignalKind,
    /// The user.
    pub user: String,
    /// The user's display name.
    pub name: Option<String>,
    encodings: [OnceLock<Encoded>; 3],
}

/// What a [`Signal`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// The user's first connection subscribed.
    Join,
    /// The user's last connection left.
    Leave,
}

impl SignalKind {
    /// `join` or `leave`: the event name on every protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Join => "join",
            SignalKind::Leave => "leave",
        }
    }
}

impl Signal {
    /// A signal.
    pub fn new(
        channel: ChannelName,
        kind: SignalKind,
        user: String,
        name: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Signal {
            channel,
            kind,
            user,
            name,
            encodings: Default::default(),
        })
    }

    /// The JSON body shared by every protocol: `{channel, user, name}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "channel": self.channel.as_str(), "user": self.user, "name": self.name })
    }

    /// The encoding for `wire`, made by `encode` the first time only.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Signal) -> Vec<u8>) -> Encoded {
        self.encodings[wire as usize]
            .get_or_init(|| bytes::Bytes::from(encode(self)))
            .clone()
    }
}
