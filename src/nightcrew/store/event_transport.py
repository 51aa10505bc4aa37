"""How live events cross processes: a NOTIFY channel on PostgreSQL, a journal on SQLite.

Both carry the same payloads (`nightcrew.live.wire`: small JSON texts, each well under
PostgreSQL's 8,000-byte NOTIFY limit) and offer the same two halves: ``send`` (called from
the publisher's thread, blocking) and ``receive`` (a loop delivering each payload to a
callback until stopped).

**PostgreSQL**: ``pg_notify`` on the channel `EVENTS_CHANNEL`, apart from the workers'
wake-up channel so no worker parses a single event; all of a batch's payloads go in one
statement (``SELECT pg_notify(...) FROM unnest(...)``), delivered in order at its commit.
Listeners hold one ``LISTEN`` connection each (one per process, whatever its streams).

**SQLite** has no notifications, so events go to a journal: a small SQLite file next to
the database (``<database>-events``), one row per payload, tailed by readers. A file of
its own because the task database has one write lock, which the workers' claims and
finishes need: journal writes never take it. Readers look for new rows only when
``PRAGMA data_version`` says another connection committed (a read of the WAL index in
shared memory, no I/O), every `TAIL_INTERVAL`; the journal keeps its last
`JOURNAL_KEEP_ROWS` rows and `JOURNAL_KEEP_SECONDS`, which is the window a reader that
fell behind can catch up within. Reach: the processes of one host, SQLite's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nightcrew.store.database import Database
from nightcrew.store.failures import driver_errors
from nightcrew.store.postgres import CONNECT_TIMEOUT_SECONDS, conninfo

log = logging.getLogger("nightcrew.live")

#: The PostgreSQL channel of live events (the workers' wake-ups use ``nightcrew``).
EVENTS_CHANNEL = "nightcrew_events"
#: SQLite journal: seconds between two looks for new rows; rows and age kept.
TAIL_INTERVAL = 0.02
JOURNAL_KEEP_ROWS = 5000
JOURNAL_KEEP_SECONDS = 300.0
#: A journal writer prunes once every this many inserts.
PRUNE_EVERY = 200

_JOURNAL_DDL = (
    "CREATE TABLE IF NOT EXISTS nightcrew_live_events ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, payload TEXT NOT NULL)"
)
_JOURNAL_INSERT = "INSERT INTO nightcrew_live_events (at, payload) VALUES (?, ?)"
_JOURNAL_PRUNE = (
    "DELETE FROM nightcrew_live_events WHERE at < ? OR id <= "
    "(SELECT max(id) FROM nightcrew_live_events) - ?"
)
_JOURNAL_TAIL = "SELECT id, payload FROM nightcrew_live_events WHERE id > ? ORDER BY id LIMIT 1000"
_JOURNAL_LAST = "SELECT coalesce(max(id), 0) FROM nightcrew_live_events"
_READERS_DDL = (
    "CREATE TABLE IF NOT EXISTS nightcrew_live_readers (origin TEXT PRIMARY KEY, seen_at REAL)"
)
_READER_SEEN = "INSERT OR REPLACE INTO nightcrew_live_readers (origin, seen_at) VALUES (?, ?)"
_READER_GONE = "DELETE FROM nightcrew_live_readers WHERE origin = ?"
_READERS_NOW = "SELECT count(*) FROM nightcrew_live_readers WHERE seen_at > ?"
#: ``application_name`` of the connections that receive events, and of a publisher's.
RECEIVER_NAME = "nightcrew events listener"
PROBE_NAME = "nightcrew events publisher"
#: A batch's payloads go as one text, cut on the server at `SEPARATOR`: a ``text[]``
#: parameter costs the sender about four times the CPU to quote (measured: 0.22 against
#: 0.065 ms for 24 KB), and a payload (JSON, whose strings escape control characters)
#: never holds the separator.
_PG_NOTIFY = "SELECT count(pg_notify(%s, p)) FROM unnest(string_to_array(%s, chr(31))) AS p"
SEPARATOR = "\x1f"
_PG_LISTENED = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
    "WHERE application_name = %s AND datname = current_database())"
)
#: A journal reader refreshes its row this often; older than `READER_STALE` is gone.
READER_BEAT = 1.0
READER_STALE = 5.0
#: A receiver gathers the notifications that arrive this long after the first (seconds).
RECEIVE_BATCH_SECONDS = 0.005


class EventTransport:
    """The two halves of a transport; `for_database` picks the one for a database."""

    #: Whether events reach other processes at all (an in-memory SQLite has nobody).
    crosses_processes = True

    def scope(self) -> str:
        """What payloads are meant for (the schema on PostgreSQL), so installs sharing a
        channel or a journal ignore each other's events."""
        return ""

    def send(self, payloads: list[str]) -> None:
        """Deliver payloads, in order (blocking; the publisher's thread calls this)."""

    def listened(self) -> bool:
        """Whether any process receives now (publishers skip their work otherwise)."""
        return True

    #: Whether `asend` exists: payloads made on an event loop are then sent from it.
    sends_async = False
    #: Whether `areceive` exists: a hub then receives on its loop, without a thread.
    receives_async = False

    async def areceive(
        self, deliver: Callable[[list[str]], None], ready: Callable[[], None]
    ) -> None:
        """`receive` as a task of the running loop (until cancelled or the connection
        is lost)."""
        raise NotImplementedError

    async def asend(self, payloads: list[str]) -> None:
        """`send` from the running loop, on a connection of that loop's own."""
        raise NotImplementedError

    def receive(
        self, deliver: Callable[[list[str]], None], stop: threading.Event, ready: threading.Event
    ) -> None:
        """Hand each batch of payloads that arrives to ``deliver`` until ``stop`` is set
        (blocking, in a thread of its own); ``ready`` is set once listening."""
        ready.set()
        stop.wait()

    def close(self) -> None:
        """Close the sending side's connection."""

    async def aclose(self) -> None:
        """`close`, awaiting the running loop's own connection."""
        self.close()


