//! HTTP/1 message framing as the client sent it, before any parser tidied it up.
//!
//! hyper quietly resolves some ambiguous framings (it drops `Content-Length` when
//! `Transfer-Encoding` is present, and folds repeated equal `Content-Length` fields), so
//! the request a layer sees no longer shows that the client sent something two HTTP
//! implementations could read differently: the raw material of request smuggling.
//! [`FramingScanner`] follows the bytes of an HTTP/1 connection alongside the parser and
//! gives, for each request head in order, whether its framing was ambiguous.

use std::collections::VecDeque;

/// Set in the request extensions when the request's raw framing was ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingViolation(pub &'static str);

/// Largest head the scanner follows; past it, the parser refuses the request anyway.
const MAX_HEAD_BYTES: usize = 256 * 1024;

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize {
        size: u64,
        digits: usize,
        in_ext: bool,
    },
    ChunkSizeLf {
        size: u64,
    },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    Trailer {
        line_len: usize,
        seen_cr: bool,
    },
    /// Something the scanner does not follow (or a malformed stream the parser will
    /// refuse): it stops giving verdicts.
    Off,
}

/// Follows one HTTP/1 connection's request bytes and queues a verdict per request head.
#[derive(Debug)]
pub struct FramingScanner {
    state: State,
    verdicts: VecDeque<Option<&'static str>>,
}

impl Default for FramingScanner {
    fn default() -> Self {
        FramingScanner {
            state: State::Head(Vec::new()),
            verdicts: VecDeque::new(),
        }
    }
}

impl FramingScanner {
    /// Feeds the next bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = self.step(data);
            if used == 0 {
                return;
            }
            data = data.get(used..).unwrap_or_default();
        }
    }

    /// The verdict for the next request head, in order: `Some(reason)` if its framing was
    /// ambiguous. `None` when the scanner has no verdict (it stopped following).
    pub fn next_verdict(&mut self) -> Option<Option<&'static str>> {
        self.verdicts.pop_front()
    }

    /// Consumes a prefix of `data`, returning how many bytes it used.
    fn step(&mut self, data: &[u8]) -> usize {
        match &mut self.state {
            State::Off => data.len(),
            State::Head(buf) => {
                // Empty lines before a request line are ignored by parsers.
                if buf.is_empty() {
                    let skip = data
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    if skip > 0 {
                        return skip;
                    }
                }
                let before = buf.len();
                buf.extend_from_slice(data);
                let search_from = before.saturating_sub(3);
                let end = buf
                    .get(search_from..)
                    .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"))
                    .map(|p| search_from + p + 4);
                match end {
                    None => {
                        if buf.len() > MAX_HEAD_BYTES {
                            self.state = State::Off;
                        }
                        data.len()
                    }
                    Some(end) => {
                        let head = std::mem::take(buf);
                        let used = end - before;
                        self.state = self.finish_head(head.get(..end).unwrap_or_default());
                        used
                    }
                }
            }
            State::Fixed(remaining) => {
                let take = (*remaining).min(data.len() as u64);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::Head(Vec::new());
                }
                take as usize
            }
            State::ChunkSize {
                size,
                digits,
                in_ext,
            } => {
                let Some(&b) = data.first() else { return 0 };
                match b {
                    b'\r' => {
                        let size = *size;
                        self.state = if *digits == 0 {
                            State::Off
                        } else {
                            State::ChunkSizeLf { size }
                        };
                    }
                    _ if *in_ext => {}
                    b';' | b' ' | b'\t' => *in_ext = true,
                    _ => match (b as char).to_digit(16) {
                        Some(d) if *digits < 16 => {
                            *size = *size * 16 + u64::from(d);
                            *digits += 1;
                        }
                        _ => self.state = State::Off,
                    },
                }
                1
            }
            State::ChunkSizeLf { size } => {
                self.state = match (data.first(), *size) {
                    (Some(b'\n'), 0) => State::Trailer {
                        line_len: 0,
                        seen_cr: false,
                    },
                    (Some(b'\n'), size) => State::ChunkData(size),
                    _ => State::Off,
                };
                1
            }
            State::ChunkData(remaining) => {
                let take = (*remaining).min(data.len() as u64);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::ChunkDataCr;
                }
                take as usize
            }
            State::ChunkDataCr => {
                self.state = if data.first() == Some(&b'\r') {
                    State::ChunkDataLf
                } else {
                    State::Off
                };
                1
            }
            State::ChunkDataLf => {
                self.state = if data.first() == Some(&b'\n') {
                    State::ChunkSize {
                        size: 0,
                        digits: 0,
                        in_ext: false,
                    }
                } else {
                    State::Off
                };
                1
            }
            State::Trailer { line_len, seen_cr } => {
                match data.first() {
                    Some(b'\r') => *seen_cr = true,
                    Some(b'\n') if *seen_cr && *line_len == 0 => {
                        self.state = State::Head(Vec::new())
                    }
                    Some(b'\n') if *seen_cr => {
                        *line_len = 0;
                        *seen_cr = false;
                    }
                    _ => {
                        *line_len += 1;
                        *seen_cr = false;
                    }
                }
                1
            }
        }
    }

    /// Judges a complete head and decides how its body is framed.
    fn finish_head(&mut self, head: &[u8]) -> State {
        let Ok(text) = std::str::from_utf8(head) else {
            return State::Off;
        };
        let mut lengths: Vec<&str> = Vec::new();
        let mut transfer_encoding = false;
        for line in text.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                lengths.extend(value.split(',').map(str::trim));
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
            }
        }
        let verdict = match (lengths.len(), transfer_encoding) {
            (n, true) if n > 0 => Some("content_length_and_transfer_encoding"),
            (n, _) if n > 1 => Some("duplicate_content_length"),
            _ => None,
        };
        self.verdicts.push_back(verdict);
        if transfer_encoding {
            State::ChunkSize {
                size: 0,
                digits: 0,
                in_ext: false,
            }
        } else if let Some(length) = lengths.first() {
            match length.parse::<u64>() {
                Ok(0) => State::Head(Vec::new()),
                Ok(n) => State::Fixed(n),
                Err(_) => State::Off,
            }
        } else {
            State::Head(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(stream: &[u8], split: usize) -> Vec<Option<&'static str>> {
        let mut scanner = FramingScanner::default();
        for chunk in stream.chunks(split.max(1)) {
            scanner.feed(chunk);
        }
        std::iter::from_fn(|| scanner.next_verdict()).collect()
    }

    const PIPELINE: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
POST /c HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc\
POST /d HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
GET /e HTTP/1.1\r\n\r\n";

    #[test]
    fn one_verdict_per_request_whatever_the_read_sizes() {
        let expected = vec![
            None,
            None,
            None,
            Some("duplicate_content_length"),
            Some("content_length_and_transfer_encoding"),
            None,
        ];
        for split in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(verdicts(PIPELINE, split), expected, "split {split}");
        }
    }

    #[test]
    fn body_bytes_that_look_like_headers_are_not_heads() {
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxxxxx\
GET /next HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(stream, 5), vec![None, None]);
    }
}
