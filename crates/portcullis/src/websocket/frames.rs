//! WebSocket frames as they pass through the relay (RFC 6455 §5.2).
//!
//! The relay forwards the peers' bytes unchanged; this scanner follows them frame by frame so
//! that it can stop a stream at a frame boundary: before the header of a frame that would make
//! a message larger than allowed (close 1009), or that breaks the framing rules (close 1002).
//! A frame header is forwarded only once it is complete and valid, so what has been forwarded
//! always ends either inside a payload or exactly at a boundary, and the relay knows which.

#![deny(clippy::arithmetic_side_effects)]

/// Why a stream of frames was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message over the size limit (close code 1009).
    TooBig,
    /// A frame that breaks RFC 6455 framing (close code 1002); the text names the rule.
    Protocol(&'static str),
}

impl Violation {
    /// The close code the sender of the frame gets.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig => 1009,
            Violation::Protocol(_) => 1002,
        }
    }

    /// The name of the violation in events and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::TooBig => "websocket_message_too_big",
            Violation::Protocol(_) => "websocket_protocol_error",
        }
    }
}

/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;
/// Largest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header (held back until it is complete and checked).
    Header,
    /// Forwarding this many more payload bytes.
    Payload(u64),
}

/// Follows the frames one peer sends.
#[derive(Debug)]
pub struct FrameScanner {
    /// Frames from the client must be masked, frames from the server must not (§5.1).
    from_client: bool,
    max_message_bytes: u64,
    state: State,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes so far of the fragmented data message in progress, if any.
    message: Option<u64>,
}

impl FrameScanner {
    /// A scanner for the frames the client (`from_client`) or the server sends.
    pub fn new(from_client: bool, max_message_bytes: u64) -> Self {
        FrameScanner {
            from_client,
            max_message_bytes,
            state: State::Header,
            header: [0; MAX_HEADER],
            header_len: 0,
            message: None,
        }
    }

    /// Whether everything forwarded so far ends at a frame boundary, so that a frame of the
    /// gateway's own (a close) can be sent in this direction.
    pub fn at_boundary(&self) -> bool {
        self.state == State::Header
    }

