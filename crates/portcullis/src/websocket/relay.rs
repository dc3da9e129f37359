//! The relay between an upgraded client connection and an upgraded upstream connection:
//! bytes are forwarded unchanged in both directions, frame by frame, within the limits
//! (message size, idle time, lifetime), and the gateway closes with a proper close frame
//! when a limit ends the connection.

use super::frames::{FrameScanner, Violation, close_frame};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bounds of one relayed connection.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Largest message either side may send (close 1009 past it).
    pub max_message_bytes: u64,
    /// Longest time without a byte in either direction (close 1001).
    pub idle_timeout: Duration,
    /// When the connection ends at the latest: its lifetime limit or the token's expiry,
    /// whichever is sooner (close 1008).
    pub deadline: Instant,
}

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed (after their own close handshake, or by dropping the connection),
    /// or one did and the other did not follow within a short grace.
    Closed,
    /// Nothing was sent either way for `idle_timeout`.
    Idle,
    /// The lifetime or the token ran out.
    Expired,
    /// The gateway is shutting down.
    Shutdown,
    /// The client broke a limit or the framing rules.
    ClientViolation(Violation),
    /// The upstream broke a limit or the framing rules.
    UpstreamViolation(Violation),
    /// A transport error on either side.
    Broken,
}

impl RelayEnd {
    /// The name of the ending in metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::Idle => "idle_timeout",
            RelayEnd::Expired => "expired",
            RelayEnd::Shutdown => "shutdown",
            RelayEnd::ClientViolation(v) | RelayEnd::UpstreamViolation(v) => v.reason(),
            RelayEnd::Broken => "broken",
        }
    }
}

/// Bytes read at a time from each side.
const READ_CHUNK: usize = 16 * 1024;
/// After the gateway's close frame, how long (and how much) it keeps reading and discarding,
/// so that a peer still sending reads the close frame instead of a connection reset.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
const CLOSE_DRAIN_BYTES: u64 = 8 * 1024 * 1024;

/// The gateway's close: a frame to each side that is at a frame boundary, then both write
/// sides shut and the rest drained for a bounded time.
struct Close {
    client_code: u16,
    upstream_code: u16,
    reason: &'static str,
}

impl RelayEnd {
    fn close(self) -> Option<Close> {
        let close = |client_code, upstream_code, reason| {
            Some(Close {
                client_code,
                upstream_code,
                reason,
            })
        };
        match self {
            RelayEnd::Closed | RelayEnd::Broken => None,
            RelayEnd::Idle => close(1001, 1001, "idle timeout"),
            RelayEnd::Expired => close(1008, 1001, "session expired"),
            RelayEnd::Shutdown => close(1001, 1001, "going away"),
            RelayEnd::ClientViolation(v) => close(v.close_code(), 1001, v.reason()),
            // 1011, the server's unexpected condition: what the client sees of an upstream
            // that broke the rules (1014, "bad gateway", is too new for many clients).
            RelayEnd::UpstreamViolation(v) => close(1011, v.close_code(), v.reason()),
        }
    }
}

/// One direction's state.
struct Side<S> {
    stream: S,
    /// The scanner of the frames this side sends.
    frames: FrameScanner,
    /// Whether this side still sends (has not half-closed).
    reading: bool,
    buf: Vec<u8>,
}

