//! HTTP/2 control-frame floods (CVE-2019-9512 PING, -9515 SETTINGS, -9518 empty frames, and
//! their kin): frames that cost the server work but carry no request. [`FloodGuard`] reads
//! the frame headers of an HTTP/2 connection as they arrive, counts control frames over a
//! sliding second, and past `limits.http2.max_control_frames_per_second` sends GOAWAY
//! `ENHANCE_YOUR_CALM` and ends the connection. Other connections are not affected.

#![deny(clippy::arithmetic_side_effects)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface, which precedes the first frame. A client that stops
/// part-way through it is as slow as one that never sends a head, and is cut off the same way.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = H2_PREFACE.len();
const FRAME_HEADER_LEN: usize = 9;
const WINDOW: Duration = Duration::from_secs(1);

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Where a byte stream of frames stands.
#[derive(Debug)]
struct FrameCursor {
    /// Bytes of the connection preface still to skip.
    preface: usize,
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload: usize,
    /// A padded frame whose pad length (its first payload byte) is still to come.
    padded: Option<(u8, u8, usize, u32)>,
    /// Frames seen so far.
    frames: u64,
}

impl FrameCursor {
    fn new(preface: usize) -> Self {
        FrameCursor {
            preface,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            payload: 0,
            padded: None,
            frames: 0,
        }
    }

    /// Whether the stream is between two frames, after at least one (our SETTINGS, which
    /// must come first).
    fn at_boundary(&self) -> bool {
        self.preface == 0
            && self.have == 0
            && self.payload == 0
            && self.padded.is_none()
            && self.frames > 0
    }

    /// Follows `data`, calling `on_frame(type, flags, content, stream)` for each frame, where
    /// `content` is the payload length without padding (and without a HEADERS frame's
    /// priority fields): what the frame really carries.
    fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(u8, u8, usize, u32)) {
        while !data.is_empty() {
            if self.preface > 0 {
                let skip = self.preface.min(data.len());
                self.preface = self.preface.saturating_sub(skip);
                data = data.get(skip..).unwrap_or_default();
            } else if let Some((kind, flags, length, stream)) = self.padded.take() {
                let pad = usize::from(data.first().copied().unwrap_or_default());
                let priority = if kind == HEADERS && flags & PRIORITY_FLAG != 0 {
                    5
                } else {
                    0
                };
                on_frame(
                    kind,
                    flags,
                    length.saturating_sub(pad.saturating_add(1).saturating_add(priority)),
                    stream,
                );
                self.payload = length.saturating_sub(1);
                data = data.get(1..).unwrap_or_default();
            } else if self.payload > 0 {
                let skip = self.payload.min(data.len());
                self.payload = self.payload.saturating_sub(skip);
                data = data.get(skip..).unwrap_or_default();
            } else {
                let take = FRAME_HEADER_LEN.saturating_sub(self.have).min(data.len());
                if let (Some(slot), Some(bytes)) = (
                    self.header
                        .get_mut(self.have..self.have.saturating_add(take)),
                    data.get(..take),
                ) {
                    slot.copy_from_slice(bytes);
                }
                self.have = self.have.saturating_add(take);
                data = data.get(take..).unwrap_or_default();
                if self.have == FRAME_HEADER_LEN {
                    let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
                    let length = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                    let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
                    self.have = 0;
                    self.frames = self.frames.saturating_add(1);
                    if matches!(kind, DATA | HEADERS) && flags & PADDED != 0 && length > 0 {
                        // The pad length comes first: wait for it to know what is carried.
                        self.padded = Some((kind, flags, length, stream));
                    } else {
                        self.payload = length;
                        let priority = if kind == HEADERS && flags & PRIORITY_FLAG != 0 {
                            5
                        } else {
                            0
                        };
                        on_frame(kind, flags, length.saturating_sub(priority), stream);
                    }
                }
            }
        }
    }
}

