//! One queued message as stored: a small versioned binary layout (fixed fields, then
//! length-prefixed strings and the body), so a record is read back without a schema
//! crate and a truncated or foreign value is an error, never a panic.

use bytes::Bytes;

/// Where a queued message stands (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Delivered,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Delivered => 1,
            Self::Dead => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Queued,
            1 => Self::Delivered,
            2 => Self::Dead,
            _ => return None,
        })
    }
}

/// A message id: the 16 bytes of its UUIDv7, which sort by acceptance time.
pub type Id = [u8; 16];

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: Id,
    pub status: Status,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When the next delivery attempt is due (queued messages).
    pub due_ms: u64,
    /// Real delivery attempts made.
    pub attempts: u32,
    pub content_type: Option<String>,
    pub idempotency_key: String,
    pub region: Option<String>,
    /// The routing key: messages sharing one are delivered in acceptance order.
    pub routing_key: Option<String>,
    pub master: Option<String>,
    pub last_error: Option<String>,
    pub body: Bytes,
    /// The master's answer to a message delivered at once, kept to replay to a repeat
    /// of its `Idempotency-Key`. Queued messages have none: a repeat gets the 202.
    pub answer: Option<MasterAnswer>,
    /// The client's headers named in `routing.forward_headers` (and a generated
    /// `x-request-id`), as (lower-case name, value): passed on at each delivery.
    pub forward_headers: Vec<(String, String)>,
    /// The client that sent it (`crate::clients`): only it may see the message's
    /// status. Empty in records written before clients were kept.
    pub client: String,
    /// The request's `x-request-id` (the client's, or the message id), for the access
    /// log line of its final outcome.
    pub request_id: Option<String>,
    /// The recipient sticky routing keeps on one master (`routing.sticky`).
    pub recipient: Option<String>,
}

/// What a master answered, as kept for repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Version 2 added `routing_key`, version 3 the answer, version 4 the forwarded
/// headers (a big-endian `u16` count, then each name and value) and version 5 the
/// client and the request id, version 6 the sticky recipient, each at the end; older
/// records are still read.
const VERSION: u8 = 6;

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.push(self.status.code());
        for n in [self.created_ms, self.updated_ms, self.due_ms] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&self.attempts.to_be_bytes());
        for s in [
            self.content_type.as_deref(),
            Some(self.idempotency_key.as_str()),
            self.region.as_deref(),
            self.master.as_deref(),
            self.last_error.as_deref(),
        ] {
            put_optional(&mut out, s.map(str::as_bytes));
        }
        put_optional(&mut out, Some(&self.body));
        put_optional(&mut out, self.routing_key.as_deref().map(str::as_bytes));
        match &self.answer {
            None => out.extend_from_slice(&0u16.to_be_bytes()),
            Some(a) => {
                out.extend_from_slice(&a.status.to_be_bytes());
                put_optional(&mut out, a.content_type.as_deref().map(str::as_bytes));
                put_optional(&mut out, Some(&a.body));
            }
        }
        // At most `MAX_FORWARD_HEADERS` (32) names are configured.
        let count = self.forward_headers.len().min(u16::MAX as usize);
        out.extend_from_slice(&(count as u16).to_be_bytes());
        for (name, value) in &self.forward_headers[..count] {
            put_optional(&mut out, Some(name.as_bytes()));
            put_optional(&mut out, Some(value.as_bytes()));
        }
        put_optional(&mut out, Some(self.client.as_bytes()));
        put_optional(&mut out, self.request_id.as_deref().map(str::as_bytes));
        put_optional(&mut out, self.recipient.as_deref().map(str::as_bytes));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, &'static str> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if !(1..=VERSION).contains(&version) {
            return Err("unknown record version");
        }
        let id: Id = r.take(16)?.try_into().map_err(|_| "short id")?;
        let status = Status::from_code(r.take(1)?[0]).ok_or("unknown status")?;
        let created_ms = r.u64()?;
        let updated_ms = r.u64()?;
        let due_ms = r.u64()?;
        let attempts = u32::from_be_bytes(r.take(4)?.try_into().map_err(|_| "short")?);
        let content_type = r.string()?;
        let idempotency_key = r.string()?.ok_or("missing idempotency key")?;
        let region = r.string()?;
        let master = r.string()?;
        let last_error = r.string()?;
        let body = Bytes::copy_from_slice(r.optional()?.ok_or("missing body")?);
        let routing_key = if version >= 2 { r.string()? } else { None };
        let answer = match if version >= 3 { r.u16()? } else { 0 } {
            0 => None,
            status => Some(MasterAnswer {
                status,
                content_type: r.string()?,
                body: Bytes::copy_from_slice(r.optional()?.ok_or("missing answer body")?),
            }),
        };
        let count = if version >= 4 { r.u16()? } else { 0 };
        let mut forward_headers = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let name = r.string()?.ok_or("missing header name")?;
            let value = r.string()?.ok_or("missing header value")?;
            forward_headers.push((name, value));
        }
        let (client, request_id) = if version >= 5 {
            (r.string()?.ok_or("missing client")?, r.string()?)
        } else {
            (String::new(), None)
        };
        let recipient = if version >= 6 { r.string()? } else { None };
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok(Record {
            id,
            status,
            created_ms,
            updated_ms,
            due_ms,
            attempts,
            content_type,
            idempotency_key,
            region,
            routing_key,
            master,
            last_error,
            body,
            answer,
            forward_headers,
            client,
            request_id,
            recipient,
        })
    }

    /// The key the `Idempotency-Key` is filed under: scoped by the client, so that
    /// clients never share keys (an anonymous or older record's key stands alone).
    pub fn idempotency_scope(&self) -> std::borrow::Cow<'_, str> {
        scoped_key(&self.client, &self.idempotency_key)
    }
}

