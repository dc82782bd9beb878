//! History in Redis, shared by every node of a cluster: a channel's offset
//! and epoch are allocated by one Lua script that also appends to the
//! channel's stream (bounded by the channel's history size) and checks the
//! idempotency key, so two nodes never give out the same offset and a
//! client may resume on any node from a position another node gave it.
//!
//! Keys, with the channel in a hash tag so that they share a Redis Cluster
//! slot: `<prefix>:{<channel>}:meta` (hash: `e` epoch, `t` top offset),
//! `<prefix>:{<channel>}:s` (stream; entry id `<offset>-1`, fields `d`
//! data, `f` sender, `t` time in ms), `<prefix>:{<channel>}:k:<key>`
//! (idempotency, expiring). A stream's epoch is the store's
//! (`<prefix>:epoch`, made once) when it starts, so a client that read an
//! empty channel resumes its first publications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_redis::RedisLink;
use switchboard_redis::redis::{self, Script};

use super::{
    AppendOptions, Appended, History, HistoryError, KEY_MEMORY, Payload, Publication, Recovery,
    Stored, StreamPosition, new_epoch, now_ms, settled,
};
use crate::channel::ChannelName;

/// Allocates the next offset and stores the publication, atomically.
/// KEYS: meta, stream, idempotency key (or the meta key again when none).
/// ARGV: store epoch, data, sender, time ms, history size, stream ttl ms,
/// key memory ms, whether a key is given. Returns `{epoch, offset,
/// duplicate, data, sender, time}`.
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
end
if ARGV[8] == '1' then
  local seen = redis.call('HMGET', KEYS[3], 'o', 'd', 'f', 't')
  if seen[1] then
    return {epoch, seen[1], 1, seen[2], seen[3], seen[4]}
  end
end
local top = redis.call('HINCRBY', KEYS[1], 't', 1)
if tonumber(ARGV[5]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], top .. '-1', 'd', ARGV[2], 'f', ARGV[3], 't', ARGV[4])
  if tonumber(ARGV[6]) > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
  end
end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[3], 'o', top, 'd', ARGV[2], 'f', ARGV[3], 't', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return {epoch, tostring(top), 0, ARGV[2], ARGV[3], ARGV[4]}
";

/// History kept in Redis (see the module documentation).
pub struct RedisHistory {
    link: RedisLink,
    prefix: String,
    /// The store's epoch: every stream starts with it.
    epoch: String,
    append: Script,
    /// One lock per channel with an append in flight: a channel's
    /// follow-ups run in offset order; other channels do not wait.
    channels: Mutex<HashMap<ChannelName, Arc<tokio::sync::Mutex<()>>>>,
}

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

