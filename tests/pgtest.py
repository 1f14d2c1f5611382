"""What every test against the local PostgreSQL shares: where it is, whether it must be there,
and throw-away schemas.

``$ERPOZ_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is the
server. When it cannot be reached the tests skip, naming the URL and why — or fail, when
``ERPOZ_TEST_POSTGRES=required`` (what a CI run that wants PostgreSQL sets). Each test gets a
schema of its own (``schema`` fixture, or :func:`throwaway_schema`), dropped afterwards.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