/// Relays until either side closes, a limit ends the connection, or `shutdown` completes.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    limits: RelayLimits,
    shutdown: impl Future<Output = ()>,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Side {
        stream: client,
        frames: FrameScanner::new(true, limits.max_message_bytes),
        reading: true,
        buf: vec![0; READ_CHUNK],
    };
    let mut upstream = Side {
        stream: upstream,
        frames: FrameScanner::new(false, limits.max_message_bytes),
        reading: true,
        buf: vec![0; READ_CHUNK],
    };
    let mut out = Vec::with_capacity(READ_CHUNK.saturating_add(64));
    tokio::pin!(shutdown);
    // Once one side has finished, the other gets a short while to finish too.
    let mut finishing: Option<Instant> = None;
    let end = loop {
        if !client.reading && !upstream.reading {
            break RelayEnd::Closed;
        }
        if finishing.is_none() && !(client.reading && upstream.reading) {
            finishing = Some(Instant::now() + CLOSE_DRAIN);
        }
        let finished = async {
            match finishing {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let idle = tokio::time::sleep(limits.idle_timeout);
        // Reads are cancel-safe: whichever side is not chosen loses nothing.
        let step = tokio::select! {
            read = client.stream.read(&mut client.buf), if client.reading => Step::Client(read),
            read = upstream.stream.read(&mut upstream.buf), if upstream.reading => Step::Upstream(read),
            () = idle => Step::End(RelayEnd::Idle),
            () = tokio::time::sleep_until(limits.deadline) => Step::End(RelayEnd::Expired),
            () = &mut shutdown => Step::End(RelayEnd::Shutdown),
            () = finished => Step::End(RelayEnd::Closed),
        };
        let outcome = match step {
            Step::End(end) => Err(end),
            Step::Client(read) => {
                pass(read, &mut client, &mut upstream, &mut out, limits, true).await
            }
            Step::Upstream(read) => {
                pass(read, &mut upstream, &mut client, &mut out, limits, false).await
            }
        };
        if let Err(end) = outcome {
            break end;
        }
    };
    if let Some(close) = end.close() {
        close_both(&mut client, &mut upstream, &close).await;
    }
    end
}

enum Step {
    Client(std::io::Result<usize>),
    Upstream(std::io::Result<usize>),
    End(RelayEnd),
}

/// Forwards what `from` sent to `to`, or says why the relay ends.
async fn pass<A, B>(
    read: std::io::Result<usize>,
    from: &mut Side<A>,
    to: &mut Side<B>,
    out: &mut Vec<u8>,
    limits: RelayLimits,
    from_client: bool,
) -> Result<(), RelayEnd>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let n = read.map_err(|_| RelayEnd::Broken)?;
    if n == 0 {
        // Half-close: pass it on and keep relaying the other way.
        from.reading = false;
        let _ = to.stream.shutdown().await;
        return Ok(());
    }
    out.clear();
    let scanned = from.frames.feed(from.buf.get(..n).unwrap_or_default(), out);
    // A peer that stops reading must not hold the connection past the idle limit.
    let written = tokio::time::timeout(limits.idle_timeout, async {
        to.stream.write_all(out).await?;
        to.stream.flush().await
    })
    .await;
    match written {
        Err(_) => return Err(RelayEnd::Idle),
        Ok(Err(_)) => return Err(RelayEnd::Broken),
        Ok(Ok(())) => {}
    }
    scanned.map_err(|violation| {
        if from_client {
            RelayEnd::ClientViolation(violation)
        } else {
            RelayEnd::UpstreamViolation(violation)
        }
    })
}

async fn close_both<C, U>(client: &mut Side<C>, upstream: &mut Side<U>, close: &Close)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // A close frame can only go where the forwarded bytes end at a frame boundary: the
    // client's direction is fed by the upstream's frames, and the other way round.
    let to_client = upstream
        .frames
        .at_boundary()
        .then(|| close_frame(close.client_code, close.reason, true, [0; 4]));
    let to_upstream = client
        .frames
        .at_boundary()
        .then(|| close_frame(close.upstream_code, close.reason, false, mask_key()));
    tokio::join!(
        finish(&mut client.stream, to_client, client.reading),
        finish(&mut upstream.stream, to_upstream, upstream.reading),
    );
}

/// Sends `frame` (if any), shuts the write side, then reads and discards what the peer still
/// sends for a bounded time.
async fn finish<S>(stream: &mut S, frame: Option<Vec<u8>>, reading: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        if let Some(frame) = frame {
            let _ = stream.write_all(&frame).await;
        }
        let _ = stream.shutdown().await;
        if !reading {
            return;
        }
        let mut scratch = [0u8; 8192];
        let mut drained = 0u64;
        while drained < CLOSE_DRAIN_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained = drained.saturating_add(n as u64),
            }
        }
    })
    .await;
}

