//! Incremental Server-Sent Events decoder: fed bytes split anywhere, yields `data` payloads.
//!
//! Accepts CRLF, LF and CR line endings (a CR at the end of one read and an LF at the start of the
//! next are one line ending), joins multi-line `data:` with `\n`, ignores comments and other
//! fields, and dispatches an event on a blank line. A line that starts with `{` between events is
//! Gemini's raw error block written outside SSE framing: from there on everything is collected
//! and returned by `finish` as `SseItem::Raw`.

/// Largest event (or raw tail) accepted, so a hostile upstream cannot grow memory without bound.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Data(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeded {MAX_EVENT_BYTES} bytes")]
pub struct Oversized;

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    pos: usize,
    data: Vec<u8>,
    has_data: bool,
    skip_lf: bool,
    raw: Option<Vec<u8>>,
    /// Where the search for the current line's end resumes (bytes before it hold no CR or LF),
    /// so a long line fed in small reads is scanned once, not once per read.
    scan: usize,
    /// The line being read, plus the event's data so far, passed `MAX_EVENT_BYTES`.
    oversized: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the wire.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Oversized> {
        if let Some(raw) = &mut self.raw {
            // A CR that ended the previous read and an LF that starts this one are one line end.
            let chunk = if std::mem::take(&mut self.skip_lf) {
                chunk.strip_prefix(b"\n").unwrap_or(chunk)
            } else {
                chunk
            };
            raw.extend_from_slice(chunk);
            return if raw.len() > MAX_EVENT_BYTES {
                Err(Oversized)
            } else {
                Ok(())
            };
        }
        if self.oversized {
            return Err(Oversized);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The next complete event's data, if one is buffered.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        while self.raw.is_none() {
            let rest = &self.buf[self.pos..];
            if self.skip_lf && !rest.is_empty() {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    self.pos += 1;
                    continue;
                }
            }
            let from = self.scan.max(self.pos);
            let Some(end) = memchr::memchr2(b'\r', b'\n', &self.buf[from..]) else {
                self.scan = self.buf.len();
                // Only the unfinished line and the event's data count toward the limit.
                if self.buf.len() - self.pos + self.data.len() > MAX_EVENT_BYTES {
                    self.oversized = true;
                }
                return None;
            };
            let line_start = self.pos;
            let line_end = from + end;
            let terminator = self.buf[line_end];
            self.pos = line_end + 1;
            self.scan = self.pos;
            if terminator == b'\r' {
                match self.buf.get(self.pos) {
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if let Some(event) = self.line(line_start, line_end) {
                return Some(event);
            }
        }
        None
    }

    /// Handles one line; returns an event when the line dispatches one.
    fn line(&mut self, start: usize, end: usize) -> Option<Vec<u8>> {
        if start == end {
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.data));
        }
        let line = &self.buf[start..end];
        if line[0] == b'{' && !self.has_data {
            let mut raw = line.to_vec();
            raw.push(b'\n');
            raw.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            self.raw = Some(raw);
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return None, // comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        None
    }

    /// End of input: a final event without its blank line, or the raw tail.
    pub fn finish(&mut self) -> Option<SseItem> {
        if let Some(raw) = self.raw.take() {
            return Some(SseItem::Raw(raw));
        }
        // A last line without a terminator still counts.
        if self.pos < self.buf.len() {
            let (start, end) = (self.pos, self.buf.len());
            self.pos = end;
            if let Some(ev) = self.line(start, end) {
                return Some(SseItem::Data(ev));
            }
            if let Some(raw) = self.raw.take() {
                return Some(SseItem::Raw(raw));
            }
        }
        if self.has_data {
            self.has_data = false;
            return Some(SseItem::Data(std::mem::take(&mut self.data)));
        }
        None
    }
}

/// Decodes a whole byte string (test and fuzz helper).
pub fn decode_all(chunks: &[&[u8]]) -> Result<Vec<SseItem>, Oversized> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c)?;
        while let Some(ev) = d.next_event() {
            out.push(SseItem::Data(ev));
        }
    }
    out.extend(d.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAPTURE: &[u8] = b"data: {\"a\": 1}\r\n\r\ndata: {\"b\": 2}\r\n\r\n";

    fn data(s: &str) -> SseItem {
        SseItem::Data(s.as_bytes().to_vec())
    }

    #[test]
    fn line_endings_comments_multiline() {
        let all = decode_all(&[
            b": hi\ndata: x\n\ndata: y\rdata: z\r\r",
            b"event: e\nid: 1\ndata:w\r\n\r\n",
        ])
        .unwrap();
        assert_eq!(all, vec![data("x"), data("y\nz"), data("w")]);
        assert_eq!(decode_all(&[b"data: last"]).unwrap(), vec![data("last")]);
        assert_eq!(decode_all(&[b"\r\n\r\n"]).unwrap(), vec![]);
    }

    #[test]
    fn raw_error_tail_after_events() {
        let bytes = b"data: {\"a\":1}\r\n\r\n{\n  \"error\": {\n    \"code\": 503\n  }\n}\n";
        let all = decode_all(&[bytes]).unwrap();
        assert_eq!(all[0], data("{\"a\":1}"));
        match &all[1] {
            SseItem::Raw(r) => assert!(serde_json::from_slice::<serde_json::Value>(r).is_ok()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn raw_tail_after_a_split_crlf_is_the_same() {
        // Found by the sse_decoder fuzz target: a CR ending one read and its LF starting the next,
        // just before the raw error block.
        let bytes = b"c=an\r\n{\"error\": 1}\r\n{x}";
        let whole = decode_all(&[bytes]).unwrap();
        for i in 0..=bytes.len() {
            assert_eq!(
                decode_all(&[&bytes[..i], &bytes[i..]]).unwrap(),
                whole,
                "split at {i}"
            );
        }
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = decode_all(&[CAPTURE]).unwrap();
        for i in 0..=CAPTURE.len() {
            assert_eq!(
                decode_all(&[&CAPTURE[..i], &CAPTURE[i..]]).unwrap(),
                whole,
                "split at {i}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_chunking_is_equivalent(
            events in proptest::collection::vec("[a-z{}\":, ]{0,20}", 0..6),
            eol in prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let mut bytes = Vec::new();
            for e in &events {
                bytes.extend_from_slice(format!("data: {e}{eol}{eol}").as_bytes());
            }
            let whole = decode_all(&[&bytes]).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&bytes[last..c]); last = c; }
            pieces.push(&bytes[last..]);
            prop_assert_eq!(decode_all(&pieces).unwrap(), whole.clone());
            let expected: Vec<SseItem> = events.iter().map(|e| SseItem::Data(e.as_bytes().to_vec())).collect();
            prop_assert_eq!(whole, expected);
        }
    }
}
