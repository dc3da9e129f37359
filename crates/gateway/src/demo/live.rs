//! The demo API's WebSocket endpoint, `/api/live`: an echo, so that the demo shows a
//! WebSocket through the whole pipeline. A deliberately small server side of RFC 6455:
//! unfragmented messages, pings answered, the close handshake.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID of RFC 6455 §1.3, hashed with the client's key into `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest message the echo takes (the gateway's limit is the real bound).
const MAX_MESSAGE: u64 = 1 << 20;

/// Answers the handshake with 101 and echoes on the upgraded connection.
pub(super) async fn live(mut req: Request) -> Response {
    use base64::Engine;
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        // A plain GET learns what the endpoint is (documented as such).
        let about = serde_json::json!({ "websocket": "echo", "subprotocols": [] });
        return axum::Json(about).into_response();
    };
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let _ = echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Echoes text and binary messages (prefixed with `echo: ` for text) until a close.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        let [first, second] = head;
        let opcode = first & 0x0f;
        let length = match second & 0x7f {
            126 => u64::from(stream.read_u16().await?),
            127 => stream.read_u64().await?,
            short => u64::from(short),
        };
        if first & 0x80 == 0 || length > MAX_MESSAGE {
            // Fragmented or too large for the demo: close with 1009.
            stream
                .write_all(&frame(0x8, &1009u16.to_be_bytes()))
                .await?;
            return Ok(());
        }
        let mut mask = [0u8; 4];
        if second & 0x80 != 0 {
            stream.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; usize::try_from(length).unwrap_or(0)];
        stream.read_exact(&mut payload).await?;
        for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
            *byte ^= key;
        }
        let reply = match opcode {
            0x1 => frame(0x1, &[b"echo: ".as_slice(), &payload].concat()),
            0x2 => frame(0x2, &payload),
            0x9 => frame(0xa, &payload),
            0x8 => {
                stream.write_all(&frame(0x8, &payload)).await?;
                return Ok(());
            }
            _ => continue,
        };
        stream.write_all(&reply).await?;
    }
}

/// One unmasked (server) frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => out.push(n as u8),
        Ok(n) => {
            out.push(126);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}
