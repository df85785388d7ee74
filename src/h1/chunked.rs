//! The chunked transfer coding (RFC 9112 section 7.1), decoded as the bytes arrive.

use super::ExchangeError;
use bytes::{Buf, BytesMut};

/// Longest chunk-size line (with extensions) and all trailer lines together.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
const RESERVE_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers(usize),
    Done,
}

/// A chunked body being decoded.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    pub body: BytesMut,
    max: usize,
}

impl Decoder {
    /// A decoder that refuses a body over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            state: State::Size,
            body: BytesMut::new(),
            max,
        }
    }

    /// Takes what it can from the front of `buf`; true once the body and its
    /// trailers are complete (what follows stays in `buf`).
    pub fn feed(&mut self, buf: &mut BytesMut) -> Result<bool, ExchangeError> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Size => {
                    let Some(line) = take_line(buf, MAX_LINE, "chunk size line")? else {
                        return Ok(false);
                    };
                    let size = chunk_size(&line)?;
                    if self.body.len() as u64 + size > self.max as u64 {
                        return Err(ExchangeError::TooLarge(self.max));
                    }
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        // What arrives is stored as it arrives: a chunk's declared
                        // size reserves a buffer's worth at most.
                        self.body.reserve((size as usize).min(RESERVE_MAX));
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(false);
                    }
                    let n = (left as usize).min(buf.len());
                    self.body.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ExchangeError::Malformed(
                            "no CRLF after a chunk".to_string(),
                        ));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let room = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) = take_line(buf, room, "trailers")? else {
                        return Ok(false);
                    };
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// A CRLF-ended line from the front of `buf`, without its end; `None` until it is
/// all there. A line longer than `max` is malformed.
fn take_line(buf: &mut BytesMut, max: usize, what: &str) -> Result<Option<Vec<u8>>, ExchangeError> {
    let Some(end) = buf.iter().take(max + 2).position(|b| *b == b'\n') else {
        if buf.len() > max + 1 {
            return Err(ExchangeError::Malformed(format!("{what} too long")));
        }
        return Ok(None);
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(ExchangeError::Malformed(format!(
            "{what} not ended by CRLF"
        )));
    }
    let line = buf[..end - 1].to_vec();
    buf.advance(end + 1);
    Ok(Some(line))
}

/// The hex size before any `;extension`, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, ExchangeError> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let bad = || ExchangeError::Malformed("bad chunk size".to_string());
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(wire: &[u8], piece: usize) -> Result<(Vec<u8>, Vec<u8>), ExchangeError> {
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        while fed < wire.len() {
            let end = (fed + piece).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
            if d.feed(&mut buf)? {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(&wire[fed..]);
                return Ok((d.body.to_vec(), rest));
            }
        }
        Err(ExchangeError::Malformed("incomplete".to_string()))
    }

    #[test]
    fn decodes_in_any_pieces_and_leaves_what_follows() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for piece in 1..wire.len() {
            let (body, rest) = decode_in_pieces(wire, piece).unwrap();
            assert_eq!(
                body,
                b"helloabcdefghijklmnopqrstuvwxyz".to_vec(),
                "piece {piece}"
            );
            assert_eq!(rest, b"NEXT".to_vec(), "piece {piece}");
        }
    }

    #[test]
    fn refuses_bad_codings_and_oversized_bodies() {
        for wire in [
            &b"z\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
        ] {
            assert!(decode_in_pieces(wire, wire.len()).is_err(), "{wire:?}");
        }
        let mut d = Decoder::new(4);
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        assert!(matches!(d.feed(&mut buf), Err(ExchangeError::TooLarge(4))));
        let mut d = Decoder::new(4);
        let mut buf = BytesMut::from(&[b'1'; 5000][..]);
        assert!(d.feed(&mut buf).is_err());
    }
}
