//! Reading an event stream (`text/event-stream`) as the HTML standard says
//! ("Interpreting an event stream"): lines end with CRLF, LF or CR, also across the chunks
//! they arrive in; a line that starts with `:` is a comment; `field: value` loses one space
//! after the colon; `data` lines join with LF; a blank line dispatches the event if it has
//! data; `id` sets the last event id unless it holds NUL; `retry` with digits only sets the
//! reconnection time; other fields are ignored. A byte-order mark at the start is skipped.
//!
//! What a peer can make it hold is bounded: a line or an event's data over [`MAX_BYTES`] is
//! an error, not a bigger buffer.

use std::time::Duration;

/// The longest line, and the most data of one event, taken from a peer.
pub const MAX_BYTES: usize = 64 * 1024;

/// What the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event: its type (`message` when none was given), data, and the last
    /// event id at that point.
    Event {
        event: String,
        data: String,
        id: Option<String>,
    },
    /// The server's reconnection time.
    Retry(Duration),
}

/// The stream is not one this reader takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event stream: a line or an event over {MAX_BYTES} bytes")]
pub struct TooLong;

/// An event stream's reader, fed bytes as they come.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF right after it ends no second line.
    after_cr: bool,
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds `bytes`; what they complete is pushed to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseItem>) -> Result<(), TooLong> {
        if !self.started && !bytes.is_empty() {
            // The BOM may arrive split: wait until three bytes (or a line) can tell.
            self.line.extend_from_slice(bytes);
            if self.line.len() < 3 && !self.line.iter().any(|b| *b == b'\n' || *b == b'\r') {
                return Ok(());
            }
            self.started = true;
            let held = std::mem::take(&mut self.line);
            let rest = held.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&held);
            return self.feed(rest, out);
        }
        while let Some(at) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let end = bytes[at];
            if at == 0 && end == b'\n' && self.after_cr && self.line.is_empty() {
                // The LF of a CRLF whose CR ended the last line.
                self.after_cr = false;
                bytes = &bytes[1..];
                continue;
            }
            self.push_line_bytes(&bytes[..at])?;
            let line = std::mem::take(&mut self.line);
            self.line_done(&String::from_utf8_lossy(&line), out)?;
            self.after_cr = end == b'\r';
            bytes = &bytes[at + 1..];
        }
        if !bytes.is_empty() {
            self.after_cr = false;
        }
        self.push_line_bytes(bytes)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        if self.line.len() + bytes.len() > MAX_BYTES {
            return Err(TooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<SseItem>) -> Result<(), TooLong> {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                let event = std::mem::take(&mut self.event);
                out.push(SseItem::Event {
                    event: if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event
                    },
                    data,
                    id: self.last_id.clone(),
                });
            }
            self.event.clear();
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_BYTES {
                    return Err(TooLong);
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    out.push(SseItem::Retry(Duration::from_millis(ms)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> SseItem {
        SseItem::Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    /// Feeds `stream` whole, then one byte at a time: both must read the same.
    fn read(stream: &[u8]) -> Vec<SseItem> {
        let mut whole = Vec::new();
        SseParser::default().feed(stream, &mut whole).unwrap();
        let mut parser = SseParser::default();
        let mut bytewise = Vec::new();
        for b in stream {
            parser.feed(std::slice::from_ref(b), &mut bytewise).unwrap();
        }
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(stream));
        whole
    }

    #[test]
    fn the_standards_cases() {
        let table: &[(&[u8], Vec<SseItem>)] = &[
            // LF, CRLF and CR line ends, mixed.
            (b"data: a\n\n", vec![event("message", "a", None)]),
            (b"data: a\r\n\r\n", vec![event("message", "a", None)]),
            (
                b"data: a\r\rdata: b\r\n\n",
                vec![event("message", "a", None), event("message", "b", None)],
            ),
            // Comments, a field without a colon, unknown fields; one space is dropped.
            (
                b": keep-alive\nevent:bundle\ndata:  two spaces\nfoo: bar\n\n",
                vec![event("bundle", " two spaces", None)],
            ),
            (b"data\n\n", vec![event("message", "", None)]),
            // Data lines join with LF; no data, no event (the type is reset).
            (
                b"data: 1\ndata: 2\n\nevent: x\n\ndata: 3\n\n",
                vec![event("message", "1\n2", None), event("message", "3", None)],
            ),
            // id persists; one with NUL is ignored; retry takes digits only.
            (
                b"id: 7\ndata: a\n\nid: 8\0\ndata: b\n\nretry: 2500\nretry: 3s\nretry:\n",
                vec![
                    event("message", "a", Some("7")),
                    event("message", "b", Some("7")),
                    SseItem::Retry(Duration::from_millis(2500)),
                ],
            ),
            // A BOM at the start; an event not ended by a blank line is not dispatched.
            (
                b"\xef\xbb\xbfdata: a\n\ndata: b\n",
                vec![event("message", "a", None)],
            ),
            // The relay's own frames.
            (
                b"id: 42\nevent: bundle\ndata: {\"sequence\":42}\n\n",
                vec![event("bundle", "{\"sequence\":42}", Some("42"))],
            ),
        ];
        for (stream, expected) in table {
            assert_eq!(
                &read(stream),
                expected,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn a_peer_cannot_make_it_hold_more_than_the_cap() {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        let line = vec![b'x'; MAX_BYTES + 1];
        assert_eq!(parser.feed(&line, &mut out), Err(TooLong));
        let mut parser = SseParser::default();
        let many = "data: 0123456789abcdef\n".repeat(MAX_BYTES / 16);
        assert_eq!(parser.feed(many.as_bytes(), &mut out), Err(TooLong));
    }
}
