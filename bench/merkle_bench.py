"""``python -m bench.merkle_bench``: what the Merkle tree costs and what its proofs cost.

**Per commit** (``--commits``, ``--reps``): a writer records a step as a step does (two events,
``step_started`` and ``step_succeeded``, then a flush: one commit), on SQLite (``sync``
durability) and on PostgreSQL (``$ERPOZ_BENCH_POSTGRES_URL``, default the local test server;
skipped when unreachable), **with** the tree and **without** it, interleaved, medians of µs per
commit. Without it means: SQLite, a store whose commit leaves out its one call into the tree;
PostgreSQL, the same statement with ``erpoz_merkle_append`` replaced by a function that does
nothing (so the leaves erpoz hashes in Python, ~1 µs an event, count as "without").

**Proofs** (``--sizes``): SQLite stores of 10⁴, 10⁵ and 10⁶ events (runs of 100 events); for
each, the median time to read the tree's head and sign a checkpoint, to make and to check an
inclusion proof (a random leaf) and a consistency proof (from a random older size), their sizes,
and the time and size of a proof bundle of one 100-event run (``erpoz audit prove``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from erpoz.audit._proofs import (
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from erpoz.audit.bundle import prove
from erpoz.audit.checkpoints import generate_key, sign_checkpoint
from erpoz.store import NewRun, SQLiteStore, Store

PG_URL = os.environ.get("ERPOZ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
OWNER = f"bench:{os.getpid()}:merkle"


class _NoTree(SQLiteStore):
    """The SQLite store without the tree: what a commit cost before it."""

    def _append_tree(self, rows: list[tuple[Any, ...]]) -> None:
        return None


def _new_run(i: int) -> NewRun:
    return NewRun(f"run-{i:07d}-{uuid.uuid4().hex[:6]}", "bench", "f" * 16, '{"x":1}')


async def _commits(store: Store, n: int) -> float:
    """µs per commit of ``n`` step-like commits (two events each) on one run."""
    w = await store.create_run(_new_run(0), OWNER)
    t0 = time.perf_counter_ns()
    for i in range(n):
        w.append("step_started", f"s{i}", 1)
        w.append("step_succeeded", f"s{i}", 1, {"ms": 0.1}, '"ok"')
        await w.flush()
    elapsed = time.perf_counter_ns() - t0
    await w.release()
    return elapsed / n / 1000


async def per_commit(commits: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, Store] = {
            "sqlite, with the tree": SQLiteStore(Path(tmp) / "with.db"),
            "sqlite, without": _NoTree(Path(tmp) / "without.db"),
        }
        schemas = await _pg_stores(stores)
        try:
            for s in stores.values():  # warm up
                await _commits(s, min(200, commits))
            for _ in range(reps):
                for name, s in stores.items():
                    out.setdefault(name, []).append(await _commits(s, commits))
        finally:
            for s in stores.values():
                await s.close()
            _drop(schemas)
    return out


async def _pg_stores(stores: dict[str, Store]) -> list[str]:
    try:
        import psycopg

        from erpoz.store import PostgresStore

        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as db:
            names = [f"erpoz_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
            for n in names:
                db.execute(f'CREATE SCHEMA "{n}"')
    except Exception as exc:  # any reason PostgreSQL is not there
        print(f"(PostgreSQL at {PG_URL} skipped: {exc})")
        return []
    with_tree = PostgresStore(PG_URL, schema=names[0])
    without = PostgresStore(PG_URL, schema=names[1])
    with psycopg.connect(PG_URL, autocommit=True) as db:
        db.execute(f'SET search_path TO "{names[1]}"')
        db.execute(
            "CREATE OR REPLACE FUNCTION erpoz_merkle_append(run_ids TEXT[], seqs BIGINT[], "
            "leaves BYTEA[]) RETURNS BIGINT LANGUAGE sql AS 'SELECT NULL::bigint'"
        )
    stores["postgres, with the tree"] = with_tree
    stores["postgres, without"] = without
    return names


def _drop(schemas: list[str]) -> None:
    if not schemas:
        return
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as db:
        for n in schemas:
            db.execute(f'DROP SCHEMA "{n}" CASCADE')


# --- proofs --------------------------------------------------------------------------------------
async def _fill(store: SQLiteStore, events: int, per_run: int = 100) -> list[str]:
    ids = []
    for i in range(events // per_run):
        run = _new_run(i)
        ids.append(run.run_id)
        w = await store.create_run(run, OWNER)
        for k in range(per_run - 2):
            w.append("note", f"s{k}", 0, {"k": k, "text": "a line of a step's record"})
        w.append("run_succeeded", payload='"done"')
        await w.release()
    return ids


async def _median_ms(fn: Callable[[], Awaitable[Any]], n: int) -> tuple[float, Any]:
    times, last = [], None
    for _ in range(n):
        t0 = time.perf_counter_ns()
        last = await fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times), last


async def proofs(size: int, samples: int) -> dict[str, Any]:
    rng = random.Random(size)
    key = generate_key()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "p.db", durability="batch")
        t0 = time.perf_counter()
        ids = await _fill(store, size)
        built = time.perf_counter() - t0
        head = await store.tree_head()
        n = head.size
        root = head.root
        sign_ms, cp = await _median_ms(lambda: sign_checkpoint(store, key), samples)

        leaves = [leaf[3] for leaf in sorted(await store.tree_leaves(ids[len(ids) // 2]))]
        first = (await store.tree_leaves(ids[len(ids) // 2]))[0][2]
        inc_times, inc_check, inc_len = [], [], []
        for _ in range(samples):
            i = rng.randrange(n)
            t = time.perf_counter_ns()
            path = await inclusion_proof(store, i, n)
            inc_times.append((time.perf_counter_ns() - t) / 1e6)
            leaf = (await store.tree_hashes(0, i, i + 1))[0]
            t = time.perf_counter_ns()
            assert verify_inclusion(i, n, leaf, path, root)
            inc_check.append((time.perf_counter_ns() - t) / 1e3)
            inc_len.append(len(path))
        con_times, con_check, con_len = [], [], []
        for _ in range(samples):
            m = rng.randrange(1, n)
            t = time.perf_counter_ns()
            path = await consistency_proof(store, m, n)
            con_times.append((time.perf_counter_ns() - t) / 1e6)
            old = await _root_at(store, m)
            t = time.perf_counter_ns()
            assert verify_consistency(m, n, old, root, path)
            con_check.append((time.perf_counter_ns() - t) / 1e3)
            con_len.append(len(path))
        bundle_ms, bundle = await _median_ms(lambda: prove(store, ids[len(ids) // 2], cp), 5)
        import json

        bundle_bytes = len(json.dumps(bundle, indent=1))
        proof_bytes = sum(len(e["inclusion"]) * 32 for e in bundle["events"])
        await store.close()
    assert leaves and first >= 0
    return {
        "events": n,
        "built_s": built,
        "checkpoint_ms": sign_ms,
        "inclusion_ms": statistics.median(inc_times),
        "inclusion_check_us": statistics.median(inc_check),
        "inclusion_hashes": statistics.median(inc_len),
        "consistency_ms": statistics.median(con_times),
        "consistency_check_us": statistics.median(con_check),
        "consistency_hashes": statistics.median(con_len),
        "bundle_ms": bundle_ms,
        "bundle_kb": bundle_bytes / 1024,
        "bundle_proof_kb": proof_bytes / 1024,
    }


async def _root_at(store: SQLiteStore, m: int) -> bytes:
    from erpoz.audit._proofs import subtree_hash

    return await subtree_hash(store, 0, m)


async def main(commits: int, reps: int, sizes: list[int], samples: int) -> None:
    load0 = os.getloadavg()
    commit = await per_commit(commits, reps)
    load1 = os.getloadavg()
    print(
        f"per commit (2 events), {commits} commits × {reps} interleaved rounds, medians; "
        f"load average {load0[0]:.2f} → {load1[0]:.2f}; {os.cpu_count()} CPUs"
    )
    print(f"{'store':<26}{'µs/commit':>10}{'tree adds':>11}")
    for name, values in commit.items():
        med = statistics.median(values)
        base = commit.get(name.replace("with the tree", "without"))
        extra = ""
        if base is not None and "with the tree" in name:
            d = med - statistics.median(base)
            extra = f"{d:+.1f} µs ({d / statistics.median(base) * 100:+.0f}%)"
        print(f"{name:<26}{med:>10.1f}  {extra}")
    print()
    print(
        f"{'events':>10}{'sign ckpt ms':>13}{'incl. ms':>10}{'check µs':>9}{'hashes':>7}"
        f"{'cons. ms':>10}{'check µs':>9}{'hashes':>7}{'bundle ms':>10}{'bundle KB':>10}"
        f"{'proofs KB':>10}"
    )
    for size in sizes:
        r = await proofs(size, samples)
        print(
            f"{r['events']:>10,}{r['checkpoint_ms']:>13.2f}{r['inclusion_ms']:>10.2f}"
            f"{r['inclusion_check_us']:>9.0f}{r['inclusion_hashes']:>7.0f}"
            f"{r['consistency_ms']:>10.2f}{r['consistency_check_us']:>9.0f}"
            f"{r['consistency_hashes']:>7.0f}{r['bundle_ms']:>10.1f}{r['bundle_kb']:>10.1f}"
            f"{r['bundle_proof_kb']:>10.1f}"
        )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--samples", type=int, default=50)
    a = ap.parse_args()
    asyncio.run(main(a.commits, a.reps, a.sizes, a.samples))
