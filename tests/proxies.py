"""Network faults on 127.0.0.1 that a test controls: a TCP proxy in front of a real
server (an emulator) that can be cut mid-run and restored, and a listener that accepts
every connection and never answers.

- TcpProxy: forwards each connection to the target, byte for byte (HTTP/1.1 for the
  BigQuery API, HTTP/2 gRPC for Pub/Sub alike). ``cut()`` is the server going away:
  every open connection is closed and the port refuses new ones, as a stopped emulator's
  does; ``restore()`` listens again on the same port, so the clients' settings stay
  valid. The emulator itself keeps running, and keeps its state (topics, tables).
- SilentListener: takes the TCP connection, reads whatever is sent and never writes a
  byte; the connection stays open until the listener stops.

tests/alert_servers.py has the two others: refused_port() (nothing listens) and
black_hole() (the kernel completes the handshake, nobody ever accepts).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"
#: Bound on connecting to the target for one proxied connection.
CONNECT_TIMEOUT = 5.0
_CHUNK = 65536


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _listen(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(64)
    return sock


class TcpProxy:
    """127.0.0.1:port -> target_host:target_port, cut and restored at will."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = _listen()
        self.port: int = self._listener.getsockname()[1]
        #: Connections accepted since the start, and while cut (always refused: 0).
        self.connections = 0
        self.cuts = 0
        self._accepting = self._start_accepting(self._listener)

    @classmethod
    def to(cls, host_port: str) -> TcpProxy:
        """A proxy in front of ``HOST:PORT`` (a Server's ``.host``)."""
        host, _, port = host_port.rpartition(":")
        return cls(host, int(port))

    @property
    def host(self) -> str:
        """``HOST:PORT``, as PUBSUB_EMULATOR_HOST wants it."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, as DISPATCHER_BIGQUERY_API_ENDPOINT wants it."""
        return f"http://{self.host}"

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def _start_accepting(self, listener: socket.socket) -> threading.Thread:
        thread = threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        )
        thread.start()
        return thread

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: cut or stopped
                return
            try:
                upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while this one was connecting
                    _close(client)
                    _close(upstream)
                    continue
                self.connections += 1
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)

    def cut(self) -> None:
        """The server goes away: open connections are closed, new ones refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._open = self._open, set()
            self.cuts += 1
        if listener is not None:
            _close(listener)
        for sock in connections:
            _close(sock)
        self._accepting.join(timeout=5)

    def restore(self) -> None:
        """The server is back, on the same port."""
        with self._lock:
            if self._listener is not None:
                return
            listener = _listen(self.port)
            self._listener = listener
        self._accepting = self._start_accepting(listener)

    def stop(self) -> None:
        self.cut()


class SilentListener:
    """Accepts every connection, reads and drops what it is sent, never answers."""

    def __init__(self) -> None:
        self._listener = _listen()
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._accepted = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name="silent-accept", daemon=True).start()

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._held.append(sock)
                self._accepted += 1
            threading.Thread(target=self._drain, args=(sock,), daemon=True).start()

    def _drain(self, sock: socket.socket) -> None:
        try:
            while sock.recv(_CHUNK):
                pass
        except OSError:
            pass

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _close(sock)


@contextlib.contextmanager
def silent_listener() -> Iterator[SilentListener]:
    listener = SilentListener()
    try:
        yield listener
    finally:
        listener.stop()