/// A fresh masking key: RFC 6455 §5.3 asks that it be unpredictable.
fn mask_key() -> [u8; 4] {
    use aws_lc_rs::rand::SecureRandom;
    let mut key = [0u8; 4];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn limits(max: u64, idle_ms: u64) -> RelayLimits {
        RelayLimits {
            max_message_bytes: max,
            idle_timeout: Duration::from_millis(idle_ms),
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_a_close_ends_it() {
        let (client, mut client_peer) = duplex(1024);
        let (upstream, mut upstream_peer) = duplex(1024);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            limits(1000, 5_000),
            std::future::pending(),
        ));
        // A masked text frame "hi" from the client.
        let from_client = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        client_peer
            .write_all(&from_client)
            .await
            .unwrap_or_default();
        let mut got = [0u8; 8];
        upstream_peer.read_exact(&mut got).await.unwrap_or_default();
        assert_eq!(got, from_client);
        let from_server = [0x82, 0x01, 0x2a];
        upstream_peer
            .write_all(&from_server)
            .await
            .unwrap_or_default();
        let mut got = [0u8; 3];
        client_peer.read_exact(&mut got).await.unwrap_or_default();
        assert_eq!(got, from_server);
        drop(client_peer);
        drop(upstream_peer);
        assert_eq!(relay.await.ok(), Some(RelayEnd::Closed));
    }

    #[tokio::test]
    async fn an_oversized_message_gets_1009_and_the_upstream_a_going_away() {
        let (client, mut client_peer) = duplex(4096);
        let (upstream, mut upstream_peer) = duplex(4096);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            limits(10, 5_000),
            std::future::pending(),
        ));
        // A binary frame of 20 bytes.
        let mut frame = vec![0x82, 0x80 | 20, 0, 0, 0, 0];
        frame.extend([0u8; 20]);
        client_peer.write_all(&frame).await.unwrap_or_default();
        let mut close = [0u8; 4];
        client_peer.read_exact(&mut close).await.unwrap_or_default();
        assert_eq!(close.get(..2), Some(&[0x88, 2 + 25][..]));
        assert_eq!(close.get(2..4), Some(&1009u16.to_be_bytes()[..]));
        let mut to_upstream = [0u8; 2];
        upstream_peer
            .read_exact(&mut to_upstream)
            .await
            .unwrap_or_default();
        assert_eq!(
            to_upstream.first(),
            Some(&0x88),
            "a close frame, none of the message"
        );
        drop(client_peer);
        drop(upstream_peer);
        assert_eq!(
            relay.await.ok(),
            Some(RelayEnd::ClientViolation(Violation::TooBig))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_expired_connections_are_closed() {
        let (client, mut client_peer) = duplex(1024);
        let (upstream, _upstream_peer) = duplex(1024);
        let ended = relay(client, upstream, limits(10, 1_000), std::future::pending()).await;
        assert_eq!(ended, RelayEnd::Idle);
        let mut close = [0u8; 4];
        client_peer.read_exact(&mut close).await.unwrap_or_default();
        assert_eq!(close.get(2..4), Some(&1001u16.to_be_bytes()[..]));

        let (client, mut client_peer) = duplex(1024);
        let (upstream, _upstream_peer) = duplex(1024);
        let mut short = limits(10, 60_000);
        short.deadline = Instant::now() + Duration::from_secs(3);
        let ended = relay(client, upstream, short, std::future::pending()).await;
        assert_eq!(ended, RelayEnd::Expired);
        client_peer.read_exact(&mut close).await.unwrap_or_default();
        assert_eq!(close.get(2..4), Some(&1008u16.to_be_bytes()[..]));
    }
}
