# The SQLite ledger: the ledger rules in one BEGIN IMMEDIATE transaction per call, in a thread.
"""``sqlite:///PATH``: a ledger file shared by the processes of one machine.

- **Threads.** One ``sqlite3`` connection per ledger, used by one worker thread at a time
  (``trio.to_thread.run_sync`` behind a ``CapacityLimiter(1)``): SQLite serializes writers
  anyway, so a second connection in the same process would only wait for the first one's lock.
  A call hands the whole transaction to the thread, so a reservation or a settlement is one
  thread round trip (``benchmarks/bench_budget.py`` measures it).
- **Transactions.** Every reserve and settle is one ``BEGIN IMMEDIATE`` transaction (the write
  lock is taken first, so two processes never both read the totals and then both write), and
  is committed before the call returns. Reports are read transactions and write nothing.
- **Durability.** WAL mode with ``synchronous=NORMAL`` (the default): a commit is in the WAL
  before the call returns, so ``kill -9`` loses nothing committed; a power cut may lose the
  last commits. ``?synchronous=full`` syncs every commit to disk (slower, power-cut safe).
- **Waiting.** Another process's settlement cannot wake this one's waiters, so a budget
  polls a shared ledger (see ``poll_interval`` of :func:`~holysheep_trio.open_budget`).
- **Clock.** "Now" is read in the trio thread before the call (a test clock may use trio's
  clock), and passed in.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from ..errors import LedgerError
from ._calendar import Calendar, Periods
from ._core import (
    Hold,
    HoldRequest,
    LedgerReport,
    Limits,
    RenewRequest,
    Row,
    SettleRequest,
    Totals,
    UsageTotals,
    apply_hold,
    apply_renew,
    apply_settle,
    read_report,
)

__all__ = ["SCHEMA_VERSION", "SQLiteLedger", "SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION: Final = "1"
#: Seconds a transaction waits for another process's write lock before failing.
BUSY_TIMEOUT: Final = 10.0
#: Seconds between two tries to switch a ledger that another process is opening to WAL.
_OPEN_RETRY_INTERVAL: Final = 0.01
#: Bound on closing the connection (STYLE: clean-up is bounded).
_CLOSE_TIMEOUT: Final = 10.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spent (
    period TEXT PRIMARY KEY, amount INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    month TEXT NOT NULL,
    amount INTEGER NOT NULL,
    credit INTEGER NOT NULL,
    live INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reservations_day ON reservations (live, day);
CREATE INDEX IF NOT EXISTS reservations_month ON reservations (live, month);
CREATE INDEX IF NOT EXISTS reservations_expires ON reservations (live, expires);
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    month TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    expired INTEGER NOT NULL,
    PRIMARY KEY (day, model)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_month ON usage (month);
"""

# One query per table that names every column: a file whose tables lack one is not ours.
_SHAPE_CHECKS: Final = (
    "SELECT key, value FROM meta LIMIT 0",
    "SELECT period, amount FROM spent LIMIT 0",
    "SELECT id, owner, model, day, month, amount, credit, live, created, expires"
    " FROM reservations LIMIT 0",
    "SELECT day, month, model, requests, prompt_tokens, completion_tokens, cost, cancelled,"
    " expired FROM usage LIMIT 0",
)

_ROW_COLUMNS: Final = "id, owner, model, day, month, amount, credit, live, created, expires"
_USAGE_SUMS: Final = (
    "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost), SUM(cancelled),"
    " SUM(expired)"
)


def _row(values: tuple[Any, ...]) -> Row:
    return Row(
        id=values[0],
        owner=values[1],
        model=values[2],
        day=values[3],
        month=values[4],
        amount=values[5],
        credit=values[6],
        live=bool(values[7]),
        created=values[8],
        expires=values[9],
    )