    /// Follows `input`, appending to `out` what may be forwarded. On a violation, `out` holds
    /// the complete frames before the offending one, which is not forwarded.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        while !input.is_empty() {
            match self.state {
                State::Payload(rest) => {
                    let take = usize::try_from(rest).unwrap_or(usize::MAX).min(input.len());
                    let (now, later) = input.split_at(take);
                    out.extend_from_slice(now);
                    input = later;
                    let left = rest.saturating_sub(take as u64);
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Payload(left)
                    };
                }
                State::Header => {
                    let needed = self.header_needed();
                    let missing = needed.saturating_sub(self.header_len).min(input.len());
                    let (now, later) = input.split_at(missing);
                    let end = self.header_len.saturating_add(missing);
                    if let Some(slot) = self.header.get_mut(self.header_len..end) {
                        slot.copy_from_slice(now);
                    }
                    self.header_len = end;
                    input = later;
                    // The first two bytes tell how long the header is; only then is it whole.
                    if self.header_len < self.header_needed() {
                        continue;
                    }
                    let length = self.check_header()?;
                    out.extend_from_slice(self.header.get(..self.header_len).unwrap_or_default());
                    self.header_len = 0;
                    if length > 0 {
                        self.state = State::Payload(length);
                    }
                }
            }
        }
        Ok(())
    }

    /// How long the header being collected is, as far as its bytes so far tell.
    fn header_needed(&self) -> usize {
        let [_, second, ..] = self.header;
        if self.header_len < 2 {
            return 2;
        }
        let length_bytes = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_bytes = if second & 0x80 != 0 { 4 } else { 0 };
        2usize
            .saturating_add(length_bytes)
            .saturating_add(mask_bytes)
    }

    /// Checks a complete header and accounts for its message; returns the payload length.
    fn check_header(&mut self) -> Result<u64, Violation> {
        let [first, second, ..] = self.header;
        if first & 0x70 != 0 {
            // No extension is ever negotiated through the gateway (it removes the offer).
            return Err(Violation::Protocol("reserved bits set"));
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        let masked = second & 0x80 != 0;
        if masked != self.from_client {
            return Err(Violation::Protocol(if self.from_client {
                "unmasked client frame"
            } else {
                "masked server frame"
            }));
        }
        let length = match second & 0x7f {
            126 => {
                let [_, _, a, b, ..] = self.header;
                let length = u64::from(u16::from_be_bytes([a, b]));
                if length < 126 {
                    return Err(Violation::Protocol("length not minimally encoded"));
                }
                length
            }
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(self.header.get(2..10).unwrap_or(&[0xff; 8]));
                let length = u64::from_be_bytes(bytes);
                if length >> 63 != 0 {
                    return Err(Violation::Protocol("length over 63 bits"));
                }
                if length <= u64::from(u16::MAX) {
                    return Err(Violation::Protocol("length not minimally encoded"));
                }
                length
            }
            short => u64::from(short),
        };
        match opcode {
            // Close, ping, pong: never fragmented, short, allowed between fragments.
            0x8..=0xa => {
                if !fin || length > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::Protocol("oversized or fragmented control frame"));
                }
            }
            0x0..=0x2 => {
                let so_far = match (opcode, self.message) {
                    (0x0, Some(so_far)) => so_far,
                    (0x0, None) => {
                        return Err(Violation::Protocol("continuation without a message"));
                    }
                    (_, None) => 0,
                    (_, Some(_)) => {
                        return Err(Violation::Protocol("new message inside a message"));
                    }
                };
                let total = so_far.checked_add(length).ok_or(Violation::TooBig)?;
                if total > self.max_message_bytes {
                    return Err(Violation::TooBig);
                }
                self.message = (!fin).then_some(total);
            }
            _ => return Err(Violation::Protocol("reserved opcode")),
        }
        Ok(length)
    }
}