class PostgresChannel(EventTransport):
    """``pg_notify`` on `EVENTS_CHANNEL`, and ``LISTEN`` on it.

    Sending borrows a pooled connection of the app's own engine (the one its enqueues just
    used), so an app made for one enqueue opens no connection more to announce it. The
    publisher's look every second for receivers goes over a plain psycopg connection of its
    own: a worker has no synchronous engine, and making one for it cost 2.9 ms of CPU at the
    first look and 0.15 ms a look after, against 1.1 and 0.07 ms (``time.process_time``
    around `listened` in a process that had imported psycopg, as a worker has).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._conninfo = conninfo(database.url)
        self._scope: str | None = None
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        self._probe: Any = None
        self._probe_lock = threading.Lock()

    def _connect(self, name: str) -> Any:
        import psycopg

        with driver_errors():
            conn = psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
            conn.execute(f"SET application_name = '{name}'")
        return conn

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with driver_errors(), self.database.sync_autocommit_engine.connect() as conn:
            return conn.exec_driver_sql(sql, params).first()

    def _ask(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """One row from the probe connection (opened on first use, dropped when it fails)."""
        with self._probe_lock:
            if self._probe is None or self._probe.closed:
                self._probe = self._connect(PROBE_NAME)
            try:
                with driver_errors():
                    return self._probe.execute(sql, params).fetchone()
            except BaseException:
                with contextlib.suppress(Exception):
                    self._probe.close()
                self._probe = None
                raise

    def listened(self) -> bool:
        """A receiving connection exists on this database (its ``application_name``, which
        ``pg_stat_activity`` shows every role)."""
        row = self._ask(_PG_LISTENED, (RECEIVER_NAME,))
        return bool(row and row[0])

    def scope(self) -> str:
        if self._scope is None:
            row = self._ask("SELECT current_schema()")
            self._scope = str(row[0]) if row and row[0] else ""
        return self._scope

    def send(self, payloads: list[str]) -> None:
        if payloads:  # unnest yields the array in order, so the notices go out in order
            self._one(_PG_NOTIFY, (EVENTS_CHANNEL, SEPARATOR.join(payloads)))

    sends_async = True

    async def asend(self, payloads: list[str]) -> None:
        """One statement on this loop's own connection (opened on first use, dropped when
        it fails): a worker's events never wake a thread to be sent."""
        if not payloads:
            return
        import psycopg

        loop = asyncio.get_running_loop()
        conn = self._async.get(loop)
        if conn is None or conn.closed:
            with driver_errors():
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    application_name=PROBE_NAME,  # told apart in pg_stat_activity
                )
            self._async[loop] = conn
        try:
            with driver_errors():
                await conn.execute(_PG_NOTIFY, (EVENTS_CHANNEL, SEPARATOR.join(payloads)))
        except BaseException:
            self._async.pop(loop, None)
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    def close(self) -> None:
        with self._probe_lock:
            probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                probe.close()
        conns, self._async = list(self._async.items()), {}
        for loop, conn in conns:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(conn.close(), loop)

    async def aclose(self) -> None:
        mine = self._async.pop(asyncio.get_running_loop(), None)
        if mine is not None:
            with contextlib.suppress(Exception):
                await mine.close()
        self.close()

    receives_async = True

    async def areceive(
        self, deliver: Callable[[list[str]], None], ready: Callable[[], None]
    ) -> None:
        """One ``LISTEN`` connection on the hub's loop, until cancelled or lost (raises).

        Its notifications are read straight from libpq (`_Notices`) whenever its socket is
        readable, and handed over in batches (whatever arrived within `RECEIVE_BATCH_SECONDS`
        of the first). On the loop rather than in a thread: a thread woken per batch takes
        the interpreter from the loop that serves the streams about a millisecond each
        time. Not through psycopg's ``notifies()``: it waits for each packet anew (a
        selector registration and a generator a wait), 23 % of a listener's CPU over a
        drain's 160 payloads (py-spy, `bench/observe.py`)."""
        import psycopg

        loop = asyncio.get_running_loop()
        with driver_errors():
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=RECEIVER_NAME,
            )
        notices = _Notices(conn.pgconn, conn.info.encoding, deliver, loop)
        # Any notification psycopg itself reads while LISTEN runs reaches the handler.
        conn.add_notify_handler(notices.early)
        fd = conn.pgconn.socket
        try:
            with driver_errors():
                await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            loop.add_reader(fd, notices.readable)
            try:
                ready()
                notices.readable()  # what libpq already holds
                with driver_errors():
                    await notices.lost
            finally:
                loop.remove_reader(fd)
                notices.stop()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def receive(
        self, deliver: Callable[[list[str]], None], stop: threading.Event, ready: threading.Event
    ) -> None:
        """One ``LISTEN`` connection; notifications are read in batches (whatever arrived
        within 5 ms of the first) so a busy channel costs one hand-over per batch."""
        conn = self._connect(RECEIVER_NAME)
        try:
            with driver_errors():
                conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                ready.set()
                while not stop.is_set():
                    batch = [n.payload for n in conn.notifies(timeout=0.2, stop_after=1)]
                    if not batch:
                        continue
                    batch += [n.payload for n in conn.notifies(timeout=0.005)]
                    deliver(batch)
        finally:
            with contextlib.suppress(Exception):
                conn.close()


