"""What the fake provider servers (fake_finnhub, fake_history) share: a threaded HTTP server on
a free local port, started and stopped as a context manager, with answer modes per path or
provider played in order (one per request, the last sticking), and the handler's reply."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class FakeServer:
    """Subclasses name what a mode is set for (`mode_kind`, its `mode_keys`), the `modes` they
    play, the `url_prefix` of `base_url`, and their request `handler`."""

    mode_kind: ClassVar[str]
    mode_keys: ClassVar[tuple[str, ...]]
    modes: ClassVar[tuple[str, ...]]
    url_prefix: ClassVar[str] = ""
    handler: ClassVar[type[FakeHandler]]

    def __init__(self) -> None:
        self._modes: dict[str, list[str]] = {key: ["ok"] for key in self.mode_keys}
        self._lock = threading.Lock()
        #: Set by `stop()`: wakes every handler held on it (a provider that hangs).
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def set_mode(self, key: str, *modes: str) -> None:
        """Modes played in order, one per request, the last sticking."""
        if key not in self.mode_keys:
            raise ValueError(f"unknown {self.mode_kind} {key!r}; known: {self.mode_keys}")
        for mode in modes:
            if mode not in self.modes:
                raise ValueError(f"unknown mode {mode!r}; known: {self.modes}")
        with self._lock:
            self._modes[key] = list(modes) or ["ok"]

    def _next_mode(self, key: str) -> str:
        with self._lock:
            modes = self._modes[key]
            return modes.pop(0) if len(modes) > 1 else modes[0]

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.url_prefix}"

    def start(self) -> Self:
        handler = type("Handler", (self.handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # wake held handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler; `fake` is the server object it answers for."""

    fake: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): what a slow mode is for
