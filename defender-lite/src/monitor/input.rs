//! Reads events from a JSON-lines stream (`defender-lite events --events FILE|-`), so
//! other sensors can feed the agent. The schema is `event.rs` (and `EVENTS.md`).
//!
//! A bad line never stops the stream: it is reported with its line number and counted,
//! and reading goes on. Lines are read with a length cap, so one endless line costs at
//! most the cap in memory, not the whole input.

use std::io::{self, BufRead, Read};

use super::event::Event;

/// Longest line accepted by default (64 KiB): far above any real event.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// A line that could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum BadLine {
    #[error("line {line}: not an event: {source}")]
    Invalid {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: longer than {max} bytes, skipped")]
    TooLong { line: u64, max: usize },
}

impl BadLine {
    pub fn line(&self) -> u64 {
        match self {
            BadLine::Invalid { line, .. } | BadLine::TooLong { line, .. } => *line,
        }
    }
}

/// Reads events line by line. Blank lines are skipped silently.
pub struct EventReader<R> {
    input: R,
    max_line: usize,
    line: u64,
    bad: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> EventReader<R> {
    pub fn new(input: R) -> Self {
        Self::with_max_line(input, DEFAULT_MAX_LINE)
    }

    pub fn with_max_line(input: R, max_line: usize) -> Self {
        EventReader {
            input,
            max_line,
            line: 0,
            bad: 0,
            buf: Vec::new(),
        }
    }

    /// Lines rejected so far.
    pub fn bad_lines(&self) -> u64 {
        self.bad
    }

    /// The next event or bad line; `Ok(None)` at the end of the input. An `Err` is an
    /// I/O error of the input itself, after which reading should stop.
    pub fn next_event(&mut self) -> io::Result<Option<Result<Event, BadLine>>> {
        loop {
            self.buf.clear();
            let limit = self.max_line as u64 + 1;
            let n = Read::take(&mut self.input, limit).read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let ended = self.buf.last() == Some(&b'\n');
            if !ended && self.buf.len() > self.max_line {
                // The line goes on past the cap: drop the rest of it, unread.
                self.skip_rest_of_line()?;
                self.bad += 1;
                return Ok(Some(Err(BadLine::TooLong {
                    line: self.line,
                    max: self.max_line,
                })));
            }
            let text = self.buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            return Ok(Some(match serde_json::from_slice::<Event>(text) {
                Ok(event) => Ok(event),
                Err(source) => {
                    self.bad += 1;
                    Err(BadLine::Invalid {
                        line: self.line,
                        source,
                    })
                }
            }));
        }
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.input.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let len = chunk.len();
                    self.input.consume(len);
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for EventReader<R> {
    type Item = io::Result<Result<Event, BadLine>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::event::EventKind;

    fn read_all(input: &str, max: usize) -> (Vec<Event>, Vec<String>, u64) {
        let mut r = EventReader::with_max_line(input.as_bytes(), max);
        let mut events = Vec::new();
        let mut bad = Vec::new();
        while let Some(item) = r.next_event().unwrap() {
            match item {
                Ok(e) => events.push(e),
                Err(b) => bad.push(format!("{}: {b}", b.line())),
            }
        }
        (events, bad, r.bad_lines())
    }

    const EXIT: &str = r#"{"ts":"2026-08-01T10:00:00Z","kind":"exit","pid":7}"#;

    #[test]
    fn bad_lines_are_reported_with_their_number_and_reading_goes_on() {
        let input = format!(
            "{EXIT}\nnot json\n\n{{\"ts\":\"2026-08-01T10:00:00Z\",\"kind\":\"teleport\"}}\n{EXIT}\n"
        );
        let (events, bad, count) = read_all(&input, 1024);
        assert_eq!(events.len(), 2);
        assert_eq!(count, 2);
        assert!(bad[0].starts_with("2: line 2: not an event"), "{bad:?}");
        assert!(bad[1].starts_with("4: line 4: not an event"), "{bad:?}");
        assert!(bad[1].contains("teleport"), "{bad:?}");
    }

    #[test]
    fn truncated_last_line_is_bad_but_a_complete_one_without_newline_is_fine() {
        let (events, bad, _) = read_all(&format!("{EXIT}\n{}", &EXIT[..20]), 1024);
        assert_eq!(events.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("2:"));
        let (events, bad, _) = read_all(EXIT, 1024);
        assert_eq!((events.len(), bad.len()), (1, 0));
    }

    #[test]
    fn oversized_lines_are_skipped_whole() {
        let long = format!(
            r#"{{"ts":"2026-08-01T10:00:00Z","kind":"exec","pid":1,"argv":["{}"]}}"#,
            "a".repeat(5000)
        );
        let input = format!("{long}\n{EXIT}\n{long}");
        let (events, bad, count) = read_all(&input, 1024);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0].kind, EventKind::Exit(_)));
        assert_eq!(count, 2);
        assert_eq!(bad[0], "1: line 1: longer than 1024 bytes, skipped");
        assert_eq!(bad[1], "3: line 3: longer than 1024 bytes, skipped");
    }

    #[test]
    fn a_line_exactly_at_the_cap_is_read() {
        let (events, bad, _) = read_all(&format!("{EXIT}\n"), EXIT.len());
        assert_eq!((events.len(), bad.len()), (1, 0));
    }

    #[test]
    fn invalid_utf8_and_wrong_types_do_not_panic() {
        let mut input = b"\xff\xfe{}\n".to_vec();
        input.extend_from_slice(br#"{"ts":"2026-08-01T10:00:00Z","kind":"exit","pid":-1}"#);
        input.push(b'\n');
        input.extend_from_slice(br#"{"ts":"yesterday","kind":"exit","pid":1}"#);
        let mut r = EventReader::new(&input[..]);
        let items: Vec<_> = r.by_ref().map(|i| i.unwrap()).collect();
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|i| i.is_err()));
        assert_eq!(r.bad_lines(), 3);
    }
}
