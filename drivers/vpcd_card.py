"""A virtual smart card for development, over vsmartcard's virtual reader (vpcd).

No reader hardware is needed to run the real PC/SC path pyscard → pcscd → vpcd → card: this
module starts a pcscd of the process's own with two vpcd readers (``VirtualPcscd``) and plays
cards on them from Python (``VirtualCard`` with a ``CardBehaviour``: ``UidCard``,
``IsoMemberCard``, ``MifareClassicCard``). The test suite and ``membergate-edge bench-devices``
use it.

Needs the Debian packages ``pcscd vsmartcard-vpcd`` and pyscard. This module imports nothing
outside ``drivers``.

Isolation:

- Unix socket: pcscd 1.9.9 has ``/run/pcscd/pcscd.comm`` compiled in and ignores
  ``PCSCLITE_CSOCK_NAME``; only the client library (libpcsclite) honours it, and reads it once per
  process, at the first PC/SC call. So the process's clients are pointed (``PCSCLITE_CSOCK_NAME``,
  set before that first call) at a symbolic link of the process's own, and the link at the socket
  of the private pcscd started or activated last. Several ``VirtualPcscd`` may live in one process
  (one per test module, say): ``start()`` makes that one the one clients reach, ``close()`` hands
  back to the previous one still open.
- Mode "netns" (default when the process may create namespaces, i.e. root/CAP_SYS_ADMIN): a holder
  process owns a new mount + network namespace in which a private directory is bind-mounted on
  ``/run/pcscd`` (socket and pid file stay private), USB devices are hidden from pcscd so it cannot
  take a real reader from the system's pcscd, and loopback is up. pcscd is started inside it with
  ``nsenter``, so vpcd's TCP ports are private too; virtual cards connect from a helper thread that
  ``setns``-es into the namespace for the ``connect`` only. The namespace outlives pcscd restarts.
- Mode "socket" (fallback without privileges): pcscd is socket-activated (``LISTEN_FDS``) on a
  private Unix socket bound here; vpcd listens on free TCP ports picked at runtime. pcscd still
  writes ``/run/pcscd/pcscd.pid`` (the directory must be writable) and vpcd listens on all
  interfaces while it runs.
Both modes pick free TCP ports for vpcd. ``MEMBERGATE_PCSCD_ISOLATION=netns|socket`` forces a mode.

Timing: vpcd has no card-event thread, so pcscd polls it for a card every 400 ms
(``PCSCLITE_STATUS_POLL_RATE``); a card put on a vpcd reader is seen 0.1–0.5 s later. Readers with
an interrupt endpoint (most CCID readers) report at once.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from drivers.card_reader import MEMBERGATE_AID, MIFARE_DEFAULT_KEY

VPCD_DRIVER_CANDIDATES = (
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
)
DEBIAN_PACKAGES = "pcscd vsmartcard-vpcd libpcsclite-dev swig (and pip install pyscard)"
_CLONE_NEWNET = 0x40000000
HOST_PID_FILE = Path("/run/pcscd/pcscd.pid")

Isolation = Literal["netns", "socket"]


class VpcdError(RuntimeError):
    """pcscd or vpcd is missing or would not start; the message says what to install or check."""


def find_pcscd() -> str:
    found = shutil.which("pcscd") or shutil.which("pcscd", path="/usr/sbin:/sbin:/usr/local/sbin")
    if not found:
        raise VpcdError(f"pcscd not found: install the Debian packages {DEBIAN_PACKAGES}")
    return found


def find_vpcd_driver() -> str:
    for candidate in VPCD_DRIVER_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise VpcdError(
        "vpcd driver libifdvpcd.so not found (looked in "
        f"{', '.join(VPCD_DRIVER_CANDIDATES)}): install the Debian package vsmartcard-vpcd"
    )


def namespaces_available() -> bool:
    """Whether this process may make mount + network namespaces (root or CAP_SYS_ADMIN)."""
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--net", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _free_port_pair() -> int:
    """A port P with P and P+1 both free on this host (vpcd listens on one port per slot)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = int(probe.getsockname()[1])
        if port + 1 > 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("", port))
                b.bind(("", port + 1))
        except OSError:
            continue
        return port
    raise VpcdError("no two consecutive free TCP ports for vpcd")