/// A close frame with `code` and a short `reason`, as the server (`to_client`) or as a client
/// (masked with `mask`) sends it.
pub fn close_frame(code: u16, reason: &str, to_client: bool, mask: [u8; 4]) -> Vec<u8> {
    let reason = reason.as_bytes().get(..100).unwrap_or(reason.as_bytes());
    let mut payload = Vec::with_capacity(reason.len().saturating_add(2));
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    // At most 102 bytes: the one-byte length form.
    let length = u8::try_from(payload.len()).unwrap_or(125).min(125);
    let mut frame = Vec::with_capacity(payload.len().saturating_add(6));
    frame.push(0x88);
    if to_client {
        frame.push(length);
        frame.extend_from_slice(&payload);
    } else {
        frame.push(0x80 | length);
        frame.extend_from_slice(&mask);
        frame.extend(
            payload
                .iter()
                .zip(mask.iter().cycle())
                .map(|(byte, key)| byte ^ key),
        );
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer sends it: client frames masked with a fixed key.
    fn frame(fin: bool, opcode: u8, payload: &[u8], from_client: bool) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if from_client { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if from_client {
            let key = [1, 2, 3, 4];
            out.extend_from_slice(&key);
            out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    fn feed_split(
        scanner: &mut FrameScanner,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<u8>, Result<(), Violation>) {
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            if let Err(v) = scanner.feed(chunk, &mut out) {
                return (out, Err(v));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn frames_pass_unchanged_whatever_the_read_sizes() {
        let mut stream = frame(true, 1, b"hello", true);
        stream.extend(frame(false, 2, &[7; 300], true));
        stream.extend(frame(true, 9, b"ping", true));
        stream.extend(frame(true, 0, &[8; 70_000], true));
        for step in [1, 2, 3, 7, 14, 1000, usize::MAX] {
            let mut scanner = FrameScanner::new(true, 100_000);
            let (out, result) = feed_split(&mut scanner, &stream, step);
            assert_eq!(result, Ok(()), "step {step}");
            assert_eq!(out, stream, "step {step}");
            assert!(scanner.at_boundary());
        }
    }

    #[test]
    fn a_message_over_the_limit_stops_before_its_frame() {
        let first = frame(false, 2, &[1; 600], true);
        let mut stream = first.clone();
        stream.extend(frame(true, 0, &[2; 500], true));
        let mut scanner = FrameScanner::new(true, 1000);
        let (out, result) = feed_split(&mut scanner, &stream, 5);
        assert_eq!(result, Err(Violation::TooBig));
        assert_eq!(
            out, first,
            "only the complete frames before the offending one"
        );
        assert!(scanner.at_boundary());
        assert_eq!(Violation::TooBig.close_code(), 1009);
        // Exactly at the limit is fine.
        let mut scanner = FrameScanner::new(true, 1100);
        assert_eq!(feed_split(&mut scanner, &stream, 64).1, Ok(()));
    }

    #[test]
    fn framing_rules_are_enforced() {
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (frame(true, 1, b"x", false), true),     // unmasked from a client
            (frame(true, 1, b"x", true), false),     // masked from a server
            (frame(true, 3, b"x", true), true),      // reserved opcode
            (frame(false, 9, b"x", true), true),     // fragmented ping
            (frame(true, 9, &[0; 126], true), true), // long ping
            (frame(true, 0, b"x", true), true),      // continuation of nothing
            (
                [frame(false, 1, b"a", true), frame(true, 1, b"b", true)].concat(),
                true,
            ), // nested
            (vec![0xc1, 0x81, 0, 0, 0, 0, 0], true), // RSV1 (compression never negotiated)
            (vec![0x81, 0xfe, 0x00, 0x05, 0, 0, 0, 0], true), // 16-bit length under 126
            (
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                true,
            ), // 64-bit MSB
        ];
        for (bytes, from_client) in cases {
            let mut scanner = FrameScanner::new(from_client, u64::MAX);
            let (_, result) = feed_split(&mut scanner, &bytes, 3);
            assert!(
                matches!(result, Err(Violation::Protocol(_))),
                "{bytes:02x?}: {result:?}"
            );
        }
    }

    #[test]
    fn the_boundary_is_known_mid_payload() {
        let bytes = frame(true, 2, &[0; 50], false);
        let mut scanner = FrameScanner::new(false, 100);
        let mut out = Vec::new();
        assert_eq!(
            scanner.feed(bytes.get(..10).unwrap_or_default(), &mut out),
            Ok(())
        );
        assert!(!scanner.at_boundary());
        assert_eq!(
            scanner.feed(bytes.get(10..).unwrap_or_default(), &mut out),
            Ok(())
        );
        assert!(scanner.at_boundary());
        // A partial header is held back, so the boundary still holds.
        assert_eq!(scanner.feed(&[0x82], &mut out), Ok(()));
        assert!(scanner.at_boundary());
        assert_eq!(out, bytes);
    }

    #[test]
    fn close_frames_are_valid_in_both_directions() {
        let to_client = close_frame(1009, "message too big", true, [0; 4]);
        let mut scanner = FrameScanner::new(false, 0);
        let mut out = Vec::new();
        assert_eq!(scanner.feed(&to_client, &mut out), Ok(()));
        assert_eq!(to_client.get(2..4), Some(&[0x03, 0xf1][..]));
        let to_server = close_frame(1001, "going away", false, [9, 8, 7, 6]);
        let mut scanner = FrameScanner::new(true, 0);
        assert_eq!(scanner.feed(&to_server, &mut out), Ok(()));
        let unmasked: Vec<u8> = to_server
            .get(6..)
            .unwrap_or_default()
            .iter()
            .zip([9u8, 8, 7, 6].iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(unmasked.get(..2), Some(&1001u16.to_be_bytes()[..]));
        assert_eq!(unmasked.get(2..), Some(&b"going away"[..]));
    }
}
