"""Database outages for the drills: a SQLite file locked by another writer, and a PostgreSQL
that refuses connections (a TCP relay on 127.0.0.1 in front of the real server, closed and
reopened at run time: the bot's URL points at the relay's port, which becomes a wrong port).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drills.audit import free_port


class SqliteLock:
    """Another process-like writer holding SQLite's write lock (``BEGIN EXCLUSIVE``) on the file."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.con: sqlite3.Connection | None = None

    def lock(self) -> None:
        self.con = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        self.con.execute("BEGIN EXCLUSIVE")

    def unlock(self) -> None:
        if self.con is not None:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


class TcpRelay:
    """127.0.0.1:<port> -> upstream; ``down()`` closes the listener and every relayed connection,
    so the port refuses connections (as a wrong port does) until ``up()``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            with contextlib.suppress(OSError):
                ls.shutdown(socket.SHUT_RDWR)
            ls.close()
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def pg_admin(pg_url: str, sql: str) -> None:
    """Run one statement on the PostgreSQL server of ``pg_url`` (autocommit, e.g. CREATE DATABASE)."""
    import asyncpg

    u = urlsplit(pg_url.replace("postgresql+asyncpg://", "postgresql://"))

    async def go() -> None:
        con = await asyncpg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                                    database=u.path.lstrip("/") or "postgres", timeout=5)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(go())


def pg_fill_rows(pg_url: str, database: str) -> list[tuple[Any, ...]]:
    """The audit's fill rows from a PostgreSQL store (money columns are exact NUMERIC there)."""
    import asyncpg

    u = urlsplit(pg_url.replace("postgresql+asyncpg://", "postgresql://"))

    async def go() -> list[tuple[Any, ...]]:
        con = await asyncpg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                                    database=database, timeout=5)
        try:
            rows = await con.fetch("SELECT trade_id, side, amount, fee, fee_currency, position_after FROM fills "
                                   "WHERE symbol = 'BTC/USDT' ORDER BY id")
            return [tuple(r) for r in rows]
        finally:
            await con.close()

    return asyncio.run(go())


def pg_text_dump(pg_url: str, database: str) -> str:
    """Every value of every text-like column of every table in ``public``, one line per row.

    The PostgreSQL side of the secret search (SQLite has ``iterdump``): what a person reviewing
    trades in psql can see.
    """
    import asyncpg

    u = urlsplit(pg_url.replace("postgresql+asyncpg://", "postgresql://"))

    async def go() -> str:
        con = await asyncpg.connect(host=u.hostname, port=u.port or 5432, user=u.username or "postgres",
                                    database=database, timeout=5)
        try:
            cols = await con.fetch(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb') "
                "ORDER BY table_name, ordinal_position")
            tables: dict[str, list[str]] = {}
            for r in cols:
                tables.setdefault(r["table_name"], []).append(r["column_name"])
            out: list[str] = []
            for table, names in tables.items():
                sel = ", ".join(f'"{n}"::text' for n in names)
                for row in await con.fetch(f'SELECT {sel} FROM "{table}"'):
                    out.append(f"{table}: " + " | ".join("" if v is None else str(v) for v in row))
            return "\n".join(out)
        finally:
            await con.close()

    return asyncio.run(go())
