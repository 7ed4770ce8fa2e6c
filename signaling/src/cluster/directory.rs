//! The cluster directory in Redis: live nodes and room origin leases. All of the I/O is here.
//!
//! Client: the `redis` crate (redis-rs), the most used and actively maintained Rust client,
//! with tokio and its `ConnectionManager`, which reconnects by itself after Redis restarts, and
//! `Script`, which runs the lease scripts by hash and reloads them into a restarted Redis.
//! `fred` would do as well; redis-rs has fewer dependencies and a smaller API for what we need.
//!
//! Layout (prefix `aula:cluster:`):
//! - `node:ID`: the node's [`NodeInfo`] as JSON, expiring after the node TTL unless refreshed;
//! - `origin:ROOM`: the room's [`Lease`] as JSON, expiring after the lease TTL unless renewed;
//! - `epoch:ROOM`: the room's last epoch (INCR'd by each claim), kept a week past its last use;
//! - `state:ROOM`: what the room's origin saved of its state ([`Saved`]), for the next origin
//!   if this one dies; kept [`STATE_KEEP_PAST_LEASE`] past the lease, renewed with it.
//!
//! Listing uses SCAN over the key pattern: fine for the tens of nodes and thousands of rooms of
//! a school, and it needs no second structure to keep in step with the expiring keys.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

use super::lease::{self, Claim, Lease};
use super::node::{self, NodeInfo};
use super::room_state::{self, RoomState, Saved};

/// How long a command may take before it fails: a Redis that does not answer must not hold up a
/// refresh for longer than one would take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an epoch counter outlives the last claim or renew of its room. Far longer than any
/// lease, so a room's epochs keep rising across origin failures.
const EPOCH_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Claims a free room. KEYS: origin, epoch. ARGV: node id, lease TTL ms, epoch keep ms.
/// Returns `{1, lease}` when claimed, `{0, lease}` with the holder's lease otherwise.
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then return {0, held} end
local epoch = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local lease = cjson.encode({node = ARGV[1], epoch = epoch})
redis.call('SET', KEYS[1], lease, 'PX', ARGV[2])
return {1, lease}
"#;

/// How long a room's saved state outlives its lease (renewed with it): past a dead origin's
/// lease, the time its participants take to come back (their SDKs rejoin for up to a minute,
/// and a node remembers a lost participant as long: `crate::rejoin::REMEMBERED_FOR`).
const STATE_KEEP_PAST_LEASE: Duration = crate::rejoin::REMEMBERED_FOR;

/// Extends a lease, and the room's saved state, if the lease is still the caller's (same node,
/// same epoch). KEYS: origin, epoch, state. ARGV: node id, epoch, lease TTL ms, epoch keep ms,
/// state keep ms. Returns 1 if renewed, else 0.
const RENEW: &str = r#"
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local lease = cjson.decode(held)
if lease.node ~= ARGV[1] or tonumber(lease.epoch) ~= tonumber(ARGV[2]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
"#;

/// Ends a lease if it is still the caller's, and with `ARGV[3]` = 1 the room's saved state
/// too. KEYS: origin, state. ARGV: node id, epoch, forget state (0 or 1).
/// Returns 1 if released, else 0.
const RELEASE: &str = r#"
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local lease = cjson.decode(held)
if lease.node ~= ARGV[1] or tonumber(lease.epoch) ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
return 1
"#;

/// Saves a room's state under an epoch, only if it is the room's newest: a former origin's
/// epoch is older, so a zombie origin's save is refused even before the new origin saved
/// anything. KEYS: state, epoch. ARGV: epoch, value, state TTL ms. Returns 1 if saved, else 0.
const SAVE_STATE: &str = r#"
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) ~= newest then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A value that is not what Aula writes: another program, or a newer incompatible format.
    #[error("malformed value at {key}: {source}")]
    Malformed {
        key: String,
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, DirectoryError>;

/// A connection to the directory. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
    lease_ttl: Duration,
    claim: Script,
    renew: Script,
    release: Script,
    save_state: Script,
}