class SQLiteStore:
    """:class:`~holysheep_trio.ledger._core.Store` over an open transaction of a connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def _one(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        found = self._db.execute(sql, parameters).fetchone()
        return None if found is None else found[0]

    def spent(self, period: str) -> int:
        value = self._one("SELECT amount FROM spent WHERE period = ?", (period,))
        return 0 if value is None else int(value)

    def add_spent(self, period: str, amount: int) -> None:
        self._db.execute(
            "INSERT INTO spent (period, amount) VALUES (?, ?)"
            " ON CONFLICT (period) DO UPDATE SET amount = amount + excluded.amount",
            (period, amount),
        )

    def reserved(self, *, day: str | None = None, month: str | None = None) -> int:
        if day is not None:
            value = self._one(
                "SELECT SUM(amount) FROM reservations WHERE live = 1 AND day = ?", (day,)
            )
        else:
            value = self._one(
                "SELECT SUM(amount) FROM reservations WHERE live = 1 AND month = ?", (month,)
            )
        return 0 if value is None else int(value)

    def get(self, reservation_id: str) -> Row | None:
        found = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        return None if found is None else _row(found)

    def put(self, row: Row) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO reservations ({_ROW_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.owner,
                row.model,
                row.day,
                row.month,
                row.amount,
                row.credit,
                int(row.live),
                row.created,
                row.expires,
            ),
        )

    def delete(self, reservation_id: str) -> None:
        self._db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def due(self, now: float) -> list[Row]:
        rows = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM reservations WHERE live = 1 AND expires <= ?", (now,)
        ).fetchall()
        return [_row(values) for values in rows]

    def next_expiry(self) -> float | None:
        value = self._one("SELECT MIN(expires) FROM reservations WHERE live = 1")
        return None if value is None else float(value)

    def purge(self, before: float) -> None:
        self._db.execute("DELETE FROM reservations WHERE live = 0 AND expires < ?", (before,))

    def add_usage(self, day: str, month: str, model: str, usage: UsageTotals) -> None:
        self._db.execute(
            "INSERT INTO usage (day, month, model, requests, prompt_tokens, completion_tokens,"
            " cost, cancelled, expired) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (day, model) DO UPDATE SET"
            " requests = requests + excluded.requests,"
            " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
            " completion_tokens = completion_tokens + excluded.completion_tokens,"
            " cost = cost + excluded.cost,"
            " cancelled = cancelled + excluded.cancelled,"
            " expired = expired + excluded.expired",
            (
                day,
                month,
                model,
                usage.requests,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cost,
                usage.cancelled,
                usage.expired,
            ),
        )

    def usage(self, *, day: str | None = None, month: str | None = None) -> dict[str, UsageTotals]:
        column, key = ("day", day) if day is not None else ("month", month)
        rows = self._db.execute(
            f"SELECT model, {_USAGE_SUMS} FROM usage WHERE {column} = ? GROUP BY model", (key,)
        ).fetchall()
        return {
            model: UsageTotals(
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=cost,
                cancelled=cancelled,
                expired=expired,
            )
            for model, requests, prompt, completion, cost, cancelled, expired in rows
        }

    def live_count(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM reservations WHERE live = 1"))

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _limit_text(value: int | None) -> str:
    return "" if value is None else str(value)


def _limit_value(text: str | None) -> int | None:
    return None if not text else int(text)


class SQLiteLedger:
    """A ledger in an SQLite file, shared by the processes of one machine (module docstring).

    Create it with :func:`~holysheep_trio.ledger.open_ledger` (``"sqlite:///PATH"``).
    """

    def __init__(
        self,
        path: str,
        *,
        calendar: Calendar,
        synchronous: str = "NORMAL",
        read_only: bool = False,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self._path = path
        self._calendar = calendar
        self._synchronous = synchronous
        self._read_only = read_only
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<SQLiteLedger {self._path!r}>"

    @property
    def url(self) -> str:
        """``"sqlite:///PATH"``."""
        return f"sqlite:///{self._path}"

    @property
    def shared(self) -> bool:
        """True: other processes may write to the file, so waiters poll."""
        return True

    # ---- plumbing ------------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        # Not abandoned on cancellation: a transaction that started runs to its end (bounded
        # by the busy timeout), so the caller never loses track of one that committed.
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _fail(self, doing: str, exc: sqlite3.Error) -> LedgerError:
        return LedgerError(f"ledger {self._path}: {doing} failed: {exc}")

    @contextmanager
    def _transaction(self, mode: str) -> Iterator[SQLiteStore]:
        db = self._db
        if db is None:
            raise LedgerError(f"ledger {self._path} is closed")
        db.execute(f"BEGIN {mode}")
        try:
            yield SQLiteStore(db)
            db.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed: the connection must not stay inside a
            # transaction, or every later BEGIN would fail.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # ---- opening -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file, check it, create the tables (not when read-only).

        Raises:
            LedgerError: The file cannot be opened or written, is corrupt, or is not a ledger.
        """
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        path = self._path
        try:
            if self._read_only:
                if not Path(path).is_file():
                    raise LedgerError(f"no ledger file at {path}")
                uri = Path(path).resolve().as_uri() + "?mode=ro"
                db = sqlite3.connect(
                    uri, uri=True, timeout=self._busy_timeout, check_same_thread=False
                )
            else:
                db = sqlite3.connect(path, timeout=self._busy_timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fail("opening", exc) from None
        db.isolation_level = None  # we issue BEGIN/COMMIT ourselves
        try:
            if not self._read_only:
                mode = self._wal_mode(db)
                if str(mode).lower() != "wal":
                    raise LedgerError(f"ledger {path}: cannot use WAL mode (got {mode!r})")
                db.execute(f"PRAGMA synchronous = {self._synchronous}")
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in check[:3])
                raise LedgerError(f"ledger {path} is corrupt: {problems}")
            if not self._read_only:
                db.execute("BEGIN IMMEDIATE")
                try:
                    # Statement by statement: executescript() would commit on its own.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                    if version is None:
                        db.execute(
                            "INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                        )
                    elif version[0] != SCHEMA_VERSION:
                        raise LedgerError(
                            f"ledger {path} has schema version {version[0]}; this version of"
                            f" holysheep-trio reads version {SCHEMA_VERSION}"
                        )
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            for query in _SHAPE_CHECKS:
                db.execute(query)
        except sqlite3.Error as exc:
            db.close()
            raise self._fail("opening", exc) from None
        except BaseException:
            db.close()
            raise
        self._db = db

    def _wal_mode(self, db: sqlite3.Connection) -> object:
        """``PRAGMA journal_mode = WAL``, waiting out another process that opens the file.

        Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
        locked" at once instead of calling its busy handler when another connection holds one
        (two workers opening a new ledger together): waited for here, up to the busy timeout.
        """
        give_up = time.monotonic() + self._busy_timeout
        while True:
            try:
                return db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= give_up:
                    raise
            time.sleep(_OPEN_RETRY_INTERVAL)  # a worker thread: nothing else waits on it

    async def configure(self, *, limits: Limits, timezone: str) -> None:
        """Record the budget's limits (for the ``usage`` command); check the time zone.

        Raises:
            LedgerError: The file counts days in another time zone, or cannot be written.
        """
        await self._run(self._configure_sync, limits, timezone)

    def _configure_sync(self, limits: Limits, timezone: str) -> None:
        try:
            with self._transaction("IMMEDIATE") as store:
                recorded = store.meta().get("timezone")
                if recorded is not None and recorded != timezone:
                    raise LedgerError(
                        f"ledger {self._path} counts days in {recorded}, not {timezone}: use"
                        f" timezone={recorded!r} or another file"
                    )
                store.set_meta("timezone", timezone)
                store.set_meta("daily_limit", _limit_text(limits.daily))
                store.set_meta("monthly_limit", _limit_text(limits.monthly))
        except sqlite3.Error as exc:
            raise self._fail("recording the limits", exc) from None

    # ---- the ledger ----------------------------------------------------------------------

    async def hold(self, request: HoldRequest) -> Hold:
        """See :meth:`holysheep_trio.Ledger.hold`."""
        now = self._calendar.now()
        return await self._run(
            self._hold_sync, request, now.timestamp(), self._calendar.periods(now)
        )

    def _hold_sync(self, request: HoldRequest, now: float, periods: Periods) -> Hold:
        try:
            with self._transaction("IMMEDIATE") as store:
                return apply_hold(store, request, now=now, periods=periods)
        except sqlite3.Error as exc:
            raise self._fail("reserving", exc) from None

    async def settle(self, request: SettleRequest) -> Totals:
        """See :meth:`holysheep_trio.Ledger.settle`."""
        now = self._calendar.now()
        return await self._run(
            self._settle_sync, request, now.timestamp(), self._calendar.periods(now)
        )

    def _settle_sync(self, request: SettleRequest, now: float, periods: Periods) -> Totals:
        try:
            with self._transaction("IMMEDIATE") as store:
                return apply_settle(store, request, now=now, periods=periods)
        except sqlite3.Error as exc:
            raise self._fail("settling", exc) from None

    async def renew(self, request: RenewRequest) -> frozenset[str]:
        """See :meth:`holysheep_trio.Ledger.renew`."""
        return await self._run(self._renew_sync, request, self._calendar.now().timestamp())

    def _renew_sync(self, request: RenewRequest, now: float) -> frozenset[str]:
        try:
            with self._transaction("IMMEDIATE") as store:
                return apply_renew(store, request, now=now)
        except sqlite3.Error as exc:
            raise self._fail("renewing", exc) from None

    async def report(self) -> LedgerReport:
        """See :meth:`holysheep_trio.Ledger.report`."""
        now = self._calendar.now()
        return await self._run(self._report_sync, now.timestamp(), self._calendar.periods(now))

    def _report_sync(self, now: float, periods: Periods) -> LedgerReport:
        try:
            with self._transaction("DEFERRED") as store:
                meta = store.meta()
                limits = Limits(
                    daily=_limit_value(meta.get("daily_limit")),
                    monthly=_limit_value(meta.get("monthly_limit")),
                )
                return read_report(
                    store,
                    now=now,
                    periods=periods,
                    limits=limits if "daily_limit" in meta else None,
                    timezone=meta.get("timezone"),
                )
        except sqlite3.Error as exc:
            raise self._fail("reading", exc) from None

    async def recorded_timezone(self) -> str | None:
        """The time zone the file's days are counted in, if recorded."""
        return await self._run(self._recorded_timezone_sync)

    def _recorded_timezone_sync(self) -> str | None:
        try:
            with self._transaction("DEFERRED") as store:
                return store.meta().get("timezone")
        except sqlite3.Error as exc:
            raise self._fail("reading", exc) from None

    async def aclose(self) -> None:
        """Close the connection (idempotent; shielded and bounded)."""
        db, self._db = self._db, None
        if db is None:
            return
        with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await self._run(db.close)
