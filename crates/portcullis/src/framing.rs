//! HTTP/1 message framing as the client sent it, before any parser tidied it up.
//!
//! hyper quietly resolves some ambiguous framings (it drops `Content-Length` when
//! `Transfer-Encoding` is present, and folds repeated equal `Content-Length` fields), so
//! the request a layer sees no longer shows that the client sent something two HTTP
//! implementations could read differently: the raw material of request smuggling.
//! [`FramingScanner`] follows the bytes of an HTTP/1 connection alongside the parser and
//! gives, for each request head in order, whether its framing was ambiguous, or its syntax
//! one that RFC 9112 tells a server to refuse: a bare LF line ending, obsolete line folding,
//! a header name that is not a token, or a request-target with `#`, a byte outside printable
//! ASCII, or `*` with any method but `OPTIONS`. These are the byte-level edge rules; they
//! live here, in one place, because only this scanner sees the bytes as sent.

#![deny(clippy::arithmetic_side_effects)]

use crate::reason::MalformedReason;
use std::collections::VecDeque;

/// Set in the request extensions when the request's raw framing was ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingViolation(pub MalformedReason);

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
    verdicts: VecDeque<Option<MalformedReason>>,
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

    /// Stops following: the connection switched protocols, so what follows is not HTTP
    /// (and must not fill the verdict queue).
    pub fn stop(&mut self) {
        self.state = State::Off;
        self.verdicts.clear();
    }

    /// The verdict for the next request head, in order: `Some(reason)` if its framing was
    /// ambiguous. `None` when the scanner has no verdict (it stopped following).
    pub fn next_verdict(&mut self) -> Option<Option<MalformedReason>> {
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
                    // The common case: the whole head came in one read. Judged where it
                    // lies, without copying it.
                    if let Some(end) = head_end(data, 0) {
                        self.state = self.finish_head(data.get(..end).unwrap_or_default());
                        return end;
                    }
                }
                let before = buf.len();
                buf.extend_from_slice(data);
                // A first read without a head end was just searched above.
                let end = if before == 0 {
                    None
                } else {
                    head_end(buf, before.saturating_sub(2))
                };
                match end {
                    None => {
                        if buf.len() > MAX_HEAD_BYTES {
                            self.state = State::Off;
                        }
                        data.len()
                    }
                    Some(end) => {
                        let head = std::mem::take(buf);
                        let used = end.saturating_sub(before);
                        self.state = self.finish_head(head.get(..end).unwrap_or_default());
                        used
                    }
                }
            }
            State::Fixed(remaining) => {
                let take = (*remaining).min(data.len() as u64);
                *remaining = remaining.saturating_sub(take);
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
                            // At most 16 hex digits: a u64, never more.
                            *size = size.wrapping_shl(4) | u64::from(d);
                            *digits = digits.saturating_add(1);
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
                *remaining = remaining.saturating_sub(take);
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
                        *line_len = line_len.saturating_add(1);
                        *seen_cr = false;
                    }
                }
                1
            }
        }
    }

    /// Judges a complete head and decides how its body is framed.
    fn finish_head(&mut self, head: &[u8]) -> State {
        let mut lengths: Vec<&[u8]> = Vec::new();
        let mut transfer_encoding = false;
        let mut syntax = None;
        // Every line ends with LF, the last (empty) one closing the head; the split leaves
        // one empty piece after that final LF, which is no line.
        let body = head.strip_suffix(b"\n").unwrap_or(head);
        let mut lines = lines(body);
        let request_line = lines.next().unwrap_or_default();
        if request_line.last() != Some(&b'\r') {
            syntax = Some(MalformedReason::BareLf);
        }
        syntax = syntax.or_else(|| target_violation(request_line));
        for raw in lines {
            let Some(line) = raw.strip_suffix(b"\r") else {
                syntax = syntax.or(Some(MalformedReason::BareLf));
                continue;
            };
            if line.is_empty() {
                continue;
            }
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                syntax = syntax.or(Some(MalformedReason::ObsoleteLineFolding));
                continue;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                syntax = syntax.or(Some(MalformedReason::InvalidHeaderName));
                continue;
            };
            let (name, value) = line.split_at(colon);
            let value = value.get(1..).unwrap_or_default();
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                syntax = syntax.or(Some(MalformedReason::InvalidHeaderName));
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths.extend(value.split(|b| *b == b',').map(|v| v.trim_ascii()));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
            }
        }
        let verdict = match (lengths.len(), transfer_encoding) {
            (n, true) if n > 0 => Some(MalformedReason::ContentLengthAndTransferEncoding),
            (n, _) if n > 1 => Some(MalformedReason::DuplicateContentLength),
            _ => syntax,
        };
        self.verdicts.push_back(verdict);
        if transfer_encoding {
            State::ChunkSize {
                size: 0,
                digits: 0,
                in_ext: false,
            }
        } else if let Some(length) = lengths.first() {
            match std::str::from_utf8(length)
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .ok_or(())
            {
                Ok(0) => State::Head(Vec::new()),
                Ok(n) => State::Fixed(n),
                Err(_) => State::Off,
            }
        } else {
            State::Head(Vec::new())
        }
    }
}

