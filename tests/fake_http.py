"""A quiet JSON request handler for the small stand-in HTTP servers some plumbing tests start."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JsonHandler(BaseHTTPRequestHandler):
    """Base handler: no access log on stderr, and `send_json(code, body)` for replies."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        return None

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
