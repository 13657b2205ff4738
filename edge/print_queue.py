"""A persistent print queue: receipts survive a printer out of paper, offline, or an edge restart.

A job holds the ESC/POS bytes rendered when it was queued (``print_jobs``, migration 4) and moves
``queued → printing → done``. The move to ``printing`` is committed *before* the bytes are sent,
so whatever happens next the database never claims less than what may have reached the paper:

- a send that fails (``PrinterUnavailable``, ``OSError``, anything) may have printed in part, so
  the job becomes ``uncertain``, not ``queued``;
- a job still ``printing`` when the queue starts was cut off by a crash and becomes ``uncertain``.

An ``uncertain`` job is never sent again on its own: a receipt prints once. The cashier looks at
the paper and asks for a ``reprint``, a job of its own kind, which is the only way a sale prints
again. A job that never left the queue waits (``printer.waiting``) until its printer can print.

The sync functions run inside a caller's ``Database.write`` transaction, so a sale and its
receipt job commit together. ``PrintQueue`` runs one worker task per printer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from drivers.base import DeviceStatus
from drivers.printer import PRINTABLE, PrinterUnavailable
from edge.db import Database
from protocol import tasks
from protocol.ids import uuid7

log = logging.getLogger("membergate.edge.print_queue")

KINDS = ("receipt", "reprint")
STATES = ("queued", "printing", "done", "uncertain", "cancelled")
#: How long ``close`` lets a job being sent finish before cancelling it (it then is 'uncertain').
CLOSE_GRACE = 15.0
_COLUMNS = "job_id, printer_id, sale_id, kind, state, attempts, last_error, created_at, printed_at"

Event = dict[str, Any]


class QueuePrinter(Protocol):
    """What the queue needs of a printer: ``ReceiptPrinter`` and ``SimulatedPrinter`` fit."""

    async def status(self) -> DeviceStatus: ...
    async def print_bytes(self, data: bytes) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------------------------
# Operations inside a caller's transaction


def enqueue(
    conn: sqlite3.Connection, *, printer_id: str, sale_id: str | None, kind: str, payload: bytes
) -> str:
    """Queue ``payload`` for ``printer_id``; the job id.

    An original receipt exists once per sale and printer: asking again (a POS retry, a second
    finalize answer) gives the existing job's id, whatever its state, and queues nothing.
    """
    if kind not in KINDS:
        raise ValueError(f"print job kind must be one of {KINDS}, got {kind!r}")
    job_id = uuid7()
    # DO NOTHING applies to uniqueness only (OR IGNORE would also swallow NOT NULL / CHECK).
    cur = conn.execute(
        "INSERT INTO print_jobs(job_id, printer_id, sale_id, kind, payload, state, created_at)"
        " VALUES (?, ?, ?, ?, ?, 'queued', ?) ON CONFLICT DO NOTHING",
        (job_id, printer_id, sale_id, kind, bytes(payload), _now()),
    )
    if cur.rowcount == 1:
        return job_id
    row = conn.execute(
        "SELECT job_id FROM print_jobs WHERE sale_id = ? AND printer_id = ? AND kind = 'receipt'",
        (sale_id, printer_id),
    ).fetchone()
    if row is None:  # only the unique receipt index can have refused the row
        raise RuntimeError("print job was not queued and no existing receipt job was found")
    return str(row[0])


def reprint(conn: sqlite3.Connection, sale_id: str, printer_id: str, payload: bytes) -> str:
    """Queue an explicit second copy of a sale's receipt (the only way a sale prints again)."""
    return enqueue(conn, printer_id=printer_id, sale_id=sale_id, kind="reprint", payload=payload)


