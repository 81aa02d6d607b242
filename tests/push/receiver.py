"""A local webhook receiver for tests: records every request; answers a scripted status.

Runs ``http.server`` on 127.0.0.1 on a free port in a thread, or as a process
(``python -m tests.push.receiver PORTFILE LOGFILE``) that appends one JSON line per
request to LOGFILE (the crash test reads it).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answered in order; then 200
        self.log: Path | None = None
        self._lock = threading.Lock()

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
            row = {"headers": headers, "body": body.decode(), "status": status}
            self.requests.append(row)
            if self.log is not None:
                with self.log.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
            return status

    @property
    def delivery_ids(self) -> list[str]:
        return [r["headers"]["x-shopcast-delivery"] for r in self.requests]


def _server(receiver: Receiver, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


@contextmanager
def running(receiver: Receiver) -> Iterator[str]:
    server = _server(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    rec = Receiver()
    rec.log = Path(sys.argv[2])
    srv = _server(rec)
    Path(sys.argv[1]).write_text(str(srv.server_address[1]))
    srv.serve_forever()
