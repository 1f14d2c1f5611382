"""What every test against the local PostgreSQL shares: where it is, whether it must be there,
and throw-away schemas.

``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is the
server. When it cannot be reached the tests skip, naming the URL and why — or fail, when
``ERPOZ_TEST_POSTGRES=required`` (what a CI run that wants PostgreSQL sets). Each test gets a
schema of its own (``schema`` fixture, or :func:`throwaway_schema`), dropped afterwards.

Tests never restart or reconfigure that shared server: one that must restart or crash a
PostgreSQL server starts its own (:func:`private_cluster`: ``initdb`` in a temp folder).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

URL = os.environ.get("ERPOZ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("ERPOZ_TEST_POSTGRES", "").lower() == "required"


@functools.cache
def why_not() -> str | None:
    """``None`` when the server answers, else why not (psycopg missing, unreachable …)."""
    try:
        import psycopg
    except ImportError as exc:
        if REQUIRED:
            raise  # a run that requires PostgreSQL fails loudly without psycopg
        return f"psycopg is not installed ({exc}; pip install 'erpoz[postgres]')"
    try:
        with psycopg.connect(URL, connect_timeout=3) as db:
            db.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def need_postgres() -> None:
    """Skip the test when PostgreSQL is not there — fail it when it is required."""
    reason = why_not()
    if reason is None:
        return
    msg = f"PostgreSQL at {URL} is unreachable ({reason})"
    if REQUIRED:
        pytest.fail(f"{msg}, and ERPOZ_TEST_POSTGRES=required", pytrace=False)
    pytest.skip(f"{msg}; set ERPOZ_TEST_POSTGRES_URL, or ERPOZ_TEST_POSTGRES=required to fail")


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose sessions use ``schema``."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@dataclass
class Schema:
    name: str
    url: str

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in this schema on a fresh connection (autocommit)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cur = db.execute(query, args)
            return cur.fetchall() if cur.description else []

    def tables(self) -> set[str]:
        return {
            r[0]
            for r in self.sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (self.name,),
            )
        }


@contextmanager
def throwaway_schema(prefix: str = "erpoz_test") -> Iterator[Schema]:
    """A new schema of its own, dropped afterwards (waiting for a server that restarts)."""
    import psycopg

    need_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield Schema(name, with_search_path(URL, name))
    finally:
        for _ in range(100):
            try:
                with psycopg.connect(URL, autocommit=True) as db:
                    db.execute(f'DROP SCHEMA "{name}" CASCADE')
                break
            except psycopg.OperationalError:
                time.sleep(0.2)


@pytest.fixture
def schema() -> Iterator[Schema]:
    """A throw-away schema, dropped after the test (import this fixture into a test module)."""
    with throwaway_schema() as s:
        yield s


# --- a private PostgreSQL server, for tests that must restart or crash one --------------------
def _pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian keeps them per version
    under /usr/lib/postgresql/N/bin)."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL server of a test's own: its data directory in a temp folder, on a free
    port of 127.0.0.1; restarting or killing it touches nothing else on the machine."""

    bindir: Path
    root: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 120) -> None:
        cmd = [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr}\n{log}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=60"
        )
        self.pg_ctl("-w", "-l", str(self.root / "server.log"), "-o", options, "start")

    def restart(self) -> None:
        """Stop the server (fast: sessions are cut) and start it again."""
        self.pg_ctl("-w", "-m", "fast", "stop")
        self.start()

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """Start a throw-away PostgreSQL server (``initdb`` in a temp folder, ``pg_ctl`` on a free
    port); stopped and deleted afterwards. Skips when the server binaries are not installed
    (fails when ``ERPOZ_TEST_POSTGRES=required``). As root, the server runs as ``postgres``."""
    bindir = _pg_bindir()
    if bindir is None:
        msg = "a private PostgreSQL server needs initdb and pg_ctl (postgresql server package)"
        if REQUIRED:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    root = Path(tempfile.mkdtemp(prefix="erpoz-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(bindir, root, _free_port(), run_as)
    try:
        init = subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr}")
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
