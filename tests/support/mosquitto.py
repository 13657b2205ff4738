"""A private Mosquitto for tests: own config, own free port, restartable on that same port.

The system Mosquitto on 127.0.0.1:1883 is never used. ``persistence false`` on purpose: a restart
then loses retained messages and sessions, as a real broker restart without persistence would.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    def __init__(
        self,
        tmp_dir: Path,
        port: int | None = None,
        acl: list[str] | None = None,
        passwords: dict[str, str] | None = None,
        include_dir: Path | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``include_dir``: a directory of ``*.conf`` files (as ``membergate-provision broker``
        writes) that bring the listener (on ``127.0.0.1:port``, so ``port`` is required),
        ``allow_anonymous``, ``password_file`` and ``acl_file``; ``acl`` and ``passwords``
        are then not taken. ``tls``: (CA certificate, server certificate, server key) for a
        listener that speaks TLS only."""
        if include_dir is not None and (port is None or acl is not None or passwords or tls):
            raise ValueError("include_dir needs port, and brings its own acl, passwords and tls")
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = self.dir / "mosquitto.conf"
        self.log_file = self.dir / "mosquitto.log"
        self._stderr = self.dir / "mosquitto.stderr"
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls = tls  # (ca.crt, server.crt, server.key): the listener speaks TLS only
        self._write_config(acl, passwords, include_dir)

    def _write_config(self, acl: list[str] | None, passwords: dict[str, str] | None,
                      include_dir: Path | None = None) -> None:
        lines = [] if include_dir is not None else [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if passwords else 'true'}",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}",
                      "tls_version tlsv1.2"]
        lines += [
            "persistence false",
            "max_queued_messages 100000",  # default 1000 drops QoS 1 for a slow test subscriber
            f"log_dest file {self.log_file}",
            "log_type all",  # ACL denials are only logged at debug level
            "log_timestamp_format %H:%M:%S",
            # Run as root, Mosquitto 2 switches to user "mosquitto", who cannot read tmp_path.
            f"user {getpass.getuser()}",
        ]
        if passwords:
            pw_file = self.dir / "passwd"
            tool = shutil.which("mosquitto_passwd")
            if tool is None:
                raise RuntimeError("mosquitto_passwd not found")
            for i, (user, password) in enumerate(passwords.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run([tool, "-b", *create, str(pw_file), user, password], check=True)
            lines.append(f"password_file {pw_file}")
        if acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text("\n".join(acl) + "\n")
            lines.append(f"acl_file {acl_file}")
        if include_dir is not None:
            lines.append(f"include_dir {Path(include_dir).absolute()}")
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port) and return once the port accepts connections."""
        if self.running:
            raise RuntimeError("mosquitto already running")
        with self._stderr.open("ab") as err:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                          stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: "
                                   f"{self._stderr.read_text()}{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto not listening on {self.port}") from None
                time.sleep(0.02)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no DISCONNECT, no goodbye; sockets are reset by the kernel."""
        self._end(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# Registered as ``mosquitto`` whatever name it is imported under. Test modules import
# ``mosquitto_fixture`` (with a noqa for F401) so that a test parameter called ``mosquitto``
# does not trip ruff's F811.
@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous Mosquitto on a free port, stopped after the test."""
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"{MOSQUITTO} not installed")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


mosquitto = mosquitto_fixture  # the same fixture, for ``from ... import mosquitto`` users
