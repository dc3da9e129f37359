#!/usr/bin/env python3
"""A tiny WebSocket client (RFC 6455, Python standard library only), to try the demo's
WebSocket route: sends each MESSAGE as a text message and prints each reply.

  python3 websocket-client.py URL [-H 'name: value']... [--cacert ca.pem] MESSAGE...

Exit status: 0 when every message got a reply, 1 when the handshake was refused (the
status line is printed), 2 when the connection closed early (the close code is printed).
"""
import argparse, base64, os, socket, ssl, struct, sys, urllib.parse


def frame(opcode, payload):
    """A masked client frame."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(sock):
    first, second = read_exact(sock, 2)
    n = second & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(sock, 8))[0]
    return first & 0x0F, read_exact(sock, n)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("messages", nargs="*", metavar="MESSAGE")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--cacert")
    args = parser.parse_intermixed_args()
    url = urllib.parse.urlsplit(args.url)
    secure = url.scheme == "wss"
    port = url.port or (443 if secure else 80)
    sock = socket.create_connection((url.hostname, port), timeout=10)
    if secure:
        context = ssl.create_default_context(cafile=args.cacert)
        sock = context.wrap_socket(sock, server_hostname=url.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1",
        f"Host: {url.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ] + args.header
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status + " ":
        print(status)
        return 1
    for message in args.messages:
        sock.sendall(frame(0x1, message.encode()))
        try:
            opcode, payload = read_frame(sock)
        except EOFError:
            print("closed")
            return 2
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            print(f"closed {code}")
            return 2
        print(payload.decode(errors="replace"))
    sock.sendall(frame(0x8, struct.pack("!H", 1000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
