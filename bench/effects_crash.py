"""The effects crash test: workers (``erpoz worker``) killed with SIGKILL at moments picked from
the store, while they drain runs that call side-effecting tools and a model.

For each store and durability (SQLite ``sync``, ``batch`` and ``effects``, PostgreSQL ``sync``
and ``effects``), ``runs`` runs of
``bench/effects_flow.py`` are submitted and two workers (four runs at a time each) drain them.
A killer watches the store and SIGKILLs the worker that owns a run when either

- the run's last event on record is a tool call's intent (the tool is under way), or
- the run, picked at random, has recorded 1 to 15 events more than when it was picked (anywhere
  in a step: between a model's reply and the tool calls, between a step's success and the
  next …),

alternately, until ``kills`` kills are done; a new worker replaces each killed one. Nothing is
timed by sleeps: the killer polls the store, the workers go at their own pace.

Then it counts, from the store, the outside ledger and the model server's request log:

- lost runs (not succeeded with the right output) and step successes recorded twice: must be 0;
- ``pay`` (honours its key): effects applied twice or never: must be 0;
- ``notify`` (does not): calls repeated after a kill (each with the same key), measured;
- every call a tool received was journaled first (an intent on record) and none came after its
  result was on record: must hold;
- model requests asked again, and of those any asked after their reply was on record: must be 0.

``python -m bench.effects_crash --runs 1000 --kills 500`` runs the long version and prints a
table (the suite runs 100 runs and 50 kills per store: ``tests/engine/test_effects_crash.py``).
Workers are forked from a server process that has erpoz imported already
(``multiprocessing``'s forkserver), so that a replacement starts in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import erpoz.cli  # noqa: F401  (imported here so that forked workers start with it loaded)
from bench.effects_flow import LEDGER_SCHEMA, STAGES
from bench.effects_flow import flow as crash_flow

REPO = Path(__file__).resolve().parents[1]
MODES = ("sqlite-sync", "sqlite-batch", "sqlite-effects", "postgres", "postgres-effects")
WORKERS = 2
CONCURRENCY = 4


@dataclass
class CrashReport:
    mode: str
    runs: int
    kills: int = 0
    kills_in_tool: int = 0  # kills while a tool call's intent was on record without its result
    seconds: float = 0.0
    lost_runs: int = 0
    duplicate_successes: int = 0
    pay_calls: int = 0
    pay_repeats: int = 0  # calls received again (same key): harmless, the ledger dedupes
    pay_duplicate_effects: int = 0
    pay_missing_effects: int = 0
    notify_calls: int = 0
    notify_repeats: int = 0  # messages sent twice: the tool ignores its key
    key_changes: int = 0  # logical calls that reached a tool under more than one key
    unjournaled_calls: int = 0  # calls received beyond the intents on record
    calls_after_result: int = 0  # calls received after their result was on record
    model_requests: int = 0
    model_repeats: int = 0  # prompts asked again (in flight at a kill, or reply not durable)
    model_repeats_after_reply: int = 0  # asked again though the reply was on record
    resumed_runs: int = 0  # runs claimed more than once (a kill hit them)
    chains_verified: bool = False
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """What must not happen, as sentences (empty: the guarantees held)."""
        checks = {
            "lost runs": self.lost_runs,
            "step successes recorded twice": self.duplicate_successes,
            "pay effects applied twice": self.pay_duplicate_effects,
            "pay effects missing": self.pay_missing_effects,
            "logical calls under more than one key": self.key_changes,
            "tool calls received without an intent on record": self.unjournaled_calls,
            "tool calls received after their result was on record": self.calls_after_result,
            "model requests asked after their reply was on record": (
                self.model_repeats_after_reply
            ),
        }
        out = [f"{n} {what}" for what, n in checks.items() if n]
        if not self.chains_verified:
            out.append("the hash chains do not verify")
        return out + self.notes


# --- the store, as the killer and the counting read it -------------------------------------------
class _Reader:
    """Read-only queries on the store, from outside the workers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        if url.startswith("postgresql://"):
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True)

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        if self._pg is not None:
            return list(self._pg.execute(sql.replace("?", "%s"), args).fetchall())
        # one read-only connection for the whole test (the killer reads every few ms: a
        # connection per query cost it more CPU than the reads); autocommit, so that no read
        # transaction stays open between queries
        try:
            if self._sqlite is None:
                self._sqlite = sqlite3.connect(
                    f"file:{self.url}?mode=ro", uri=True, timeout=5, isolation_level=None
                )
            return self._sqlite.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet, or busy

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    def succeeded(self) -> int:
        rows = self.rows("SELECT count(*) FROM runs WHERE status = 'succeeded'")
        return int(rows[0][0]) if rows else 0

    def running(self) -> list[str]:
        """The runs a worker holds now."""
        rows = self.rows("SELECT run_id FROM runs WHERE status = 'running' AND owner IS NOT NULL")
        return [str(r[0]) for r in rows]

    def recorded(self, run_id: str) -> int:
        """How many events the run has on record."""
        rows = self.rows("SELECT count(*) FROM events WHERE run_id = ?", (run_id,))
        return int(rows[0][0]) if rows else 0

    def tool_in_flight(self, runs: list[str]) -> str | None:
        """One of ``runs`` whose last event on record is a tool call's intent: the tool is
        under way (or about to be called), its result not on record."""
        for run_id in runs:
            last = self.rows(
                "SELECT kind FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            )
            if last and last[0][0] == "tool_intent":
                return run_id
        return None

    def owner_pid(self, run_id: str) -> int | None:
        rows = self.rows("SELECT owner FROM runs WHERE run_id = ?", (run_id,))
        owner = rows[0][0] if rows else None
        if not owner:
            return None
        pid = owner.split(":")[1]
        return int(pid) if pid.isdigit() else None


# --- workers, forked ready to go -----------------------------------------------------------------
def _cli_child(argv: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """Run ``erpoz ARGV`` in this (forked) process, its output to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(cwd)
    os.environ.update(env)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from erpoz.cli import app

    code: Any = 0
    try:
        app(argv, prog_name="erpoz")
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


_PRELOAD = [
    # what `erpoz worker` imports before it takes a run: a replacement starts without it
    "erpoz.cli",
    "erpoz.cli.worker",
    "erpoz.project",
    "erpoz.guards",
    "erpoz.engine",
    "erpoz.models.openai_compat",
    "erpoz.store._postgres",
    "bench.effects_flow",
    "httpx",
    "psycopg",
]


def _forkserver() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class _Workers:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self._ctx = _forkserver()
        self._argv, self._cwd, self._env = argv, cwd, env
        self.live: list[Any] = []
        self.started = 0

    def start(self) -> None:
        log = str(self._cwd / f"worker-{self.started}.log")
        p = self._ctx.Process(
            target=_cli_child, args=(self._argv, str(self._cwd), self._env, log), daemon=False
        )
        p.start()
        self.started += 1
        self.live.append(p)

    def kill(self, pid: int | None) -> bool:
        """SIGKILL the worker with ``pid`` (any live one when ``None``); reap it."""
        victims = [p for p in self.live if p.pid == pid] if pid is not None else self.live[:1]
        if not victims:
            return False
        p = victims[0]
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        self.live.remove(p)
        return True

    def reap(self) -> None:
        for p in [p for p in self.live if not p.is_alive()]:
            p.join()
            self.live.remove(p)

    def stop(self) -> None:
        for p in self.live:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in self.live:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        self.live = []


# --- one crash test ------------------------------------------------------------------------------
@contextmanager
def _store_url(mode: str, tmp: Path) -> Iterator[str]:
    if not mode.startswith("postgres"):
        yield str(tmp / "runs.db")
        return
    sys.path.insert(0, str(REPO / "tests"))
    from pgtest import throwaway_schema

    with throwaway_schema("erpoz_crash") as schema:
        yield schema.url


def _project(tmp: Path, model_url: str) -> None:
    (tmp / "erpoz.yaml").write_text(
        "models:\n"
        "  stub:\n"
        "    provider: openai\n"
        f"    params: {{base_url: '{model_url}', api_key: '', model: stub, max_retries: 0}}\n"
        "tools: ['bench.effects_flow:pay', 'bench.effects_flow:notify']\n"
        "policy:\n"
        "  rules:\n"
        "    - {name: the crash test calls its tools, tool: '*', action: allow}\n",
        encoding="utf-8",
    )


async def _submit(url: str, runs: int, first: int = 0) -> list[str]:
    """Submit runs with inputs ``first``, ``first + 1`` …: run ``i`` ends with ``i + 3``."""
    from erpoz import Engine, open_store

    store = open_store(url)
    try:
        engine = Engine(store)
        return [await engine.submit(crash_flow, {"x": i}) for i in range(first, first + runs)]
    finally:
        await store.close()


def crash_test(
    mode: str,
    runs: int,
    kills: int,
    *,
    tmp: Path,
    seed: int = 13,
    progress: Callable[[str], None] | None = None,
) -> CrashReport:
    """Submit ``runs`` runs, kill ``kills`` workers at moments picked from the store while they
    drain them, and count what happened (see the module)."""
    from erpoz.testing import OpenAIStubServer

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    rng = random.Random(seed)
    report = CrashReport(mode, runs)
    ledger = tmp / "ledger.db"
    db = sqlite3.connect(ledger)  # rollback journal, not WAL: see bench/effects_flow.py
    for statement in LEDGER_SCHEMA:
        db.execute(statement)
    db.close()
    with OpenAIStubServer() as model, _store_url(mode, tmp) as url:
        _project(tmp, model.base_url)
        ids = asyncio.run(_submit(url, runs))
        durability = mode.partition("-")[2] or "sync"
        argv = ["worker", "--store", url, "--durability", durability, "-n", str(CONCURRENCY)]
        argv += ["--lease", "5", "--poll", "0.05", "--max-claims", "100000", "--quiet"]
        env = {
            "EFFECTS_LEDGER": str(ledger),
            "EFFECTS_TOOL_S": "0.005",
            "NO_COLOR": "1",
            "PYTHONPATH": str(REPO),
        }
        workers = _Workers(argv, tmp, env)
        reader = _Reader(url)
        t0 = time.perf_counter()
        try:
            for _ in range(WORKERS):
                workers.start()
            _drain(reader, workers, report, ids, kills, rng, progress, url)
        finally:
            workers.stop()
            report.seconds = time.perf_counter() - t0
        try:
            _count(report, reader, ids, ledger, model.requests_to("chat"))
        finally:
            reader.close()
        report.chains_verified = asyncio.run(_verify(url, len(ids)))
    return report


def _drain(
    reader: _Reader,
    workers: _Workers,
    report: CrashReport,
    ids: list[str],
    kills: int,
    rng: random.Random,
    progress: Callable[[str], None] | None,
    url: str,
) -> None:
    """Kill until ``kills`` are done, and wait until every run succeeded. Kills alternate:
    when a run's last event is a tool call's intent, and when a run picked at random has
    recorded a number of events more (1 to 15, at random) than when it was picked. Should the
    runs be done before the kills, a few more are submitted (``ids`` grows)."""
    deadline = time.monotonic() + max(180.0, (len(ids) + kills) * 1.5)
    in_tool = False
    watched: tuple[str, int] | None = None  # the run picked, and the events it must reach
    while True:
        succeeded = reader.succeeded()
        if succeeded >= len(ids):
            if report.kills >= kills:
                break
            ids += asyncio.run(_submit(url, 10, first=len(ids)))
            report.runs = len(ids)
        if time.monotonic() > deadline:
            report.notes.append(f"only {succeeded} of {len(ids)} runs succeeded in time")
            break
        workers.reap()
        while len(workers.live) < WORKERS:
            workers.start()
        if report.kills >= kills:
            time.sleep(0.05)
            continue
        running = reader.running()
        target: str | None = None
        if in_tool:
            target = reader.tool_in_flight(rng.sample(running, len(running)))
        elif watched is None or watched[0] not in running:
            watched = None
            if running:
                run_id = rng.choice(running)
                watched = (run_id, reader.recorded(run_id) + rng.randint(1, 15))
        elif reader.recorded(watched[0]) >= watched[1]:
            target, watched = watched[0], None
        if target is None:
            time.sleep(0.002)
            continue
        if workers.kill(reader.owner_pid(target)):
            report.kills += 1
            report.kills_in_tool += int(in_tool)
            in_tool = not in_tool
            workers.start()
            if progress is not None and report.kills % 10 == 0:
                progress(f"{report.mode}: {report.kills} kills, {succeeded}/{len(ids)} runs done")


def _count(
    report: CrashReport, reader: _Reader, ids: list[str], ledger: Path, requests: list[Any]
) -> None:
    rows = reader.rows("SELECT run_id, status, output, claims FROM runs")
    by_id = {r[0]: r for r in rows}
    for i, run_id in enumerate(ids):
        row = by_id.get(run_id)
        if row is None or row[1] != "succeeded" or json.loads(row[2] or "null") != i + STAGES:
            report.lost_runs += 1
        elif row[3] > 1:
            report.resumed_runs += 1
    events = reader.rows(
        "SELECT run_id, seq, ts, kind, step, data FROM events ORDER BY run_id, seq"
    )
    successes = Counter((e[0], e[4]) for e in events if e[3] == "step_succeeded")
    report.duplicate_successes = sum(n - 1 for n in successes.values())
    intents: Counter[str] = Counter()
    result_at: dict[str, float] = {}
    replied: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for run_id, _seq, ts, kind, step, data in events:
        d = json.loads(data)
        key = d.get("idempotency_key")
        if kind == "tool_intent":
            intents[key] += 1
        elif kind == "tool_called" and d.get("status") == "ok":
            result_at.setdefault(key, ts)
        elif kind == "model_replied":
            seen = replied[(run_id, step)]
            if key not in [k for k, _ in seen]:
                seen.append((key, ts))
    _count_tools(report, ledger, ids, intents, result_at)
    _count_models(report, requests, replied)


def _count_tools(
    report: CrashReport,
    ledger: Path,
    ids: list[str],
    intents: Counter[str],
    result_at: dict[str, float],
) -> None:
    db = sqlite3.connect(ledger)
    try:
        pay = db.execute("SELECT ref, key, at FROM pay_calls").fetchall()
        effects = Counter(ref for (ref,) in db.execute("SELECT ref FROM pay_effects"))
        notify = db.execute("SELECT ref, key, at FROM notify_calls").fetchall()
    except sqlite3.DatabaseError as exc:  # kept, with its journal, for a post-mortem
        raise RuntimeError(
            f"the outside ledger {ledger} cannot be read ({exc}); files beside it: "
            f"{sorted(p.name for p in ledger.parent.glob(ledger.name + '*'))}"
        ) from exc
    finally:
        db.close()
    expected = {f"{run_id}/s{k}" for run_id in ids for k in range(1, STAGES + 1)}
    report.pay_duplicate_effects = sum(n - 1 for n in effects.values())
    report.pay_missing_effects = len(expected - set(effects))
    for calls, tool in ((pay, "pay"), (notify, "notify")):
        per_ref: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for ref, key, at in calls:
            per_ref[ref].append((key, at))
        repeats = sum(len(v) - 1 for v in per_ref.values())
        if tool == "pay":
            report.pay_calls, report.pay_repeats = len(calls), repeats
        else:
            report.notify_calls, report.notify_repeats = len(calls), repeats
        for got in per_ref.values():
            keys = Counter(k for k, _ in got)
            report.key_changes += int(len(keys) > 1)
            for key, n in keys.items():
                report.unjournaled_calls += max(0, n - intents[key])
                done = result_at.get(key)
                report.calls_after_result += sum(
                    1 for k, at in got if k == key and done and at > done
                )


def _count_models(
    report: CrashReport,
    requests: list[Any],
    replied: dict[tuple[str, str], list[tuple[str, float]]],
) -> None:
    asked: dict[str, list[float]] = defaultdict(list)
    for r in requests:
        prompt = r.body["messages"][-1]["content"]
        asked[prompt].append(r.at)
    report.model_requests = len(requests)
    report.model_repeats = sum(len(v) - 1 for v in asked.values())
    for prompt, times in asked.items():
        run_id, step, what = prompt.rsplit("/", 2)
        seen = replied.get((run_id, step), [])
        position = 0 if what == "draft" else 1
        if len(seen) > position:
            on_record = seen[position][1]
            report.model_repeats_after_reply += sum(1 for at in times[1:] if at > on_record)


async def _verify(url: str, runs: int) -> bool:
    from erpoz import open_store
    from erpoz.audit import verify

    store = open_store(url)
    try:
        result = await verify(store)
        return bool(result.ok and result.runs == runs)
    finally:
        await store.close()


# --- the long version ----------------------------------------------------------------------------
def _table(reports: list[CrashReport]) -> str:
    cols = [
        ("store", lambda r: r.mode),
        ("runs", lambda r: r.runs),
        ("kills", lambda r: r.kills),
        ("in a tool", lambda r: r.kills_in_tool),
        ("runs hit", lambda r: r.resumed_runs),
        ("lost", lambda r: r.lost_runs),
        ("dup. steps", lambda r: r.duplicate_successes),
        ("pay dup. effects", lambda r: r.pay_duplicate_effects),
        ("pay calls again", lambda r: r.pay_repeats),
        ("notify repeats", lambda r: f"{r.notify_repeats}/{r.notify_calls}"),
        ("model asked again", lambda r: f"{r.model_repeats}/{r.model_requests}"),
        ("after reply", lambda r: r.model_repeats_after_reply),
        ("s", lambda r: f"{r.seconds:.0f}"),
    ]
    lines = ["| " + " | ".join(name for name, _ in cols) + " |"]
    lines.append("|" + "|".join("---:" if i else ":---" for i in range(len(cols))) + "|")
    for r in reports:
        lines.append("| " + " | ".join(str(get(r)) for _, get in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000, help="runs per store (default 1000)")
    parser.add_argument("--kills", type=int, default=500, help="kills per store (default 500)")
    parser.add_argument("--modes", default=",".join(MODES), help="stores, comma-separated")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="write the reports to this file")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so that the workers are stopped on the way out

    signal.signal(signal.SIGTERM, stop)
    reports = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"erpoz-crash-{mode}-") as tmp:
            reports.append(
                crash_test(
                    mode,
                    args.runs,
                    args.kills,
                    tmp=Path(tmp),
                    seed=args.seed,
                    progress=lambda m: print(m, file=sys.stderr, flush=True),
                )
            )
    print(_table(reports))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    problems = [f"{r.mode}: {p}" for r in reports for p in r.problems()]
    for p in problems:
        print("PROBLEM", p)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