/// Where the head in `buf` ends (just past its empty line), searching from `from`. Lines may
/// end with CRLF or a bare LF: the scanner must find the end either way, or its verdicts would
/// no longer pair up with the requests the parser reads.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(offset) = memchr::memchr(b'\n', buf.get(i..)?) {
        let lf = i.saturating_add(offset);
        let next = lf.saturating_add(1);
        match (buf.get(next), buf.get(next.saturating_add(1))) {
            (Some(b'\n'), _) => return Some(next.saturating_add(1)),
            (Some(b'\r'), Some(b'\n')) => return Some(next.saturating_add(2)),
            (None, _) | (Some(b'\r'), None) => return None,
            _ => i = next,
        }
    }
    None
}

/// The pieces of `body` between LFs, as `split` on LF gives them (an empty piece after a
/// final LF), found with `memchr` rather than byte by byte.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let piece = rest?;
        match memchr::memchr(b'\n', piece) {
            Some(lf) => {
                rest = piece.get(lf.saturating_add(1)..);
                piece.get(..lf)
            }
            None => {
                rest = None;
                Some(piece)
            }
        }
    })
}

/// RFC 9110 `tchar`: what a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request-target rules, on the raw request line (`METHOD SP target SP version CR`).
fn target_violation(line: &[u8]) -> Option<MalformedReason> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (method, target) = (parts.next()?, parts.next()?);
    if target.iter().any(|b| !(0x21..=0x7e).contains(b)) {
        return Some(MalformedReason::InvalidTargetByte);
    }
    if target.contains(&b'#') {
        return Some(MalformedReason::FragmentInTarget);
    }
    if target == b"*" && method != b"OPTIONS" {
        return Some(MalformedReason::AsteriskTarget);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_split_on_lf_gives() {
        for body in [
            &b""[..],
            b"a",
            b"a\n",
            b"\n",
            b"a\nb",
            b"a\r\nb\r\n\r\n",
            b"\n\n",
        ] {
            let ours: Vec<&[u8]> = lines(body).collect();
            let theirs: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(body));
        }
    }

    fn verdicts(stream: &[u8], split: usize) -> Vec<Option<&'static str>> {
        let mut scanner = FramingScanner::default();
        for chunk in stream.chunks(split.max(1)) {
            scanner.feed(chunk);
        }
        std::iter::from_fn(|| scanner.next_verdict())
            .map(|verdict| verdict.map(MalformedReason::as_str))
            .collect()
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
    fn syntax_that_rfc_9112_refuses_gets_a_verdict() {
        let cases: [(&[u8], Option<&str>); 12] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", Some("bare_lf")),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Some("bare_lf")),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", Some("bare_lf")),
            (
                b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
                Some("obsolete_line_folding"),
            ),
            (
                b"GET / HTTP/1.1\r\nX A: 1\r\n\r\n",
                Some("invalid_header_name"),
            ),
            (
                b"GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
                Some("invalid_header_name"),
            ),
            (b"GET /a#frag HTTP/1.1\r\n\r\n", Some("fragment_in_target")),
            (
                b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
                Some("invalid_target_byte"),
            ),
            (b"GET /a\tb HTTP/1.1\r\n\r\n", Some("invalid_target_byte")),
            (b"GET * HTTP/1.1\r\n\r\n", Some("asterisk_target")),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", None),
        ];
        for (stream, expected) in cases {
            for split in [1, 2, 5, 4096] {
                assert_eq!(
                    verdicts(stream, split),
                    vec![expected],
                    "{} split {split}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    #[test]
    fn bare_lf_heads_keep_the_verdicts_in_step() {
        let stream = b"GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in [1, 3, 4096] {
            assert_eq!(verdicts(stream, split), vec![Some("bare_lf"), None]);
        }
    }

    #[test]
    fn body_bytes_that_look_like_headers_are_not_heads() {
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxxxxx\
GET /next HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(stream, 5), vec![None, None]);
    }
}
