//! A Server-Sent Events parser over a byte stream (the `text/event-stream` format of the HTML
//! standard): lines ended by LF, CRLF or CR, `field: value` lines, comments starting with `:`,
//! and a blank line that dispatches the event.
//!
//! It is fed chunks exactly as they come off the connection, so a line, a CRLF pair or a UTF-8
//! character may be split between two chunks; the parser keeps the partial line until its end
//! arrives.

use std::time::Duration;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, `"message"` when the event had none.
    pub(crate) event: String,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
}

/// An event grew past the parser's limit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event of the stream is larger than {limit} bytes")]
pub(crate) struct EventTooLarge {
    pub(crate) limit: usize,
}

/// The UTF-8 byte order mark, which the format allows (and ignores) at the start of the stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parser state between chunks.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// The bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting this chunk belongs to it (CRLF).
    after_cr: bool,
    /// The start of the stream has been seen (and a BOM there dropped).
    started: bool,
    /// The current event's type, if an `event:` line set one.
    event: Option<String>,
    /// The current event's data lines, each followed by `\n`.
    data: String,
    /// A `data:` line was seen for the current event (an event with only comments or an
    /// `event:` line is not dispatched).
    has_data: bool,
    /// The last `id:` seen, sent back as `Last-Event-ID` on reconnect.
    last_event_id: Option<String>,
    /// The last `retry:` seen: the reconnection delay the server asks for.
    retry: Option<Duration>,
    /// The most bytes one event (its line buffer and data) may take. Bounds the memory a
    /// misbehaving server can make the client hold.
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser for a new connection; events larger than `max_event_bytes` are refused.
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            started: false,
            event: None,
            data: String::new(),
            has_data: false,
            last_event_id: None,
            retry: None,
            max_event_bytes,
        }
    }

    /// Prepares for a new connection: a partial line or event of the old one is dropped; the
    /// last event id and the retry hint are kept (they outlive connections).
    pub(crate) fn reset_connection(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.started = false;
        self.reset_event();
    }

    /// The last event id the server sent.
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for with a `retry:` line.
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds one chunk, appending the events it completes to `out`.
    ///
    /// # Errors
    /// [`EventTooLarge`] when an event exceeds the limit; the connection should be dropped.
    pub(crate) fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<(), EventTooLarge> {
        if !self.started {
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(chunk);
            if head.len() < BOM.len() && BOM.starts_with(&head) {
                // Too short to tell whether a BOM starts the stream: keep the bytes for later.
                self.line = head;
                return Ok(());
            }
            self.started = true;
            let rest = head.strip_prefix(BOM).unwrap_or(&head);
            return self.push_bytes(rest, out);
        }
        self.push_bytes(chunk, out)
    }

    fn push_bytes(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        let mut rest = chunk;
        if rest.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.check_size()?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        self.check_size()
    }

    fn check_size(&mut self) -> Result<(), EventTooLarge> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            self.line.clear();
            self.reset_event();
            return Err(EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn reset_event(&mut self) {
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the `\n` after the last data line
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                    data,
                });
            }
            self.reset_event();
            return;
        }
        if line.starts_with(b":") {
            return; // a comment, such as a keep-alive
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_event_id = Some(value.into_owned()),
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(millis) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(millis));
                }
            }
            _ => {} // unknown fields are ignored, as the format requires
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out).unwrap();
        }
        out
    }

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn a_simple_event_is_dispatched_on_the_blank_line() {
        let events = parse_chunks(&[b"event: change\ndata: {\"a\":1}\n\n"]);
        assert_eq!(events, vec![event("change", "{\"a\":1}")]);
    }

    #[test]
    fn an_event_split_at_every_byte_parses_the_same() {
        let stream = "event: change\r\ndata: {\"collection\":\"contacts\"}\r\n\r\n\
                      : keep-alive\r\n\r\nevent: change\rdata: héllo\r\r";
        let whole = parse_chunks(&[stream.as_bytes()]);
        assert_eq!(
            whole,
            vec![
                event("change", "{\"collection\":\"contacts\"}"),
                event("change", "héllo"),
            ]
        );
        for split in 0..stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let bytes: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), whole);
    }

    #[test]
    fn comments_and_events_without_data_are_not_dispatched() {
        let events = parse_chunks(&[b": ping\n\n:\n\nevent: change\n\nid: 7\n\n"]);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let events = parse_chunks(&[b"data: one\ndata:two\ndata\ndata:  three\n\n"]);
        assert_eq!(events, vec![event("message", "one\ntwo\n\n three")]);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        let events = parse_chunks(&[b"event: change\ndata: x\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_dropped_even_when_split() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                parse_chunks(&[a, b]),
                vec![event("message", "x")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn id_and_retry_are_remembered_and_bad_retry_values_ignored() {
        let mut parser = SseParser::new(1024);
        let mut out = Vec::new();
        parser
            .push(b"id: 42\nretry: 1500\ndata: x\n\nretry: soon\n\n", &mut out)
            .unwrap();
        assert_eq!(parser.last_event_id(), Some("42"));
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_event_over_the_limit_is_refused() {
        let mut parser = SseParser::new(16);
        let mut out = Vec::new();
        let error = parser
            .push(b"data: 0123456789abcdef0123\n\n", &mut out)
            .unwrap_err();
        assert_eq!(error.limit, 16);
        let mut parser = SseParser::new(16);
        assert!(parser.push(b"data: 0123456789", &mut out).is_ok());
        assert!(parser.push(b"abcdef", &mut out).is_err());
    }
}
