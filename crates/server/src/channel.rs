//! Channels: `<namespace>:<name>` (`chat:lobby`, `user:42`), each namespace
//! with a policy from the configuration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// A valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ChannelName(String);

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// No `:` between namespace and name.
    #[error("a channel name is <namespace>:<name>")]
    MissingNamespace,
    /// Empty namespace or name.
    #[error("namespace and name must not be empty")]
    Empty,
    /// Over [`MAX_CHANNEL_LEN`] bytes.
    #[error("a channel name has at most {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    /// A character outside `A-Z a-z 0-9 - _ . : @ / =`.
    #[error("invalid character {0:?} in channel name")]
    InvalidChar(char),
}

impl ChannelName {
    /// Parses and validates a channel name.
    pub fn parse(s: &str) -> Result<Self, ChannelNameError> {
        if s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelNameError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@/=".contains(*c)))
        {
            return Err(ChannelNameError::InvalidChar(c));
        }
        let (ns, name) = s
            .split_once(':')
            .ok_or(ChannelNameError::MissingNamespace)?;
        if ns.is_empty() || name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        Ok(ChannelName(s.to_owned()))
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace (before the first `:`).
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    /// The name within the namespace (after the first `:`).
    pub fn name(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, n)| n)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Who may subscribe to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeRule {
    /// Anyone, even without a token.
    Anyone,
    /// Any authenticated user.
    Authenticated,
    /// Only the user whose id is the channel's name (private channels:
    /// `user:42` for user 42).
    Owner,
}

/// Who may publish to a channel (the HTTP API always may).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishRule {
    /// Nobody but the HTTP API.
    Nobody,
    /// Clients subscribed to the channel.
    Subscribers,
    /// Any authenticated user.
    Authenticated,
}

/// Where a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryStorage {
    /// In memory: lost at restart (a new epoch then).
    Memory,
    /// In the embedded database under the data directory.
    Persisted,
}

/// The policy of a channel namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Who may subscribe.
    pub subscribe: SubscribeRule,
    /// Who may publish.
    pub publish: PublishRule,
    /// How many publications the history keeps (0: no history).
    pub history_size: usize,
    /// How long publications stay in the history, in seconds (0: forever).
    pub history_ttl_secs: u64,
    /// Where the history is kept.
    pub history_storage: HistoryStorage,
    /// Whether presence (who is subscribed) is tracked.
    pub presence: bool,
    /// Whether join/leave events are sent to subscribers.
    pub join_leave: bool,
    /// Largest accepted publication, in bytes of JSON.
    pub max_message_size: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            subscribe: SubscribeRule::Authenticated,
            publish: PublishRule::Subscribers,
            history_size: 0,
            history_ttl_secs: 0,
            history_storage: HistoryStorage::Memory,
            presence: false,
            join_leave: false,
            max_message_size: 64 * 1024,
        }
    }
}

impl Policy {
    /// How long publications stay in the history (`None`: forever).
    pub fn history_ttl(&self) -> Option<Duration> {
        (self.history_ttl_secs > 0).then(|| Duration::from_secs(self.history_ttl_secs))
    }

    /// Whether `user` (`None`: anonymous) may subscribe to `channel`.
    pub fn may_subscribe(&self, channel: &ChannelName, user: Option<&str>) -> bool {
        match self.subscribe {
            SubscribeRule::Anyone => true,
            SubscribeRule::Authenticated => user.is_some(),
            SubscribeRule::Owner => user == Some(channel.name()),
        }
    }

    /// Whether a client may publish, given its user and whether it is
    /// subscribed to the channel.
    pub fn may_publish(&self, user: Option<&str>, subscribed: bool) -> bool {
        match self.publish {
            PublishRule::Nobody => false,
            PublishRule::Subscribers => subscribed,
            PublishRule::Authenticated => user.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_a_namespace_and_safe_characters() {
        let c = ChannelName::parse("chat:lobby").unwrap();
        assert_eq!((c.namespace(), c.name()), ("chat", "lobby"));
        let c = ChannelName::parse("user:42:inbox").unwrap();
        assert_eq!((c.namespace(), c.name()), ("user", "42:inbox"));
        assert_eq!(
            ChannelName::parse("lobby"),
            Err(ChannelNameError::MissingNamespace)
        );
        assert_eq!(ChannelName::parse(":x"), Err(ChannelNameError::Empty));
        assert_eq!(ChannelName::parse("chat:"), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse("chat:a b"),
            Err(ChannelNameError::InvalidChar(' '))
        );
        assert_eq!(
            ChannelName::parse(&format!("chat:{}", "x".repeat(300))),
            Err(ChannelNameError::TooLong)
        );
    }

    #[test]
    fn policies_decide_subscribe_and_publish() {
        let private = Policy {
            subscribe: SubscribeRule::Owner,
            publish: PublishRule::Nobody,
            ..Policy::default()
        };
        let mine = ChannelName::parse("user:42").unwrap();
        assert!(private.may_subscribe(&mine, Some("42")));
        assert!(!private.may_subscribe(&mine, Some("43")));
        assert!(!private.may_subscribe(&mine, None));
        assert!(!private.may_publish(Some("42"), true));
        let open = Policy {
            subscribe: SubscribeRule::Anyone,
            publish: PublishRule::Subscribers,
            ..Policy::default()
        };
        assert!(open.may_subscribe(&mine, None));
        assert!(open.may_publish(None, true));
        assert!(!open.may_publish(Some("1"), false));
    }
}