/// Whether a frame is a control frame for the flood count: `content` is what it carries
/// (padding does not count, so padding-only DATA frames are empty frames too).
fn is_control(kind: u8, flags: u8, content: usize) -> bool {
    match kind {
        PING | SETTINGS | WINDOW_UPDATE | PRIORITY | RST_STREAM => true,
        DATA => content == 0 && flags & END_STREAM == 0,
        HEADERS | CONTINUATION => content == 0,
        _ => false,
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 connection's stream with control frames counted on the way in.
    pub struct FloodGuard<I> {
        #[pin]
        inner: I,
        // `None`: not HTTP/2, nothing is counted.
        limit: Option<usize>,
        recent: VecDeque<Instant>,
        incoming: FrameCursor,
        outgoing: FrameCursor,
        last_stream: u32,
        flooded: bool,
    }
}

impl<I> FloodGuard<I> {
    /// Guards `inner` (which starts with the client preface) with `limit` control frames a
    /// second; with `None` (an HTTP/1 connection) it only passes bytes through.
    pub fn new(inner: I, limit: Option<usize>) -> Self {
        FloodGuard {
            inner,
            limit: limit.map(|l| l.max(1)),
            recent: VecDeque::new(),
            incoming: FrameCursor::new(PREFACE_LEN),
            outgoing: FrameCursor::new(0),
            last_stream: 0,
            flooded: false,
        }
    }
}

/// GOAWAY `ENHANCE_YOUR_CALM`, naming the last stream the client opened.
fn goaway(last_stream: u32) -> [u8; 17] {
    let mut frame = [0u8; 17];
    let [_, l1, l2, l3] = 8u32.to_be_bytes();
    let [s0, s1, s2, s3] = last_stream.to_be_bytes();
    let [e0, e1, e2, e3] = ENHANCE_YOUR_CALM.to_be_bytes();
    frame.copy_from_slice(&[
        l1, l2, l3, GOAWAY, 0, 0, 0, 0, 0, s0, s1, s2, s3, e0, e1, e2, e3,
    ]);
    frame
}

impl<I: AsyncRead + AsyncWrite> AsyncRead for FloodGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut this = self.project();
        let Some(limit) = *this.limit else {
            return this.inner.poll_read(cx, buf);
        };
        if *this.flooded {
            return Poll::Ready(Err(std::io::Error::other("control-frame flood")));
        }
        let before = buf.filled().len();
        let result = this.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            let (recent, last_stream) = (&mut *this.recent, &mut *this.last_stream);
            let mut flood = false;
            this.incoming.feed(
                buf.filled().get(before..).unwrap_or_default(),
                |kind, flags, length, stream| {
                    if kind == HEADERS && stream > *last_stream {
                        *last_stream = stream;
                    }
                    if !is_control(kind, flags, length) {
                        return;
                    }
                    let now = Instant::now();
                    while recent
                        .front()
                        .is_some_and(|at| now.duration_since(*at) >= WINDOW)
                    {
                        recent.pop_front();
                    }
                    recent.push_back(now);
                    if recent.len() > limit {
                        flood = true;
                    }
                },
            );
            if flood {
                *this.flooded = true;
                // Best effort, and only between two of our own frames (never inside one, never
                // before our SETTINGS). A write that cannot finish now is given up.
                if this.outgoing.at_boundary() {
                    let frame = goaway(*this.last_stream);
                    let mut sent = 0;
                    while let Some(rest) = frame.get(sent..).filter(|r| !r.is_empty()) {
                        match this.inner.as_mut().poll_write(cx, rest) {
                            Poll::Ready(Ok(n)) if n > 0 => sent = sent.saturating_add(n),
                            _ => break,
                        }
                    }
                    let _ = this.inner.as_mut().poll_flush(cx);
                }
                return Poll::Ready(Err(std::io::Error::other("control-frame flood")));
            }
        }
        result
    }
}

impl<I: AsyncWrite> AsyncWrite for FloodGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        if this.limit.is_some()
            && let Poll::Ready(Ok(n)) = &result
        {
            this.outgoing
                .feed(data.get(..*n).unwrap_or_default(), |_, _, _, _| {});
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if this.limit.is_some()
            && let Poll::Ready(Ok(n)) = &result
        {
            let mut left = *n;
            for buf in bufs {
                let take = left.min(buf.len());
                this.outgoing
                    .feed(buf.get(..take).unwrap_or_default(), |_, _, _, _| {});
                left = left.saturating_sub(take);
                if left == 0 {
                    break;
                }
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        // Kept, so hyper writes head and body in one call instead of copying them together.
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_are_found_across_any_split() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend_from_slice(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
        stream.extend_from_slice(&[0, 0, 8, PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        stream.extend_from_slice(&[0, 0, 3, HEADERS, 4, 0, 0, 0, 5, 9, 9, 9]);
        stream.extend_from_slice(&[0, 0, 0, DATA, 0, 0, 0, 0, 5]);
        // Padding only: one pad-length byte saying 3, then three pad bytes.
        stream.extend_from_slice(&[0, 0, 4, DATA, PADDED, 0, 0, 0, 5, 3, 0, 0, 0]);
        stream.extend_from_slice(&[0, 0, 6, DATA, PADDED, 0, 0, 0, 5, 1, 7, 7, 7, 7, 0]);
        for split in [1, 2, 5, 9, 100] {
            let mut cursor = FrameCursor::new(PREFACE_LEN);
            let mut seen = Vec::new();
            for chunk in stream.chunks(split) {
                cursor.feed(chunk, |kind, flags, length, stream| {
                    seen.push((kind, is_control(kind, flags, length), stream));
                });
            }
            assert_eq!(
                seen,
                vec![
                    (SETTINGS, true, 0),
                    (PING, true, 0),
                    (HEADERS, false, 5),
                    (DATA, true, 5),
                    (DATA, true, 5),
                    (DATA, false, 5)
                ],
                "split {split}"
            );
            assert!(cursor.at_boundary());
        }
    }

    #[test]
    fn goaway_says_enhance_your_calm() {
        let frame = goaway(7);
        assert_eq!(&frame[..9], &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        assert_eq!(&frame[9..13], &7u32.to_be_bytes());
        assert_eq!(&frame[13..], &ENHANCE_YOUR_CALM.to_be_bytes());
    }
}