def jobs(
    conn: sqlite3.Connection,
    *,
    printer_id: str | None = None,
    sale_id: str | None = None,
    states: tuple[str, ...] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Jobs without their bytes, newest first, optionally narrowed down."""
    where, args = ["1"], []
    if printer_id is not None:
        where.append("printer_id = ?")
        args.append(printer_id)
    if sale_id is not None:
        where.append("sale_id = ?")
        args.append(sale_id)
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args.extend(states)
    rows = conn.execute(
        f"SELECT {_COLUMNS}, length(payload) AS payload_bytes FROM print_jobs"
        f" WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (*args, limit),
    )
    return [dict(r) for r in rows]


def cancel(conn: sqlite3.Connection, job_id: str) -> bool:
    """Cancel a job that has not started; False when it is unknown or past 'queued'."""
    cur = conn.execute(
        "UPDATE print_jobs SET state = 'cancelled' WHERE job_id = ? AND state = 'queued'",
        (job_id,),
    )
    return cur.rowcount == 1


def recover_interrupted(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Jobs a crash left 'printing' become 'uncertain' (they may be on paper); returns them."""
    rows = [dict(r) for r in conn.execute(
        f"SELECT {_COLUMNS} FROM print_jobs WHERE state = 'printing'")]  # fmt: skip
    conn.execute(
        "UPDATE print_jobs SET state = 'uncertain',"
        " last_error = 'interrupted while printing (edge restarted)' WHERE state = 'printing'"
    )
    return rows


def _next_job(conn: sqlite3.Connection, printer_id: str) -> tuple[str, bytes] | None:
    row = conn.execute(
        "SELECT job_id, payload FROM print_jobs WHERE printer_id = ? AND state = 'queued'"
        " ORDER BY created_at, rowid LIMIT 1",
        (printer_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


def _claim(conn: sqlite3.Connection, job_id: str) -> bool:
    cur = conn.execute(
        "UPDATE print_jobs SET state = 'printing', attempts = attempts + 1"
        " WHERE job_id = ? AND state = 'queued'",
        (job_id,),
    )
    return cur.rowcount == 1  # False: cancelled since it was picked


def _finish(conn: sqlite3.Connection, job_id: str, error: str | None) -> None:
    if error is None:
        conn.execute(
            "UPDATE print_jobs SET state = 'done', printed_at = ?, last_error = NULL"
            " WHERE job_id = ?",
            (_now(), job_id),
        )
    else:
        conn.execute(
            "UPDATE print_jobs SET state = 'uncertain', last_error = ? WHERE job_id = ?",
            (error, job_id),
        )


# --------------------------------------------------------------------------------------------
# Workers


class PrintQueue:
    """Sends queued jobs to their printers, oldest first, one at a time per printer.

    ``on_event`` gets dicts: ``printer.waiting`` (a job waits for its printer; once per job and
    reason, not every poll), ``printer.error`` (a send failed; the job is 'uncertain'),
    ``print.done`` and ``print.uncertain`` (found interrupted at start).
    """

    def __init__(
        self,
        db: Database,
        printers: Mapping[str, QueuePrinter],
        *,
        poll_interval: float = 1.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self._db = db
        self._printers = dict(printers)
        self._poll = poll_interval
        self._on_event = on_event
        self._wakes = {printer_id: asyncio.Event() for printer_id in self._printers}
        self._reported: dict[str, tuple[str, str]] = {}  # printer → (job, reason) last reported
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("print queue already started")
        for job in await self._db.write(recover_interrupted):
            log.warning("print job %s on %s may have printed; not resent", job["job_id"],
                        job["printer_id"])  # fmt: skip
            self._emit({"type": "print.uncertain", "printer_id": job["printer_id"],
                        "job_id": job["job_id"], "sale_id": job["sale_id"],
                        "reason": "interrupted while printing"})  # fmt: skip
        self._closing = False
        self._tasks = [asyncio.create_task(self._worker(pid), name=f"print-queue {pid}")
                       for pid in self._printers]  # fmt: skip

    async def close(self) -> None:
        """Stop the workers; a job being sent gets ``CLOSE_GRACE`` seconds to finish."""
        self._closing = True
        self.wake()
        workers, self._tasks = self._tasks, []
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=CLOSE_GRACE)
        for task in pending:  # left 'printing', so the next start marks it 'uncertain'
            task.cancel()
        for task in pending:
            with contextlib.suppress(Exception):  # a job's own failure is the queue's record
                await tasks.stop(task)

    async def __aenter__(self) -> PrintQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def wake(self, printer_id: str | None = None) -> None:
        """Look for jobs now (call after the transaction that queued one has committed)."""
        for pid, event in self._wakes.items():
            if printer_id is None or pid == printer_id:
                event.set()

    async def _worker(self, printer_id: str) -> None:
        wake = self._wakes[printer_id]
        while not self._closing:
            wake.clear()  # before looking, so a wake() during the look is not lost
            try:
                delay = await self._step(printer_id)
            except Exception:  # e.g. the database is busy: the job stays where it was
                log.exception("print queue %s: step failed", printer_id)
                delay = self._poll
            if delay and not self._closing:
                # Polling too, so a job queued without wake() (another process) still prints.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)

    async def _step(self, printer_id: str) -> float:
        """Print the oldest queued job if the printer can; the pause before the next look."""
        printer = self._printers[printer_id]
        job = await self._db.read(lambda conn: _next_job(conn, printer_id))
        if job is None:
            return self._poll
        job_id, payload = job
        try:
            status = await printer.status()
            printable, reason = status.health in PRINTABLE, status.detail or str(status.health)
        except Exception as exc:  # a driver bug must not look like "printable"
            printable, reason = False, f"status query failed: {exc}"
        if not printable:
            if self._reported.get(printer_id) != (job_id, reason):
                self._reported[printer_id] = (job_id, reason)
                self._emit({"type": "printer.waiting", "printer_id": printer_id,
                            "job_id": job_id, "reason": reason})  # fmt: skip
            return self._poll
        self._reported.pop(printer_id, None)
        # Committed before a byte is sent: from here on a crash leaves it 'printing'.
        if not await self._db.write(lambda conn: _claim(conn, job_id)):
            return 0.0
        try:
            await printer.print_bytes(payload)
        except Exception as exc:  # part of it may be on paper: never resent automatically
            error = exc.reason if isinstance(exc, PrinterUnavailable) else f"{exc!r}"
            await self._db.write(lambda conn: _finish(conn, job_id, error))
            log.warning("print job %s on %s uncertain: %s", job_id, printer_id, error)
            self._emit({"type": "printer.error", "printer_id": printer_id, "job_id": job_id,
                        "reason": error})  # fmt: skip
            return self._poll
        await self._db.write(lambda conn: _finish(conn, job_id, None))
        self._emit({"type": "print.done", "printer_id": printer_id, "job_id": job_id})
        return 0.0

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a listener's bug must not stop printing
            log.exception("print queue event handler failed on %s", event["type"])
