"""A real OPA engine (OPA v1.20 embedded through opa-golib-python-bindings) behind OPA's
Data API, for the Portcullis tests.

Usage: python3 opa_server.py POLICY.rego... [--data DATA.json]...
Prints "listening on http://127.0.0.1:PORT" once ready. Implements
`POST /v1/data/<path>` with {"input": ...} -> {"result": ...} (no `result` when undefined),
as OPA does. Test control: POST /__mode with {"mode": "normal" | "hang" | "garbage" | "error"}
makes the server answer normally, never, with non-JSON, or with a 500.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opa_bindings import OpaEngine

engine = OpaEngine()
mode = {"value": "normal"}
lock = threading.Lock()

args = sys.argv[1:]
i = 0
while i < len(args):
    if args[i] == "--data":
        with open(args[i + 1]) as f:
            engine.add_data(json.load(f))
        i += 2
    else:
        with open(args[i]) as f:
            engine.add_policy(args[i], f.read())
        i += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/__mode":
            mode["value"] = body["mode"]
            return self.reply(200, b"{}")
        if not self.path.startswith("/v1/data/"):
            return self.reply(404, b'{"code":"not_found"}')
        current = mode["value"]
        if current == "hang":
            time.sleep(30)
        if current == "garbage":
            return self.reply(200, b"<html>not json")
        if current == "error":
            return self.reply(500, b'{"code":"internal_error"}')
        rule = "data." + self.path[len("/v1/data/"):].strip("/").replace("/", ".")
        with lock:
            rows = engine.eval_query(f"x = {rule}", input=body.get("input"))
        answer = {"result": rows[0]["x"]} if rows else {}
        self.reply(200, json.dumps(answer).encode())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