/// A publication from its offset and its stored fields (`d`, `f`, `t`).
fn entry(offset: u64, fields: &HashMap<String, String>) -> Publication {
    let data = fields
        .get("d")
        .and_then(|d| Payload::from_json(d.clone()))
        .unwrap_or_else(|| Payload::from_value(&serde_json::Value::Null));
    Publication {
        offset,
        data,
        from: fields.get("f").filter(|f| !f.is_empty()).cloned(),
        time_ms: fields.get("t").and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

fn offset_of(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

impl RedisHistory {
    /// History under `prefix` on the Redis behind `link`.
    pub async fn open(link: RedisLink, prefix: &str) -> Result<RedisHistory, HistoryError> {
        let key = format!("{prefix}:epoch");
        let _: bool = link
            .query(redis::cmd("SETNX").arg(&key).arg(new_epoch()))
            .await
            .map_err(storage)?;
        let epoch: String = link
            .query(redis::cmd("GET").arg(&key))
            .await
            .map_err(storage)?;
        Ok(RedisHistory {
            link,
            prefix: prefix.to_owned(),
            epoch,
            append: Script::new(APPEND),
            channels: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, channel: &ChannelName, part: &str) -> String {
        format!("{}:{{{}}}:{part}", self.prefix, channel.as_str())
    }

    fn lock_of(&self, channel: &ChannelName) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(channel.clone()).or_default())
    }

    /// Forgets a channel's lock once no append holds it.
    fn release(&self, channel: &ChannelName) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(channel).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(channel);
        }
    }

    /// The stream's epoch and top offset (the store's epoch and 0 for a
    /// channel never published to; nothing is written).
    async fn position(&self, channel: &ChannelName) -> Result<StreamPosition, HistoryError> {
        let (epoch, top): (Option<String>, Option<u64>) = self
            .link
            .query(
                redis::cmd("HMGET")
                    .arg(self.key(channel, "meta"))
                    .arg("e")
                    .arg("t"),
            )
            .await
            .map_err(storage)?;
        Ok(StreamPosition {
            offset: top.unwrap_or(0),
            epoch: epoch.unwrap_or_else(|| self.epoch.clone()),
        })
    }

    async fn entries(
        &self,
        command: redis::Cmd,
        ttl: Option<Duration>,
    ) -> Result<Vec<Publication>, HistoryError> {
        let raw: Vec<(String, HashMap<String, String>)> =
            self.link.query(&command).await.map_err(storage)?;
        let oldest = ttl.map(|t| now_ms().saturating_sub(t.as_millis() as u64));
        Ok(raw
            .into_iter()
            .map(|(id, fields)| entry(offset_of(&id), &fields))
            .filter(|p| oldest.is_none_or(|o| p.time_ms >= o))
            .collect())
    }
}

/// One append, with everything it needs to run on a task of its own.
struct Append {
    link: RedisLink,
    script: Script,
    meta: String,
    stream: String,
    idem: String,
    epoch: String,
    data: Payload,
    from: Option<String>,
    opts: AppendOptions,
}

impl Append {
    async fn run(&self) -> Result<Appended, HistoryError> {
        let ttl_ms = self.opts.ttl.map_or(0, |t| t.as_millis() as u64);
        let keyed = if self.opts.idempotency_key.is_some() {
            "1"
        } else {
            "0"
        };
        let reply: (String, String, u8, String, String, String) = self
            .link
            .script(
                self.script
                    .key(&self.meta)
                    .key(&self.stream)
                    .key(&self.idem)
                    .arg(&self.epoch)
                    .arg(self.data.as_str())
                    .arg(self.from.as_deref().unwrap_or(""))
                    .arg(now_ms())
                    .arg(self.opts.size)
                    .arg(ttl_ms)
                    .arg(KEY_MEMORY.as_millis() as u64)
                    .arg(keyed),
            )
            .await
            .map_err(storage)?;
        let (epoch, offset, duplicate, text, sender, time) = reply;
        let fields = HashMap::from([
            ("d".to_owned(), text),
            ("f".to_owned(), sender),
            ("t".to_owned(), time),
        ]);
        let mut publication = entry(offset.parse().unwrap_or(0), &fields);
        if duplicate == 0 {
            // What was just stored: the shared text, not a copy of it.
            publication.data = self.data.clone();
        }
        Ok(Appended {
            publication,
            epoch,
            duplicate: duplicate == 1,
        })
    }
}

#[async_trait]
impl History for RedisHistory {
    async fn append_then(
        &self,
        channel: &ChannelName,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
        then: Stored,
    ) -> Result<Appended, HistoryError> {
        // The channel's lock is held from the script to the end of the
        // follow-up: whoever takes it first gets the lower offset and fans
        // out first, so a channel's follow-ups run in offset order. Both
        // run on a task of their own: a caller that goes away cannot
        // leave a publication stored but not fanned out.
        let meta = self.key(channel, "meta");
        let append = Append {
            link: self.link.clone(),
            script: self.append.clone(),
            stream: self.key(channel, "s"),
            idem: match &opts.idempotency_key {
                Some(k) => self.key(channel, &format!("k:{k}")),
                None => meta.clone(),
            },
            meta,
            epoch: self.epoch.clone(),
            data,
            from,
            opts: opts.clone(),
        };
        let lock = self.lock_of(channel);
        let task = tokio::spawn(async move {
            let _guard = lock.lock_owned().await;
            let appended = append.run().await;
            if let Ok(a) = &appended {
                then(a);
            }
            appended
        });
        let appended = task.await.map_err(storage)?;
        self.release(channel);
        appended
    }

    async fn since(
        &self,
        channel: &ChannelName,
        position: &StreamPosition,
        ttl: Option<Duration>,
    ) -> Result<Recovery, HistoryError> {
        let current = self.position(channel).await?;
        if let Some(answer) = settled(position, &current) {
            return Ok(answer);
        }
        let needed = position.offset + 1;
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.key(channel, "s"))
            .arg(format!("{needed}-0"))
            .arg("+");
        let missed: Vec<Publication> = self
            .entries(cmd, ttl)
            .await?
            .into_iter()
            .filter(|p| p.offset <= current.offset)
            .collect();
        match missed.first() {
            Some(first) if first.offset == needed => Ok(Recovery::Recovered(missed)),
            _ => Ok(Recovery::NotRecovered { current }),
        }
    }

    async fn latest(
        &self,
        channel: &ChannelName,
        limit: usize,
        ttl: Option<Duration>,
    ) -> Result<(Vec<Publication>, StreamPosition), HistoryError> {
        let position = self.position(channel).await?;
        if limit == 0 || position.offset == 0 {
            return Ok((Vec::new(), position));
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.key(channel, "s"))
            .arg(format!("{}-1", position.offset))
            .arg("-")
            .arg("COUNT")
            .arg(limit);
        let mut items = self.entries(cmd, ttl).await?;
        items.reverse();
        Ok((items, position))
    }
}