/// An `Idempotency-Key` as filed for `client`: the key itself for anonymous requests,
/// else the client id, a unit separator and the key.
pub fn scoped_key<'a>(client: &str, key: &'a str) -> std::borrow::Cow<'a, str> {
    if client.is_empty() || client == &**crate::clients::ANONYMOUS {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(format!("{client}\u{1f}{key}"))
    }
}

impl Record {
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.id)
    }

    /// The `GET /v1/messages/{id}` body (SPEC section 4).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.uuid().to_string(),
            "status": self.status.as_str(),
            "master": self.master,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": at(self.created_ms),
            "updated_at": at(self.updated_ms),
        })
    }

    /// A dead letter as `GET /admin/dead-letters` lists it: the status fields, plus
    /// what an operator needs to judge it (the body as text, lossily).
    pub fn dead_letter_json(&self) -> serde_json::Value {
        let mut v = self.status_json();
        v["idempotency_key"] = self.idempotency_key.clone().into();
        v["routing_key"] = self.routing_key.clone().into();
        v["content_type"] = self.content_type.clone().into();
        v["body"] = String::from_utf8_lossy(&self.body).into_owned().into();
        v
    }
}

fn at(ms: u64) -> String {
    crate::util::format_rfc3339(std::time::Duration::from_millis(ms))
}

/// `u32::MAX` marks "absent"; otherwise a big-endian length and the bytes.
fn put_optional(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated record");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().map_err(|_| "short")?,
        ))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().map_err(|_| "short")?,
        ))
    }

    fn optional(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "short")?);
        if len == u32::MAX {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    fn string(&mut self) -> Result<Option<String>, &'static str> {
        self.optional()?
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8"))
            .transpose()
    }
}

#[cfg(test)]
impl Record {
    /// A queued message with no key, client or headers, for the tests that build on one.
    pub(crate) fn test_queued(id: Id, body: &'static [u8]) -> Record {
        Record {
            id,
            status: Status::Queued,
            created_ms: 1,
            updated_ms: 1,
            due_ms: 1,
            attempts: 0,
            content_type: None,
            idempotency_key: "k".into(),
            region: None,
            routing_key: None,
            master: None,
            last_error: None,
            body: Bytes::from_static(body),
            answer: None,
            forward_headers: Vec::new(),
            client: String::new(),
            request_id: None,
            recipient: None,
        }
    }

