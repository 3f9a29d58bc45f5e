"""A local HTTP server of video files for the download tests: yt-dlp's generic extractor
fetches ``http://127.0.0.1:PORT/<id>.mp4`` from it as from a mirror, with no internet.

Files are served from a folder with byte ranges (``Range: bytes=N-``, as yt-dlp asks
when it resumes a cut download); a missing file is a 404. Per id, a test sets how the
server misbehaves (``Mirror.behave``):

- ``CUT_ONCE``: a response from the file's start stops at its middle and the connection
  closes; a resumed request (a range) gets the rest. yt-dlp's retry heals it.
- ``CUT_ALWAYS``: no response ever sends a byte past the file's middle.
- ``NO_LENGTH``: no Content-Length, half the file, then the connection closes: the
  client cannot tell that the file was cut short.
- ``STALL``: the headers, then silence for ``stall_s`` seconds before the body.
- ``TRICKLE``: the body in ``TRICKLE_BYTES`` pieces, ``trickle_s`` seconds apart.

``Mirror.requests`` lists (id, Range header or None, Cookie header or None) per request.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CUT_ONCE, CUT_ALWAYS, NO_LENGTH, STALL, TRICKLE = "cut_once", "cut_always", "no_length", "stall", "trickle"
TRICKLE_BYTES = 16 * 1024


class Mirror:
    def __init__(self, folder: Path, *, stall_s: float = 5.0, trickle_s: float = 0.5) -> None:
        self.folder = folder
        self.stall_s = stall_s
        self.trickle_s = trickle_s
        self.behave: dict[str, str] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.url = ""

    def template(self) -> str:
        return f"{self.url}/{{id}}.mp4"


def _handler(mirror: Mirror):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            name = self.path.lstrip("/").split("?")[0]
            vid = name.rsplit(".", 1)[0]
            mirror.requests.append((vid, self.headers.get("Range"), self.headers.get("Cookie")))
            path = mirror.folder / name
            if "/" in name or not path.is_file():
                self.send_error(404, "File not found")
                return
            data = path.read_bytes()
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(ranged[1]) if ranged else 0
            behaviour = mirror.behave.get(vid)
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            if behaviour != NO_LENGTH:
                self.send_header("Content-Length", str(len(data) - start))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if behaviour == NO_LENGTH:
                self.send_header("Connection", "close")
            self.end_headers()
            if not body:
                return
            end = len(data)
            if behaviour in (CUT_ALWAYS, NO_LENGTH) or (behaviour == CUT_ONCE and not ranged):
                end = len(data) // 2
            with contextlib.suppress(OSError):  # the client went away (a test killed it)
                if behaviour == STALL:
                    time.sleep(mirror.stall_s)
                piece = TRICKLE_BYTES if behaviour == TRICKLE else max(1, end - start)
                for at in range(start, max(start, end), piece):
                    self.wfile.write(data[at:min(at + piece, end)])
                    self.wfile.flush()
                    if behaviour == TRICKLE:
                        time.sleep(mirror.trickle_s)
            if end < len(data):
                self.close_connection = True

    return Handler


@contextlib.contextmanager
def serve(folder: Path, **kwargs) -> Iterator[Mirror]:
    """A Mirror of ``folder`` on 127.0.0.1 (a free port) while the block runs."""
    mirror = Mirror(folder, **kwargs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(mirror))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