def _setns(fd: int) -> None:
    setns: Callable[[int, int], None] | None = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _connect_in_netns(netns_path: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """TCP connect from inside another network namespace; the socket keeps that namespace.

    Runs in a throw-away thread: ``setns`` changes only the calling thread, so the process's own
    threads never leave their namespace.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(netns_path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                result["socket"] = socket.create_connection(address, timeout=timeout)
            except OSError as exc:
                result["error"] = exc
            finally:
                _setns(own)
        except OSError as exc:
            result.setdefault("error", exc)
        finally:
            os.close(own)
            os.close(target)

    worker = threading.Thread(target=run, name="netns-connect")
    worker.start()
    worker.join()
    if "socket" in result:
        sock: socket.socket = result["socket"]
        return sock
    raise result.get("error") or OSError("connect in namespace failed")


# --------------------------------------------------------------------------------------------
# Where this process's PC/SC clients connect: a link of its own, pointed at the active pcscd

_link_dir: Path | None = None
_active: list[VirtualPcscd] = []  # open instances, the one clients reach last
_csock_before: str | None = None  # PCSCLITE_CSOCK_NAME before the first instance, to restore


def client_socket_link() -> Path:
    """The path this process's PC/SC clients are pointed at (a symlink to the active pcscd)."""
    global _link_dir
    if _link_dir is None:
        base = tempfile.gettempdir()
        if len(base) > 60:  # AF_UNIX paths are short
            base = "/tmp"
        _link_dir = Path(tempfile.mkdtemp(prefix="mg-pcsc-", dir=base))
        atexit.register(shutil.rmtree, _link_dir, True)
    return _link_dir / "pcscd.comm"


def _activate(pcscd: VirtualPcscd) -> None:
    global _csock_before
    link = client_socket_link()
    if _csock_before is None:
        _csock_before = os.environ.get("PCSCLITE_CSOCK_NAME", "")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(link)
    if _active and _active[-1] is pcscd and link.is_symlink():
        return
    with contextlib.suppress(ValueError):
        _active.remove(pcscd)
    _active.append(pcscd)
    _point_link(link, pcscd.socket_path)


def _deactivate(pcscd: VirtualPcscd) -> None:
    global _csock_before
    if pcscd not in _active:
        return
    _active.remove(pcscd)
    link = client_socket_link()
    if _active:
        _point_link(link, _active[-1].socket_path)
        return
    link.unlink(missing_ok=True)
    if _csock_before is not None:
        if _csock_before:
            os.environ["PCSCLITE_CSOCK_NAME"] = _csock_before
        else:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        _csock_before = None


def _point_link(link: Path, target: Path) -> None:
    staging = link.with_name(f".{link.name}.new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    os.replace(staging, link)  # atomic: a client connects to the old or the new pcscd


class VirtualPcscd:
    """A pcscd of this process's own, with two vpcd readers.

    ``start()``, ``kill()`` (SIGKILL, as a crash), ``stop()``, ``restart()``, ``close()``.
    ``connect_card(slot)`` opens the TCP connection a virtual card uses; ``reader_name(slot)`` is
    the reader name PC/SC reports for that slot. ``start()`` also makes this instance the one the
    process's PC/SC clients reach (see the module docstring); ``close()`` hands them back to the
    instance activated before, if still open.
    Call the methods from the main thread (pcscd gets a parent-death signal tied to its parent).
    """

    SLOTS = 2
    READY_TIMEOUT = 10.0

    def __init__(
        self,
        workdir: Path,
        isolation: Isolation | None = None,
        friendly_name: str = "Virtual PCD",
    ) -> None:
        self.workdir = workdir
        #: Reader name prefix; change it between ``kill()``/``stop()`` and ``start()`` to make the
        #: old readers disappear and new ones appear (reader hotplug as PC/SC sees it).
        self.friendly_name = friendly_name
        self.pcscd = find_pcscd()
        self.driver = find_vpcd_driver()
        forced = os.environ.get("MEMBERGATE_PCSCD_ISOLATION", "")
        if isolation is None and forced in ("netns", "socket"):
            isolation = cast(Isolation, forced)
        if isolation is None:
            isolation = "netns" if namespaces_available() else "socket"
        self.isolation: Isolation = isolation
        self.config_dir = workdir / "reader.conf.d"
        self.run_dir = workdir / "run"
        self.socket_path = self.run_dir / "pcscd.comm"
        self.log_path = workdir / "pcscd.log"
        if len(str(self.socket_path)) > 100:
            raise VpcdError(f"socket path too long for AF_UNIX: {self.socket_path}")
        if self.isolation == "netns" and str(workdir.resolve()).startswith("/run/"):
            raise VpcdError("the work directory must not be under /run in netns mode")
        self.base_port = _free_port_pair()
        self._holder: subprocess.Popen[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._host_pid_file: bytes | None = None

    # -- names and addresses

    def reader_name(self, slot: int = 0) -> str:
        return f"{self.friendly_name} 00 {slot:02d}"

    def port(self, slot: int = 0) -> int:
        if not 0 <= slot < self.SLOTS:
            raise ValueError(f"vpcd slot must be 0..{self.SLOTS - 1}")
        return self.base_port + slot

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connect_card(self, slot: int = 0, timeout: float = 5.0) -> socket.socket:
        address = ("127.0.0.1", self.port(slot))
        if self.isolation == "netns":
            if self._holder is None:
                raise VpcdError("pcscd namespace not started")
            return _connect_in_netns(f"/proc/{self._holder.pid}/ns/net", address, timeout)
        return socket.create_connection(address, timeout=timeout)

    # -- lifetime

    def start(self) -> None:
        """Start pcscd (no-op when running) and point this process's PC/SC clients at it."""
        _activate(self)
        if self.pid is not None:
            return
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "vpcd").write_text(
            f'FRIENDLYNAME "{self.friendly_name}"\n'
            f"DEVICENAME   /dev/null:0x{self.base_port:04X}\n"
            f"LIBPATH      {self.driver}\n"
            f"CHANNELID    0x{self.base_port:04X}\n"
        )
        for stale in ("pcscd.comm", "pcscd.pid"):
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / stale).unlink()
        if self.isolation == "netns":
            self._start_in_namespace()
        else:
            self._start_socket_activated()
        self._wait_ready()

    def _pcscd_argv(self) -> list[str]:
        argv = [self.pcscd, "--foreground", "--info", "--config", str(self.config_dir)]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            # pcscd dies with this process even if that is killed with SIGKILL.
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        return argv

    def _start_in_namespace(self) -> None:
        if self._holder is None or self._holder.poll() is not None:
            script = (
                "set -e; ip link set lo up; "
                "mount -t tmpfs -o mode=0755 membergate-run /run; mkdir /run/pcscd; "
                'mount --bind "$1" /run/pcscd; '
                "mount -t tmpfs -o mode=0755 membergate-nousb /sys/bus/usb/devices "
                "2>/dev/null || true; "
                "echo ready; exec cat >/dev/null"
            )
            # The holder keeps the namespaces alive across pcscd restarts; it exits when its
            # stdin (held by this process) closes.
            holder = subprocess.Popen(
                ["unshare", "--mount", "--net", "--", "sh", "-c", script, "sh", str(self.run_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert holder.stdout is not None
            line = holder.stdout.readline()
            if line.strip() != b"ready":
                holder.kill()
                _, err = holder.communicate(timeout=5)
                raise VpcdError(
                    "could not set up the pcscd namespace: "
                    f"{err.decode(errors='replace').strip()} "
                    "(set MEMBERGATE_PCSCD_ISOLATION=socket to run without namespaces)"
                )
            self._holder = holder
        argv = [
            "nsenter",
            f"--target={self._holder.pid}",
            "--net",
            "--mount",
            "--",
            *self._pcscd_argv(),
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _start_socket_activated(self) -> None:
        with contextlib.suppress(OSError):
            Path("/run/pcscd").mkdir(mode=0o755, exist_ok=True)
        # pcscd overwrites the host's pid file; keep a system pcscd's to put it back.
        try:
            self._host_pid_file = HOST_PID_FILE.read_bytes()
        except OSError:
            self._host_pid_file = None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o666)
            listener.listen(64)
            fd = listener.fileno()
            env = dict(os.environ, LISTEN_FDS="1")
            env.pop("LISTEN_FDNAMES", None)
            # The socket must be fd 3 (SD_LISTEN_FDS_START) and LISTEN_PID pcscd's own pid: a
            # shim moves the fd, sets its pid, then execs pcscd in place. (A preexec_fn dup2 would
            # be undone by subprocess closing fds not in pass_fds; dash cannot name fds > 9.)
            shim = (
                "import os, sys\n"
                "fd = int(sys.argv[1])\n"
                "if fd != 3:\n"
                "    os.dup2(fd, 3)\n"
                "    os.close(fd)\n"
                "os.environ['LISTEN_PID'] = str(os.getpid())\n"
                "os.execvp(sys.argv[2], sys.argv[2:])\n"
            )
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", shim, str(fd), *self._pcscd_argv()],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(fd,),
                )
        finally:
            # Only pcscd holds the socket now: when it dies, clients get "no service" at once.
            listener.close()

    def _wait_ready(self) -> None:
        from smartcard import scard as sc

        wanted = {self.reader_name(slot) for slot in range(self.SLOTS)}
        deadline = time.monotonic() + self.READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise VpcdError(f"pcscd exited while starting:\n{self.log_text()}")
            rv, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
            if rv == sc.SCARD_S_SUCCESS:
                try:
                    rv, names = sc.SCardListReaders(context, [])
                    if rv == sc.SCARD_S_SUCCESS and wanted <= set(names):
                        return
                    last = f"readers {names!r}"
                finally:
                    sc.SCardReleaseContext(context)
            else:
                last = sc.SCardGetErrorMessage(rv)
            time.sleep(0.05)
        raise VpcdError(
            f"pcscd not ready after {self.READY_TIMEOUT}s ({last}):\n{self.log_text()}"
        )

    def kill(self) -> None:
        """SIGKILL pcscd, as a crash; cards lose their connection."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.isolation == "socket":
            self._restore_host_pid_file(process.pid)

    def _restore_host_pid_file(self, pid: int) -> None:
        """Put back the pid file pcscd overwrote (pcscd removes it itself on SIGTERM)."""
        with contextlib.suppress(OSError, ValueError):
            if HOST_PID_FILE.exists():
                if int(HOST_PID_FILE.read_text().strip("\0\n ")) != pid:
                    return  # not ours
                HOST_PID_FILE.unlink()
            if self._host_pid_file is not None:
                HOST_PID_FILE.write_bytes(self._host_pid_file)

    def close(self) -> None:
        self.stop()
        holder, self._holder = self._holder, None
        if holder is not None:
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait(timeout=5)
            for stream in (holder.stdout, holder.stderr):
                if stream is not None:
                    stream.close()
        _deactivate(self)

    # -- observing pcscd

    def wait_card_state(self, slot: int, present: bool, timeout: float = 5.0) -> None:
        """Block until pcscd reports a card on ``slot`` present (or absent)."""
        from smartcard import scard as sc

        reader = self.reader_name(slot)
        deadline = time.monotonic() + timeout
        rv, context = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if rv != sc.SCARD_S_SUCCESS:
            raise VpcdError(f"pcscd unreachable: {sc.SCardGetErrorMessage(rv)}")
        try:
            state = sc.SCARD_STATE_UNAWARE
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{reader}: card still {'absent' if present else 'present'} "
                        f"after {timeout}s"
                    )
                rv, states = sc.SCardGetStatusChange(
                    context, max(1, int(remaining * 1000)), [(reader, state)]
                )
                if rv == sc.SCARD_E_TIMEOUT:
                    continue
                if rv != sc.SCARD_S_SUCCESS:
                    raise VpcdError(f"{reader}: {sc.SCardGetErrorMessage(rv)}")
                state = int(states[0][1]) & ~sc.SCARD_STATE_CHANGED
                if bool(state & sc.SCARD_STATE_PRESENT) == present:
                    return
        finally:
            sc.SCardReleaseContext(context)


# ============================================================================================
# Virtual cards
#
# The vpcd protocol: every frame both ways is a 2-byte big-endian length and a payload. A 1-byte
# payload from vpcd is control (00 power off, 01 power on, 02 reset, 04 get ATR; only 04 is
# answered, with the ATR). A longer payload is a command APDU, answered by response data + SW.

#: PC/SC part 3 ATR of a MIFARE Classic 1K.
ATR_MIFARE_CLASSIC_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
#: PC/SC part 3 ATR of an ISO 14443-4 (contactless CPU) card without historical bytes.
ATR_ISO14443_4 = bytes.fromhex("3B80800101")
#: A contact card speaking T=0 (two historical bytes).
ATR_CONTACT_T0 = bytes.fromhex("3B021450")

SW_OK = b"\x90\x00"
SW_FILE_NOT_FOUND = b"\x6a\x82"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_FUNCTION_NOT_SUPPORTED = b"\x6a\x81"
SW_AUTH_FAILED = b"\x63\x00"
SW_SECURITY_NOT_SATISFIED = b"\x69\x82"
SW_NO_CURRENT_EF = b"\x69\x86"
SW_WRONG_LENGTH = b"\x67\x00"


def command_le(apdu: bytes) -> int | None:
    """``Le`` of a short command APDU (None for cases 1 and 3)."""
    if len(apdu) == 5:
        return apdu[4]
    if len(apdu) > 5 and len(apdu) == 6 + apdu[4]:
        return apdu[-1]
    return None


def _cut(data: bytes, le: int | None) -> bytes:
    return data if not le else data[:le]


class CardBehaviour:
    """How a virtual card answers. Subclasses override ``respond``."""

    atr: bytes = ATR_ISO14443_4

    def respond(self, apdu: bytes) -> bytes | None:
        """Response data + SW for ``apdu``; None makes the card vanish (close its socket)."""
        return SW_INS_NOT_SUPPORTED

    def reset(self) -> None:
        """Power cycle or warm reset: forget selections and authentication."""


class UidCard(CardBehaviour):
    """A contactless card the reader gives only a UID for (``FF CA``), like a DESFire or tag.

    ``uid=None`` makes ``FF CA`` fail (``6A81``), as on a contact card.
    """

    def __init__(self, uid: bytes | None, atr: bytes = ATR_ISO14443_4) -> None:
        self.uid = uid
        self.atr = atr

    def respond(self, apdu: bytes) -> bytes | None:
        cla, ins = apdu[0], apdu[1]
        if cla == 0xFF and ins == 0xCA:
            if self.uid is None or apdu[2] != 0x00:
                return SW_FUNCTION_NOT_SUPPORTED
            return _cut(self.uid, command_le(apdu)) + SW_OK
        if cla == 0xFF and ins == 0x82:  # load key: done by the reader, always fine
            return SW_OK if len(apdu) == 11 else SW_WRONG_LENGTH
        if cla == 0xFF and ins == 0x86:  # authenticate: this is no MIFARE Classic
            return SW_AUTH_FAILED
        if ins == 0xA4:
            return SW_FILE_NOT_FOUND
        return SW_INS_NOT_SUPPORTED


class IsoMemberCard(UidCard):
    """An ISO 7816-4 card with the member application: SELECT by AID, READ BINARY of its file."""

    def __init__(
        self,
        member_number: str | bytes,
        uid: bytes | None = None,
        aid: bytes = MEMBERGATE_AID,
        atr: bytes = ATR_ISO14443_4,
    ) -> None:
        super().__init__(uid, atr)
        self.aid = aid
        self.file = member_number.encode() if isinstance(member_number, str) else member_number
        self.selected = False

    def reset(self) -> None:
        self.selected = False

    def respond(self, apdu: bytes) -> bytes | None:
        cla, ins = apdu[0], apdu[1]
        if cla & 0x80 == 0 and ins == 0xA4 and apdu[2] == 0x04:
            lc = apdu[4] if len(apdu) > 5 else 0
            self.selected = apdu[5 : 5 + lc] == self.aid
            return SW_OK if self.selected else SW_FILE_NOT_FOUND
        if cla & 0x80 == 0 and ins == 0xB0:
            if not self.selected:
                return SW_NO_CURRENT_EF
            offset = apdu[2] << 8 | apdu[3]
            le = command_le(apdu) or 0
            data = self.file[offset:][: le or 256]
            if le and le > len(data):
                return data + b"\x62\x82"  # end of file before Le bytes
            return data + SW_OK
        return super().respond(apdu)


class MifareClassicCard(UidCard):
    """A MIFARE Classic 1K seen through a PC/SC part 3 reader (``FF 82``/``FF 86``/``FF B0``).

    ``blocks`` maps block numbers to 16-byte contents (missing blocks read as zeros); every sector
    opens with ``key_a``.
    """

    def __init__(
        self,
        uid: bytes,
        blocks: dict[int, bytes] | None = None,
        key_a: bytes = MIFARE_DEFAULT_KEY,
        atr: bytes = ATR_MIFARE_CLASSIC_1K,
    ) -> None:
        super().__init__(uid, atr)
        self.blocks = {n: data.ljust(16, b"\0")[:16] for n, data in (blocks or {}).items()}
        self.key_a = key_a
        self.reader_keys: dict[int, bytes] = {}
        self.authenticated_sector: int | None = None

    @staticmethod
    def sector(block: int) -> int:
        return block // 4 if block < 128 else 32 + (block - 128) // 16

    def reset(self) -> None:
        self.authenticated_sector = None

    def respond(self, apdu: bytes) -> bytes | None:
        cla, ins = apdu[0], apdu[1]
        if cla == 0xFF and ins == 0x82:
            if len(apdu) != 11 or apdu[4] != 6:
                return SW_WRONG_LENGTH
            self.reader_keys[apdu[3]] = apdu[5:11]
            return SW_OK
        if cla == 0xFF and ins == 0x86:
            if len(apdu) != 10 or apdu[4] != 5 or apdu[5] != 0x01:
                return SW_WRONG_LENGTH
            block = apdu[6] << 8 | apdu[7]
            key_type, key_number = apdu[8], apdu[9]
            if key_type == 0x60 and self.reader_keys.get(key_number) == self.key_a:
                self.authenticated_sector = self.sector(block)
                return SW_OK
            self.authenticated_sector = None
            return SW_AUTH_FAILED
        if cla == 0xFF and ins == 0xB0:
            block = apdu[3]
            if self.authenticated_sector != self.sector(block):
                return SW_SECURITY_NOT_SATISFIED
            return _cut(self.blocks.get(block, bytes(16)), command_le(apdu)) + SW_OK
        if cla == 0xFF and ins == 0xCA:
            return super().respond(apdu)
        return SW_INS_NOT_SUPPORTED  # no ISO 14443-4: the reader refuses ISO commands


@dataclass
class VirtualCard:
    """A card on a vpcd slot: ``insert()`` connects to vpcd, ``remove()`` closes the socket.

    Runs its own thread, so it answers whatever the caller's event loop is doing. ``apdus`` records
    every command APDU the card received.
    """

    pcscd: VirtualPcscd
    behaviour: CardBehaviour
    slot: int = 0
    apdus: list[bytes] = field(default_factory=list)
    _socket: socket.socket | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def reader_name(self) -> str:
        return self.pcscd.reader_name(self.slot)

    @property
    def inserted(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def insert(self) -> VirtualCard:
        if self.inserted:
            raise RuntimeError("card already inserted")
        self.remove()
        sock = self.pcscd.connect_card(self.slot)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.behaviour.reset()
        self._socket = sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name=f"virtual-card-{self.slot}", daemon=True
        )
        self._thread.start()
        return self

    def remove(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                frame = _recv_frame(sock)
                if frame is None:
                    return
                if len(frame) == 1:
                    if frame[0] == 0x04:
                        _send_frame(sock, self.behaviour.atr)
                    elif frame[0] in (0x00, 0x01, 0x02):
                        self.behaviour.reset()
                    continue
                self.apdus.append(frame)
                response = self.behaviour.respond(frame)
                if response is None:  # pulled away mid-command
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                _send_frame(sock, response)
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise


def _ack_now(sock: socket.socket) -> None:
    """Acknowledge what was read at once instead of after the delayed-ACK timer (~40 ms).

    vpcd (as packaged in Debian) writes a frame's 2-byte length and its payload separately,
    without TCP_NODELAY, so Nagle holds the payload until the length is acknowledged; with this
    side's delayed ACK every command took ~44 ms, an artefact of the virtual card alone (a real
    reader answers in a few ms). Linux leaves quick-ACK mode by itself, so this is set again
    after every read.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        _ack_now(sock)
        data += chunk
    return bytes(data)


def _recv_frame(sock: socket.socket) -> bytes | None:
    header = _recv_exact(sock, 2)
    if header is None:
        return None
    (length,) = struct.unpack(">H", header)
    return _recv_exact(sock, length) if length else b""


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)