class _Notices:
    """A ``LISTEN`` connection's notifications, read from libpq when its socket is
    readable (``consume_input``, then ``notifies`` until none is left), gathered for
    `RECEIVE_BATCH_SECONDS` from the first and delivered together on the loop.

    ``lost`` ends with the error when the connection fails (libpq cannot read: the server
    went away) or ``deliver`` raises; what was gathered before is delivered first."""

    def __init__(
        self,
        pgconn: Any,
        encoding: str,
        deliver: Callable[[list[str]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._pgconn = pgconn
        self._encoding = encoding
        self._deliver = deliver
        self._loop = loop
        self._batch: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    def early(self, notify: Any) -> None:
        """psycopg's handler, for a notification it read itself (during ``LISTEN``)."""
        self._add([notify.payload])

    def readable(self) -> None:
        if self.lost.done():
            return
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
        except Exception as exc:  # psycopg's OperationalError: the connection is gone
            self._flush()
            self._fail(exc)
            return
        found: list[str] = []
        while (notify := pgconn.notifies()) is not None:
            found.append(notify.extra.decode(self._encoding))
        self._add(found)

    def _add(self, payloads: list[str]) -> None:
        if not payloads:
            return
        self._batch += payloads
        if self._timer is None:
            self._timer = self._loop.call_later(RECEIVE_BATCH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._timer = None
        batch, self._batch = self._batch, []
        if batch and not self.lost.done():
            try:
                self._deliver(batch)
            except Exception as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self.lost.done():
            self.lost.set_exception(exc)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.lost.done():
            self.lost.cancel()
        elif not self.lost.cancelled():
            self.lost.exception()  # retrieved: the caller raised it already


def journal_path(database: Database) -> Path | None:
    """The journal file of an SQLite database (None: in memory, no other process)."""
    path = database.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(f"{path}-events")


def _journal(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")  # live events are not kept across a crash
    conn.execute(_JOURNAL_DDL)
    conn.execute(_READERS_DDL)
    return conn


class SqliteJournal(EventTransport):
    """The journal file next to an SQLite database, appended to and tailed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._inserts = 0
        self._lock = threading.Lock()

    def send(self, payloads: list[str]) -> None:
        if not payloads:
            return
        with self._lock:
            if self._conn is None:
                self._conn = _journal(self.path)
            conn = self._conn
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_JOURNAL_INSERT, [(now, p) for p in payloads])
                self._inserts += len(payloads)
                if self._inserts >= PRUNE_EVERY:
                    self._inserts = 0
                    conn.execute(_JOURNAL_PRUNE, (now - JOURNAL_KEEP_SECONDS, JOURNAL_KEEP_ROWS))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def listened(self) -> bool:
        with self._lock:
            if self._conn is None:
                self._conn = _journal(self.path)
            (count,) = self._conn.execute(_READERS_NOW, (time.time() - READER_STALE,)).fetchone()
        return bool(count)

    def receive(
        self, deliver: Callable[[list[str]], None], stop: threading.Event, ready: threading.Event
    ) -> None:
        conn = _journal(self.path)
        me = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        try:
            conn.execute(_READER_SEEN, (me, time.time()))
            (last,) = conn.execute(_JOURNAL_LAST).fetchone()
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            ready.set()
            beat = time.monotonic()
            while not stop.wait(TAIL_INTERVAL):
                if time.monotonic() - beat >= READER_BEAT:
                    beat = time.monotonic()
                    conn.execute(_READER_SEEN, (me, time.time()))  # ours: no version change
                (now_version,) = conn.execute("PRAGMA data_version").fetchone()
                if now_version == version:
                    continue
                version = now_version
                while True:
                    rows = conn.execute(_JOURNAL_TAIL, (last,)).fetchall()
                    if not rows:
                        break
                    last = rows[-1][0]
                    deliver([payload for _, payload in rows])
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(_READER_GONE, (me,))
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def for_database(database: Database) -> EventTransport:
    """The transport of ``database``'s dialect (a do-nothing one for in-memory SQLite)."""
    if database.is_postgres:
        return PostgresChannel(database)
    path = journal_path(database)
    if path is None:
        transport = EventTransport()
        transport.crosses_processes = False
        return transport
    return SqliteJournal(path)
