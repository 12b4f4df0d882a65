//! An incremental parser of Server-Sent Events, fed the bytes of a stream as they arrive.
//!
//! It keeps only the current unfinished line, bounded by a cap, so a hostile upstream that
//! never ends a line cannot grow memory without limit. Lines end in `\n`, `\r\n` or `\r`;
//! an event ends at a blank line. Invalid UTF-8 inside a field is replaced, never fatal.

/// One event: its name (`event:`) and its data (`data:` lines joined with `\n`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// What went wrong with a stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an SSE line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("an SSE event is larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    skip_lf: bool,
    max_line: usize,
    max_event: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(4 * 1024 * 1024, 16 * 1024 * 1024)
    }
}

impl SseParser {
    /// A parser that refuses lines over `max_line` and events over `max_event` bytes.
    pub fn new(max_line: usize, max_event: usize) -> Self {
        SseParser {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            skip_lf: false,
            max_line,
            max_event,
        }
    }

    /// Feeds bytes; calls `on_event` for every complete event.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent)) -> Result<(), SseError> {
        if self.skip_lf {
            if let Some(b'\n') = chunk.first() {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                None => {
                    if self.line.len() + chunk.len() > self.max_line {
                        return Err(SseError::LineTooLong(self.max_line));
                    }
                    self.line.extend_from_slice(chunk);
                    return Ok(());
                }
                Some(i) => {
                    if self.line.len() + i > self.max_line {
                        return Err(SseError::LineTooLong(self.max_line));
                    }
                    self.line.extend_from_slice(&chunk[..i]);
                    let was_cr = chunk[i] == b'\r';
                    chunk = &chunk[i + 1..];
                    if was_cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            None => self.skip_lf = true,
                            _ => {}
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, &mut on_event)?;
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: an event not closed by a blank line is still delivered.
    pub fn finish(&mut self, mut on_event: impl FnMut(SseEvent)) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut on_event)?;
        }
        self.dispatch(&mut on_event);
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        if self.has_data || self.event.is_some() {
            on_event(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.has_data = false;
        self.data.clear();
        self.event = None;
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent)) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() > self.max_event {
                    return Err(SseError::EventTooLarge(self.max_event));
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| out.push(e)).unwrap();
        }
        p.finish(|e| out.push(e)).unwrap();
        out
    }

    #[test]
    fn events_across_chunk_boundaries_and_line_endings() {
        let ev = parse_all(&[
            b"data: {\"a\"",
            b":1}\n",
            b"\ndata: [DONE]\r",
            b"\n\r\nevent: x\ndata:y\n\n",
        ]);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "[DONE]");
        assert_eq!(ev[2].event.as_deref(), Some("x"));
        assert_eq!(ev[2].data, "y");
    }

    #[test]
    fn comments_multiline_and_unterminated() {
        let ev = parse_all(&[b": keep-alive\n\ndata: a\ndata: b\n\ndata: tail"]);
        assert_eq!(
            ev,
            vec![
                SseEvent {
                    event: None,
                    data: "a\nb".into()
                },
                SseEvent {
                    event: None,
                    data: "tail".into()
                }
            ]
        );
    }

    #[test]
    fn caps_hold_and_invalid_utf8_is_replaced() {
        let mut p = SseParser::new(8, 100);
        assert_eq!(p.feed(b"data: 0123456789", |_| {}), Err(SseError::LineTooLong(8)));
        let ev = parse_all(&[b"data: \xff\xfe ok\n\n"]);
        assert!(ev[0].data.ends_with(" ok"));
        let mut p = SseParser::new(100, 10);
        let r = p.feed(b"data: 12345678\ndata: 12345678\n", |_| {});
        assert_eq!(r, Err(SseError::EventTooLarge(10)));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_events(body in "(data: [a-z{}\":,0-9]{0,20}\n\n|event: [a-z_]{1,10}\n|: c\n|\r\n){0,12}", cut in proptest::collection::vec(0usize..200, 0..6)) {
            let bytes = body.as_bytes();
            let whole = parse_all(&[bytes]);
            let mut cuts: Vec<usize> = cut.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&bytes[last..c]); last = c; }
            pieces.push(&bytes[last..]);
            prop_assert_eq!(parse_all(&pieces), whole);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = SseParser::new(64, 256);
            let _ = p.feed(&data, |_| {});
            let _ = p.finish(|_| {});
        }
    }
}
