"""Stand-ins for ESC/POS printers: a TCP printer on a free port and a serial printer on a pty.

Both record every byte they receive and answer the real-time status queries ``DLE EOT 1`` (printer)
and ``DLE EOT 4`` (paper sensor) according to ``mode``:

- ``"online"``: online, paper present;
- ``"paper_low"``: online, paper near end;
- ``"paper_out"``: paper end, and offline as real printers go when the paper runs out;
- ``"offline"``: the offline bit (cover open), paper present;
- ``"silent"``: never answers (a printer that hangs, or a port that is not a printer).

``DLE EOT 2`` and ``3`` get the "no error" byte. The byte sequences are scanned across reads, so a
query split over two TCP segments is still answered.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

Mode = Literal["online", "paper_low", "paper_out", "offline", "silent"]

_REPLIES: dict[str, dict[int, int]] = {
    "online": {1: 0x12, 4: 0x12},
    "paper_low": {1: 0x12, 4: 0x1E},
    "paper_out": {1: 0x1A, 4: 0x72},
    "offline": {1: 0x1A, 4: 0x12},
}


class _Recorder:
    """Records received bytes and works out the replies to DLE EOT n."""

    def __init__(self, mode: Mode) -> None:
        self.mode: Mode = mode
        self._data = bytearray()
        self._changed = threading.Condition()
        self._pending = b""  # the start of a query split across reads

    @property
    def received(self) -> bytes:
        with self._changed:
            return bytes(self._data)

    def clear(self) -> None:
        with self._changed:
            self._data.clear()

    def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10.0) -> bytes:
        """Block until ``predicate(received)`` holds; the bound only guards against hangs."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(bytes(self._data)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"printer stand-in got only {bytes(self._data)!r}")
                self._changed.wait(left)
            return bytes(self._data)

    def feed(self, chunk: bytes) -> bytes:
        """Record ``chunk``; returns the status bytes to send back."""
        with self._changed:
            self._data += chunk
            self._changed.notify_all()
        scan, self._pending = self._pending + chunk, b""
        replies = bytearray()
        start = 0
        while (found := scan.find(b"\x10\x04", start)) >= 0:
            if found + 2 >= len(scan):  # the rest of this query comes with the next chunk
                self._pending = scan[found:]
                break
            reply = self.reply(scan[found + 2])
            if reply is not None:
                replies.append(reply)
            start = found + 3
        else:
            if scan.endswith(b"\x10") and len(scan) - 1 >= start:
                self._pending = b"\x10"
        return bytes(replies)

    def reply(self, n: int) -> int | None:
        if self.mode == "silent":
            return None
        return _REPLIES[self.mode].get(n, 0x12)


class TcpEscposPrinter(_Recorder):
    """A network printer on 127.0.0.1 and a free port; ``with`` starts and stops it."""

    def __init__(self, mode: Mode = "online") -> None:
        super().__init__(mode)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._server.getsockname()[:2]
        self.connections = 0
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="escpos-tcp", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening (connections are refused from now on) and drop the clients."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.close()  # only now: closing under a blocked accept() would not stop it
        self.drop_clients()

    def drop_clients(self) -> None:
        """Close every open connection, as a printer that was switched off and on."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _accept(self) -> None:
        self._server.settimeout(0.05)  # to notice ``close``
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._pending = b""
        try:
            while chunk := client.recv(4096):
                reply = self.feed(chunk)
                if reply:
                    client.sendall(reply)
        except OSError:
            pass
        finally:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            client.close()


class PtyEscposPrinter(_Recorder):
    """A serial printer on the master side of a pty; open ``devfile`` with pyserial."""

    def __init__(self, mode: Mode = "online") -> None:
        super().__init__(mode)
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.devfile = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="escpos-pty", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._master)
        os.close(self._slave)  # kept open until now so the master never sees a hang-up

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                continue
            reply = self.feed(chunk)
            if reply:
                os.write(self._master, reply)