    /// A queued message with every field set, for the tests of its encodings.
    pub(crate) fn test_full() -> Record {
        Record {
            id: [7; 16],
            status: Status::Queued,
            created_ms: 1,
            updated_ms: 2,
            due_ms: 3,
            attempts: 4,
            content_type: Some("application/json".into()),
            idempotency_key: "k".into(),
            region: None,
            routing_key: Some("+971".into()),
            master: Some("a".into()),
            last_error: Some("503".into()),
            body: Bytes::from_static(b"{\"to\":1}"),
            answer: None,
            forward_headers: vec![
                (
                    "traceparent".into(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                ),
                ("x-request-id".into(), "r-1".into()),
            ],
            client: "billing".into(),
            request_id: Some("r-1".into()),
            recipient: Some("+971500000001".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record::test_full();
        assert_eq!(Record::decode(&r.encode()), Ok(r));
        let answered = Record {
            answer: Some(MasterAnswer {
                status: 200,
                content_type: None,
                body: Bytes::from_static(b"ok"),
            }),
            ..Record::test_full()
        };
        assert_eq!(Record::decode(&answered.encode()), Ok(answered));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let answered = Record {
            answer: Some(MasterAnswer {
                status: 400,
                content_type: Some("text/plain".into()),
                body: Bytes::from_static(b"no"),
            }),
            ..Record::test_full()
        };
        let bytes = answered.encode();
        for n in 0..bytes.len() {
            assert!(Record::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
    }

    /// A version 3 record, as written before the forwarded headers were stored: the
    /// bytes are spelled out, not made by today's `encode`.
    #[test]
    fn a_version_3_record_still_decodes() {
        let mut v3 = vec![3u8];
        v3.extend_from_slice(&[7; 16]);
        v3.push(0); // queued
        for n in [1u64, 2, 3] {
            v3.extend_from_slice(&n.to_be_bytes());
        }
        v3.extend_from_slice(&4u32.to_be_bytes());
        for s in [
            Some("application/json"),
            Some("k"),
            None,
            Some("a"),
            Some("503"),
        ] {
            put_optional(&mut v3, s.map(str::as_bytes));
        }
        put_optional(&mut v3, Some(b"{\"to\":1}"));
        put_optional(&mut v3, Some(b"+971"));
        v3.extend_from_slice(&0u16.to_be_bytes()); // no answer
        let old = Record::decode(&v3).unwrap();
        assert_eq!(
            old,
            Record {
                forward_headers: Vec::new(),
                client: String::new(),
                request_id: None,
                recipient: None,
                ..Record::test_full()
            }
        );
        // Written again, it is a version 6 record.
        assert_eq!(old.encode()[0], 6);
        assert_eq!(Record::decode(&old.encode()), Ok(old));
    }

    /// A version 4 record (forwarded headers, no client): spelled out by hand.
    #[test]
    fn a_version_4_record_still_decodes_without_a_client() {
        let mut v5 = Record::test_full().encode();
        // Drop the client, the request id and the recipient at the end, and say
        // version 4.
        let tail = 4 + "billing".len() + 4 + "r-1".len() + 4 + "+971500000001".len();
        v5.truncate(v5.len() - tail);
        v5[0] = 4;
        let old = Record::decode(&v5).unwrap();
        assert_eq!(old.client, "");
        assert_eq!(old.request_id, None);
        assert_eq!(old.forward_headers, Record::test_full().forward_headers);
        assert_eq!(old.idempotency_scope(), "k");
        assert_eq!(Record::test_full().idempotency_scope(), "billing\u{1f}k");
    }

    /// A version 5 record (no recipient) decodes with none.
    #[test]
    fn a_version_5_record_still_decodes_without_a_recipient() {
        let mut v6 = Record::test_full().encode();
        v6.truncate(v6.len() - (4 + "+971500000001".len()));
        v6[0] = 5;
        let old = Record::decode(&v6).unwrap();
        assert_eq!(old.recipient, None);
        assert_eq!(old.client, "billing");
    }
}
