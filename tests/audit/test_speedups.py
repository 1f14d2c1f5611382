"""The C extension ``erpoz.speedups._speedups`` computes exactly what the pure-Python code
computes: the
same chain hashes (Python's ``repr`` of the event's time included), leaves, tree nodes, the
same first bad event and the same problems, on random events and on random damage to them.
(The tamper suite, tests/audit/test_tamper.py, compares the two on whole stores.)"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from erpoz import speedups as ext
from erpoz.audit import _verify as v
from erpoz.store import GENESIS, chain_hash, leaf_hash

if not ext.available():
    pytest.skip(
        "the C extension erpoz.speedups._speedups is not built here", allow_module_level=True
    )

from erpoz.speedups import _speedups  # built: the skip above did not happen

T = TypeVar("T")


@contextmanager
def in_c(on: bool) -> Iterator[None]:
    was = ext.use(on)
    try:
        yield
    finally:
        ext.use(was)


def both(fn: Callable[[], T]) -> tuple[T | str, T | str]:
    """``fn()`` with the extension, then with the pure-Python code (what it raised, if it
    raised: the two raise the same errors)."""
    out: list[T | str] = []
    for on in (True, False):
        with in_c(on):
            try:
                out.append(fn())
            except (TypeError, ValueError) as exc:
                out.append(f"raised {type(exc).__name__}")
    return out[0], out[1]


def random_float(rnd: random.Random) -> float:
    k = rnd.randrange(11)
    if k == 8:  # the C code's own repr covers [1, 2**53): its edges, halves, powers of two
        return float(rnd.randrange(1, 2**53)) + rnd.choice([0, 0.5, 0.25, 0.125, 0.75])
    if k == 9:
        return math.nextafter(2.0 ** rnd.randrange(0, 54), rnd.choice([0, math.inf]))
    if k == 10:
        return rnd.uniform(1, 10) * 10 ** rnd.randrange(0, 17) * rnd.choice([1, -1])
    if k == 0:  # whole numbers: repr adds ".0"
        return float(rnd.randrange(-(10**17), 10**17))
    if k == 1:  # any bit pattern: subnormals, huge, tiny, nan payloads, infinities
        return float(struct.unpack("<d", rnd.randbytes(8))[0])
    if k == 2:  # event times
        return rnd.uniform(1.6e9, 1.9e9)
    if k == 3:
        return rnd.random() * 10.0 ** rnd.randrange(-330, 309)
    if k == 4:
        return -rnd.random() * 10.0 ** rnd.randrange(-20, 20)
    if k == 5:  # where repr switches to exponents
        return rnd.choice([1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5, 0.0001, 0.00001])
    if k == 6:
        return round(rnd.uniform(-1e6, 1e6), rnd.randrange(0, 8))
    return rnd.choice(
        [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
         1.7976931348623157e308, 0.1, 1 / 3, 123456789012345678.0, 1e22, 1e23]
    )  # fmt: skip


TEXTS = ["", "x", "step-1", "é", "日本語", "emoji 🎉", '{"a":1,"b":"ü"}', "a\x1fb", "0" * 2000]


def random_text(rnd: random.Random) -> str:
    return rnd.choice(TEXTS) + "".join(rnd.choice("abc ü\n") for _ in range(rnd.randrange(40)))


def random_rows(rnd: random.Random, runs: int) -> list[tuple[Any, ...]]:
    """Valid chains (hashed by the pure-Python code) of ``runs`` runs, ordered by run."""
    rows: list[tuple[Any, ...]] = []
    with in_c(False):
        for r in range(runs):
            run_id = f"run-{r:03d}-{random_text(rnd)[:8]}"
            prev = GENESIS
            for seq in range(1, rnd.randrange(2, 12)):
                ts = random_float(rnd)
                kind = rnd.choice(["run_started", "step_succeeded", "run_succeeded"])
                step = rnd.choice([None, "", "parse", "ü-step"])
                attempt = rnd.randrange(0, 3)
                data = random_text(rnd)
                payload = rnd.choice([None, "", random_text(rnd)])
                h = chain_hash(prev, run_id, seq, ts, kind, step, attempt, data, payload)
                rows.append((run_id, seq, ts, kind, step, attempt, data, payload, prev, h))
                prev = h
    return rows


def damaged(rnd: random.Random, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One or two random changes: a field, a sequence number, a link, a hash, a row moved or
    removed."""
    out = list(rows)
    for _ in range(rnd.randrange(1, 3)):
        i = rnd.randrange(len(out))
        row = list(out[i])
        what = rnd.randrange(7)
        if what == 0:
            row[rnd.choice([2, 3, 4, 5, 6, 7])] = rnd.choice([random_float(rnd), "", None, 1])
        elif what == 1:
            row[1] = row[1] + rnd.choice([-1, 1, 2])
        elif what == 2:
            row[8] = rnd.choice([GENESIS, "f" * 64, out[i - 1][9]])
        elif what == 3:
            row[9] = rnd.choice(["0" * 64, row[9].upper(), row[9][:63], None])
        elif what == 4 and len(out) > 1:
            j = rnd.randrange(len(out))
            out[i], out[j] = out[j], out[i]
            continue
        elif what == 5 and len(out) > 1:
            del out[i]
            continue
        out[i] = tuple(row)
    return out


