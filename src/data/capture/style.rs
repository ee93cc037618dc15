//! Which keyspace notifications a source emits, and how a notification names its key: read from
//! `notify-keyspace-events` where `CONFIG` is allowed, else proven with a probe key (ElastiCache blocks
//! `CONFIG`). On a cluster every primary is asked: notifications are per node, never broadcast.

use std::time::Duration;

use futures_util::StreamExt;

use super::ChangedKey;
use crate::data::connect::{RedisEndpoint, connect, pubsub};
use crate::data::error::DataError;
use crate::data::topology::{Topology, same_slot_tag};

/// Which notifications the source emits, as its `notify-keyspace-events` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStyle {
    /// `E`: `__keyevent@<db>__:<event>` carries the key as the message.
    KeyEvent,
    /// `K` only: `__keyspace@<db>__:<key>` carries the event as the message.
    KeySpace,
}

impl EventStyle {
    /// The pattern that receives every notification of this style.
    pub(super) fn pattern(self) -> &'static str {
        match self {
            EventStyle::KeyEvent => "__keyevent@*__:*",
            EventStyle::KeySpace => "__keyspace@*__:*",
        }
    }
}

/// Check a `notify-keyspace-events` value: `K` or `E`, plus every key class (`A`, or `g$lshzxe`).
pub fn notifications_style(flags: &str) -> Result<EventStyle, DataError> {
    let has = |c: char| flags.contains(c);
    let all_classes = has('A') || "g$lshzxe".chars().all(has);
    let style = if has('E') {
        Some(EventStyle::KeyEvent)
    } else if has('K') {
        Some(EventStyle::KeySpace)
    } else {
        None
    };
    match style {
        Some(s) if all_classes => Ok(s),
        _ => Err(DataError::Notifications {
            peer: None,
            message: format!(
                "notify-keyspace-events is `{flags}`; change capture needs `K` or `E` plus `A` (e.g. `KEA`)"
            ),
        }),
    }
}

/// `(db, key)` of one notification.
pub(super) fn parse(style: EventStyle, channel: &str, payload: &[u8]) -> Option<ChangedKey> {
    let rest = match style {
        EventStyle::KeyEvent => channel.strip_prefix("__keyevent@")?,
        EventStyle::KeySpace => channel.strip_prefix("__keyspace@")?,
    };
    let (db, tail) = rest.split_once("__:")?;
    let db: i64 = db.parse().ok()?;
    Some(match style {
        EventStyle::KeyEvent => (db, payload.to_vec()),
        EventStyle::KeySpace => (db, tail.as_bytes().to_vec()),
    })
}

/// How the source notifies changes: every primary's `CONFIG GET` where allowed (they must agree); where
/// it is blocked (ElastiCache), and `allow_probe`, a probe key with a 2 s expiry is written on the first
/// primary (in a slot it owns) and its notification awaited. ElastiCache applies one parameter group to
/// every node of a group, so one primary's probe speaks for all.
pub async fn detect_style(
    source: &RedisEndpoint,
    allow_probe: bool,
) -> Result<EventStyle, DataError> {
    let topology = Topology::discover(source).await?;
    let mut found: Option<(EventStyle, &RedisEndpoint)> = None;
    for shard in &topology.shards {
        let node = &shard.endpoint;
        let Some(flags) = configured_flags(node).await? else {
            return match allow_probe {
                true => probe_style(node, shard.slots[0].0, topology.cluster).await,
                // Whatever the failure (an error reply, an odd reply), CONFIG cannot be used here.
                false => Err(DataError::Refused {
                    peer: node.into(),
                    command: Some("CONFIG".into()),
                    message: "CONFIG is not allowed on the source, so its notify-keyspace-events cannot be read without writing a probe key".into(),
                }),
            };
        };
        let style = notifications_style(&flags).map_err(|e| match e {
            DataError::Notifications { message, .. } => DataError::Notifications {
                peer: Some(node.into()),
                message,
            },
            other => other,
        })?;
        match found {
            Some((first, at)) if first != style => {
                return Err(DataError::Notifications {
                    peer: Some(node.into()),
                    message: format!(
                        "notify-keyspace-events differs between the primaries ({} has `{flags}`, {} another style): give every node the same value, e.g. `KEA`",
                        node.display_url(),
                        at.display_url()
                    ),
                });
            }
            Some(_) => {}
            None => found = Some((style, node)),
        }
    }
    found.map(|(s, _)| s).ok_or_else(|| {
        DataError::Internal("a topology without a primary cannot be captured".into())
    })
}

/// `notify-keyspace-events` of one node, `None` where `CONFIG GET` is refused.
async fn configured_flags(node: &RedisEndpoint) -> Result<Option<String>, DataError> {
    let mut conn = connect(node).await?;
    let config: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await;
    Ok(match config {
        Ok(pair) if pair.len() == 2 => Some(pair[1].clone()),
        _ => None,
    })
}

/// Write a probe key with a 2 s expiry on `node` and see which notification it raises. On a cluster the
/// key carries a hash tag of `slot`, a slot the node owns, so the node takes the write itself.
async fn probe_style(
    node: &RedisEndpoint,
    slot: u16,
    cluster: bool,
) -> Result<EventStyle, DataError> {
    let mut conn = connect(node).await?;
    let mut sub = pubsub(node).await?;
    sub.psubscribe("__key*__:*")
        .await
        .map_err(|e| DataError::redis(node, &e).context("PSUBSCRIBE"))?;
    let mut token = [0u8; 6];
    aws_lc_rs::rand::fill(&mut token).map_err(|_| DataError::Internal("random".into()))?;
    let mut probe = if cluster {
        same_slot_tag(slot)
    } else {
        Vec::new()
    };
    probe.extend_from_slice(b"ecmigrate:probe:");
    probe.extend(token.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
    let _: () = redis::cmd("SET")
        .arg(&probe)
        .arg("1")
        .arg("PX")
        .arg(2000)
        .query_async(&mut conn)
        .await
        .map_err(|e| DataError::redis(node, &e).context("probe"))?;
    let mut stream = sub.on_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut keyspace_seen = false;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let channel = msg.get_channel_name();
        if channel.starts_with("__keyevent@") && msg.get_payload_bytes() == probe.as_slice() {
            return Ok(EventStyle::KeyEvent);
        }
        keyspace_seen |=
            channel.starts_with("__keyspace@") && channel.as_bytes().ends_with(probe.as_slice());
    }
    match keyspace_seen {
        true => Ok(EventStyle::KeySpace),
        _ => Err(DataError::Notifications {
            peer: Some(node.into()),
            message: "no keyspace notification arrived for a probe key: notify-keyspace-events is off or lacks `K`/`E` plus `A`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_flags() {
        assert_eq!(notifications_style("KEA").ok(), Some(EventStyle::KeyEvent));
        assert_eq!(
            notifications_style("Kg$lshzxe").ok(),
            Some(EventStyle::KeySpace)
        );
        assert!(matches!(
            notifications_style(""),
            Err(DataError::Notifications { .. })
        ));
        assert!(notifications_style("Ex").is_err());
        assert!(notifications_style("KA").is_ok());
    }

    #[test]
    fn channels_parse_to_db_and_key() {
        assert_eq!(
            parse(EventStyle::KeyEvent, "__keyevent@3__:set", b"k"),
            Some((3, b"k".to_vec()))
        );
        assert_eq!(
            parse(EventStyle::KeySpace, "__keyspace@0__:a:b", b"del"),
            Some((0, b"a:b".to_vec()))
        );
        assert_eq!(parse(EventStyle::KeyEvent, "other", b"k"), None);
    }
}