impl Directory {
    /// Opens the directory at `redis_url` without connecting: the connection is made by the
    /// first command and remade after failures, so a node starts while Redis is down.
    pub fn open(redis_url: &str, lease_ttl: Duration) -> Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // Retries happen at the caller's pace (every refresh), not in a burst here.
            .set_number_of_retries(1);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            lease_ttl,
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            save_state: Script::new(SAVE_STATE),
        })
    }

    /// Writes (or refreshes) a node's entry, to expire after `ttl` unless written again.
    pub async fn register(&self, node: &NodeInfo, ttl: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .pset_ex(node::node_key(&node.id), node.encode(), millis(ttl))
            .await?;
        Ok(())
    }

    /// Removes a node's entry at once (a clean shutdown), rather than after its TTL.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(node::node_key(id)).await?;
        Ok(())
    }

    /// Every live node, sorted by id. A malformed entry fails the listing rather than hiding a
    /// node.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let mut nodes = Vec::new();
        for (key, value) in self.scan_values(&node::node_key_pattern()).await? {
            let node = NodeInfo::decode(&value)
                .map_err(|source| DirectoryError::Malformed { key, source })?;
            nodes.push(node);
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Claims `room` for `node` if no node holds it, atomically.
    pub async fn claim_origin(&self, room: &str, node: &str) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let (won, value): (i64, String) = self
            .claim
            .key(lease::origin_key(room))
            .key(lease::epoch_key(room))
            .arg(node)
            .arg(millis(self.lease_ttl))
            .arg(millis(EPOCH_KEEP))
            .invoke_async(&mut conn)
            .await?;
        Claim::from_reply(won, &value).map_err(|source| DirectoryError::Malformed {
            key: lease::origin_key(room),
            source,
        })
    }

    /// Extends `lease` by the lease TTL. False when it is no longer in force: it expired, or
    /// another node claimed the room since (a newer epoch). The holder then must stop acting as
    /// the room's origin.
    pub async fn renew(&self, room: &str, lease: &Lease) -> Result<bool> {
        let mut conn = self.conn.clone();
        let renewed: i64 = self
            .renew
            .key(lease::origin_key(room))
            .key(lease::epoch_key(room))
            .key(room_state::state_key(room))
            .arg(&lease.node)
            .arg(lease.epoch)
            .arg(millis(self.lease_ttl))
            .arg(millis(EPOCH_KEEP))
            .arg(millis(self.state_keep()))
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives `lease` up so another node can claim the room at once. False when it was no
    /// longer in force (nothing is removed then). The room's saved state is kept (it expires
    /// `STATE_KEEP_PAST_LEASE` after the last renew).
    pub async fn release(&self, room: &str, lease: &Lease) -> Result<bool> {
        self.release_with(room, lease, false).await
    }

    /// Like [`Directory::release`], and forgets the room's saved state: its class is over.
    pub async fn release_ended(&self, room: &str, lease: &Lease) -> Result<bool> {
        self.release_with(room, lease, true).await
    }

    async fn release_with(&self, room: &str, lease: &Lease, forget_state: bool) -> Result<bool> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .release
            .key(lease::origin_key(room))
            .key(room_state::state_key(room))
            .arg(&lease.node)
            .arg(lease.epoch)
            .arg(u8::from(forget_state))
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// Saves `room`'s state under `epoch`, for the room's next origin. False (nothing written)
    /// when `epoch` is not the room's newest: another node claimed the room since.
    pub async fn save_room_state(&self, room: &str, epoch: u64, state: &RoomState) -> Result<bool> {
        let value = Saved {
            epoch,
            state: state.clone(),
        }
        .encode();
        let mut conn = self.conn.clone();
        let saved: i64 = self
            .save_state
            .key(room_state::state_key(room))
            .key(lease::epoch_key(room))
            .arg(epoch)
            .arg(value)
            .arg(millis(self.state_keep()))
            .invoke_async(&mut conn)
            .await?;
        Ok(saved == 1)
    }

    /// The state `room`'s origin last saved, if it has not expired.
    pub async fn room_state(&self, room: &str) -> Result<Option<Saved>> {
        let mut conn = self.conn.clone();
        let key = room_state::state_key(room);
        let value: Option<String> = conn.get(&key).await?;
        value
            .map(|v| Saved::decode(&v).map_err(|source| DirectoryError::Malformed { key, source }))
            .transpose()
    }

    /// How long a saved state lives unrenewed.
    fn state_keep(&self) -> Duration {
        self.lease_ttl + STATE_KEEP_PAST_LEASE
    }

    /// The lease in force for `room`, if any node holds it.
    pub async fn origin_of(&self, room: &str) -> Result<Option<Lease>> {
        let mut conn = self.conn.clone();
        let key = lease::origin_key(room);
        let value: Option<String> = conn.get(&key).await?;
        value
            .map(|v| Lease::decode(&v).map_err(|source| DirectoryError::Malformed { key, source }))
            .transpose()
    }

    /// Every room that has an origin now, with its lease.
    pub async fn origins(&self) -> Result<HashMap<String, Lease>> {
        let mut origins = HashMap::new();
        for (key, value) in self.scan_values(&lease::origin_key_pattern()).await? {
            let lease = Lease::decode(&value).map_err(|source| DirectoryError::Malformed {
                key: key.clone(),
                source,
            })?;
            if let Some(room) = lease::room_of_origin_key(&key) {
                origins.insert(room.to_owned(), lease);
            }
        }
        Ok(origins)
    }

    /// The keys matching `pattern` with their values; keys that expire between the SCAN and the
    /// read are left out.
    async fn scan_values(&self, pattern: &str) -> Result<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .cursor_arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = conn.mget(&keys).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| Some((key, value?)))
            .collect())
    }
}

/// A TTL in Redis's milliseconds, at least 1 (0 is an error to `PX`).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