def python_scan(rows: list[tuple[Any, ...]]) -> tuple[bool, list[bytes], list[v._Run]]:
    return v._chains_ok(rows, v._recompute(rows), v._by_run(rows)), v._leaves(rows), v._by_run(rows)


def test_sha256_both_implementations_agree_with_hashlib() -> None:
    rnd = random.Random(14)
    for n in [*range(0, 260), 1000, 4096, 65_537]:
        data = rnd.randbytes(n)
        want = hashlib.sha256(data).digest()
        assert _speedups.sha256(data) == want, n
        assert _speedups.sha256(data, True) == want, n  # the portable one, on any CPU


def test_chain_hash_and_leaf_are_the_pure_python_ones_on_random_events() -> None:
    rnd = random.Random(1)
    for i in range(40_000):
        ts = random_float(rnd)
        args = (
            rnd.choice([GENESIS, "ab" * 32]),
            random_text(rnd),
            rnd.choice([1, i, 2**40, 2**70]),
            ts,
            rnd.choice(["run_started", "é"]),
            rnd.choice([None, "", random_text(rnd)]),
            rnd.randrange(4),
            random_text(rnd),
            rnd.choice([None, "", random_text(rnd)]),
        )
        c, py = both(lambda a=args: chain_hash(*a))  # type: ignore[misc]
        assert c == py, (repr(ts), args)
        c_leaf, py_leaf = both(lambda a=args, h=c: leaf_hash(a[1], a[2], str(h)))  # type: ignore[misc]
        assert c_leaf == py_leaf


def test_bad_values_raise_the_same_errors() -> None:
    ok = (GENESIS, "r", 1, 1.5, "k", None, 0, "{}", None)
    for i, bad in [(7, 5), (4, None), (5, 3), (8, b"x"), (1, "\ud800")]:
        args = list(ok)
        args[i] = bad
        errors = []
        for on in (True, False):
            with in_c(on), pytest.raises((TypeError, UnicodeEncodeError)) as exc:
                chain_hash(*args)
            errors.append(type(exc.value))
        assert errors[0] is errors[1], (i, bad)


def test_scan_finds_the_first_bad_event_the_python_checks_find() -> None:
    rnd = random.Random(7)
    for trial in range(400):
        rows = random_rows(rnd, rnd.randrange(1, 6))
        if trial % 4:
            rows = damaged(rnd, rows)
        with in_c(False):
            ok, leaves, runs = python_scan(rows)
        bad, c_leaves, c_runs = _speedups.scan(rows, GENESIS, True)
        assert (bad < 0) == ok
        assert c_leaves == leaves and c_runs == runs
        if bad >= 0:  # everything before it checks out, and it does not
            with in_c(False):
                assert bad == 0 or python_scan(rows[:bad])[0]
                assert not python_scan(rows[: bad + 1])[0]


def test_check_shard_names_the_same_problems() -> None:
    rnd = random.Random(3)
    for _ in range(200):
        rows = damaged(rnd, random_rows(rnd, rnd.randrange(1, 6)))
        recorded = {r[0]: (r[0], "flow", r[1], r[9], "running") for r in rows}  # last wins

        def shard(rows: list[tuple[Any, ...]] = rows, recorded: Any = recorded) -> Any:
            s = v.check_shard(rows, None, recorded, 0)  # type: ignore[arg-type]
            assert s is not None
            return s.runs, s.events, s.problems, s.seen

        c, py = both(shard)
        assert c == py


def test_tree_levels_are_the_pure_python_ones() -> None:
    rnd = random.Random(5)
    for n in [*range(0, 40), 1000, 1023, 1025]:
        leaves = [rnd.randbytes(32) for _ in range(n)]
        c, py = both(lambda leaves=leaves: v._levels(leaves))  # type: ignore[misc]
        assert c == py
