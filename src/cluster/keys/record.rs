//! A key's record as etcd keeps it: a JSON header (the first message's id, node, claim
//! time and answer), a newline, then the answer's body when it is kept.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The first message's answer as duplicates on other nodes get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    /// Empty when no master answered (a queued message's 202).
    pub master: String,
    /// `None` when the body was over [`super::MAX_ANSWER_BODY`] and not kept.
    #[serde(skip)]
    pub body: Option<Bytes>,
}

/// What a key's record says about its first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The first message's id.
    pub id: String,
    /// The node that took it.
    pub node: String,
    /// When it was claimed, in milliseconds since the Unix epoch (that node's clock).
    pub at_ms: u64,
    /// Its answer; `None` while it is in flight.
    pub answer: Option<Answer>,
    /// Whether the answer's body is kept (it follows the header in the value).
    #[serde(default)]
    pub(super) body_kept: bool,
}

/// A record as stored: its JSON header, a newline, then the answer's body if kept.
pub(super) fn encode(record: &Record) -> Vec<u8> {
    // A struct of strings and numbers always serializes.
    let mut value = serde_json::to_vec(record).unwrap_or_default();
    value.push(b'\n');
    if let Some(body) = record.answer.as_ref().and_then(|a| a.body.as_ref()) {
        value.extend_from_slice(body);
    }
    value
}

pub(super) fn decode(value: &[u8]) -> Option<Record> {
    let split = memchr::memchr(b'\n', value)?;
    let mut record: Record = serde_json::from_slice(&value[..split]).ok()?;
    if let Some(answer) = &mut record.answer {
        if record.body_kept {
            answer.body = Some(Bytes::copy_from_slice(&value[split + 1..]));
        }
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_with_any_body_bytes() {
        let mut record = Record {
            id: "1".into(),
            node: "a".into(),
            at_ms: 5,
            answer: Some(Answer {
                status: 200,
                content_type: Some("application/octet-stream".into()),
                master: "m".into(),
                body: Some(Bytes::from_static(b"\n\x00{\"x\":1}\n")),
            }),
            body_kept: true,
        };
        assert_eq!(decode(&encode(&record)), Some(record.clone()));
        record.answer = None;
        record.body_kept = false;
        assert_eq!(decode(&encode(&record)), Some(record));
        assert_eq!(decode(b"not a record"), None);
    }
}
