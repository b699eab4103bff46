"""A real HTTP file server on 127.0.0.1 for the dataset tests: range requests, and faults on demand.

`FileServer(folder)` serves the files under `folder` from a thread (Python's `http.server`), with
`Range: bytes=N-` answered by 206 Partial Content, as the real hosts answer it. Faults, each for
the next request of a file only: `drop_after[name] = n` sends the headers of the whole file, then
`n` bytes, then closes the connection (an interrupted transfer); `corrupt[name] = k` flips one
byte in the next `k` transfers. `requests` records (path, Range header) of every request.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path


class FileServer:
    def __init__(self, folder: Path, ranges: bool = True) -> None:
        self.folder = Path(folder)
        self.ranges = ranges
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _file(self) -> Path | None:
                path = (server.folder / self.path.lstrip("/")).resolve()
                return path if path.is_file() and server.folder.resolve() in path.parents else None

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                path = self._file()
                server.requests.append(("HEAD " + self.path, None))
                if path is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                path = self._file()
                header = self.headers.get("Range")
                server.requests.append((self.path, header))
                if path is None:
                    self.send_error(404)
                    return
                data = path.read_bytes()
                name = path.name
                start = 0
                if header and server.ranges:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                body = data[start:]
                if server.corrupt.get(name, 0) > 0:
                    server.corrupt[name] -= 1
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop_after.pop(name, None)
                sent = body if cut is None else body[:cut]
                # Counted before the write: the client may return (and the test read the count)
                # as soon as the last byte arrives, before this thread runs another line.
                server.bytes_sent[name] = server.bytes_sent.get(name, 0) + len(sent)
                self.wfile.write(sent)
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def data_requests(self) -> list[tuple[str, str | None]]:
        """GET requests of data files (not of checksum lists)."""
        return [r for r in self.requests if not r[0].startswith("HEAD") and not r[0].endswith(("SUMS",))]

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
