"""``python -m bench``: erpoz, LangGraph and a plain-asyncio floor, measured in one run.

Runs every measurement of ``bench.erpoz_bench`` and ``bench.peers`` one after the other in
this process (the concurrent-runs cases each in a fresh subprocess, through
``bench.peers.measure_concurrent_in_subprocess``), then prints one table::

    benchmark | erpoz | LangGraph | floor | erpoz/LangGraph | target | met?

Options: ``--quick`` skips the 10,000-run cases, ``--no-peers`` skips LangGraph (which then
need not be installed; its column shows '–'), ``--json PATH`` writes every measurement and
row, ``--markdown`` also prints the table as Markdown (for bench/README.md).

A measurement that raises is reported (with its traceback, or the child's stderr) after the
table and the exit status is 1; the other measurements still run. Unmet targets do not change
the exit status.
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from . import erpoz_bench as eb
from . import peers

Impl = Literal["erpoz", "langgraph", "floor"]
Outcome = float | peers.RssResult | None

N_STEPS = 100
WIDTH = 50
CONC_STEPS = 5
CONC_SLEEP_S = 0.01
DASH = "–"
#: Warn when the 1-minute load average exceeds this fraction of the cores (the benchmark
#: itself keeps about one core busy).
BUSY_LOAD = 0.75


# --------------------------------------------------------------------------- #
# Measurements
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Job:
    key: str
    label: str
    impl: Impl
    unit: str
    fn: Callable[[], Outcome]
    in_subprocess: bool = False


@dataclass
class Measurement:
    key: str
    label: str
    impl: Impl
    unit: str
    value: float | None = None  # None: capped or failed (see error)
    took_s: float = 0.0
    error: str | None = None
    capped: bool = False
    rss: dict[str, Any] = field(default_factory=dict)


def _conc_key(impl: str, n_runs: int) -> str:
    return f"{impl}.concurrent.{n_runs}"


def _concurrent_job(
    key: str, label: str, impl: Impl, target: str, n_runs: int, reps: int, cap_s: float
) -> Job:
    def fn() -> Outcome:
        return peers.measure_concurrent_in_subprocess(
            target, n_runs, CONC_STEPS, CONC_SLEEP_S, reps=reps, timeout_s=cap_s
        )

    return Job(key, label, impl, "s", fn, in_subprocess=True)


def _chain_job(durability: eb.Durability) -> Job:
    def fn() -> Outcome:
        return eb.erpoz_chain_us_per_step(N_STEPS, durability)

    label = f"chain {N_STEPS} steps, {durability}"
    return Job(f"erpoz.chain.{durability}", label, "erpoz", "µs/step", fn)


def build_jobs(*, run_counts: tuple[int, ...], with_peers: bool, cap_s: float) -> list[Job]:
    """Every measurement, in the order they run."""
    chain = f"chain {N_STEPS} steps"
    fan = f"fan-out {WIDTH}"
    jobs: list[Job] = [
        Job(
            "floor.chain", chain, "floor", "µs/step", lambda: peers.floor_chain_us_per_step(N_STEPS)
        ),
    ]
    jobs += [_chain_job(d) for d in ("memory", "sync", "batch", "effects")]
    if with_peers:
        jobs += [
            Job(
                "langgraph.chain.memory",
                f"{chain}, no checkpointer",
                "langgraph",
                "µs/step",
                lambda: peers.langgraph_chain_us_per_step(N_STEPS, "none"),
            ),
            Job(
                "langgraph.chain.sqlite",
                f"{chain}, AsyncSqliteSaver",
                "langgraph",
                "µs/step",
                lambda: peers.langgraph_chain_us_per_step(N_STEPS, "sqlite"),
            ),
        ]
    jobs += [
        Job("floor.fanout", fan, "floor", "ms/run", lambda: peers.floor_fanout_ms(WIDTH)),
        Job(
            "erpoz.fanout.memory",
            f"{fan}, memory",
            "erpoz",
            "ms/run",
            lambda: eb.erpoz_fanout_ms(WIDTH, "memory"),
        ),
        Job(
            "erpoz.fanout.sync",
            f"{fan}, sync",
            "erpoz",
            "ms/run",
            lambda: eb.erpoz_fanout_ms(WIDTH, "sync"),
        ),
    ]
    if with_peers:
        jobs.append(
            Job(
                "langgraph.fanout",
                fan,
                "langgraph",
                "ms/run",
                lambda: peers.langgraph_fanout_ms(WIDTH),
            )
        )
    jobs += [
        Job(
            "erpoz.compile",
            f"compile {N_STEPS} steps",
            "erpoz",
            "ms",
            lambda: eb.erpoz_compile_ms(N_STEPS, include_build=False),
        ),
        Job(
            "erpoz.build_compile",
            f"build + compile {N_STEPS} steps",
            "erpoz",
            "ms",
            lambda: eb.erpoz_compile_ms(N_STEPS, include_build=True),
        ),
    ]
    if with_peers:
        jobs += [
            Job(
                "langgraph.compile",
                f"compile {N_STEPS} nodes",
                "langgraph",
                "ms",
                lambda: peers.langgraph_compile_only_ms(N_STEPS),
            ),
            Job(
                "langgraph.build_compile",
                f"build + compile {N_STEPS} nodes",
                "langgraph",
                "ms",
                lambda: peers.compile_ms(N_STEPS),
            ),
        ]
    for n in run_counts:
        label = f"{n:,} concurrent runs"
        # reps as in peers.run_all: 3, except 1 for the slow 10,000-run LangGraph gather.
        jobs.append(_concurrent_job(_conc_key("floor", n), label, "floor", "floor", n, 3, cap_s))
        jobs.append(
            _concurrent_job(
                _conc_key("erpoz.memory", n),
                f"{label}, memory",
                "erpoz",
                eb.CONCURRENT_IMPLS["memory"],
                n,
                3,
                cap_s,
            )
        )
        if with_peers:
            jobs.append(
                _concurrent_job(
                    _conc_key("langgraph", n),
                    label,
                    "langgraph",
                    "langgraph",
                    n,
                    3 if n <= 1_000 else 1,
                    cap_s,
                )
            )
    if 1_000 in run_counts:
        jobs.append(
            _concurrent_job(
                _conc_key("erpoz.sync", 1_000),
                "1,000 concurrent runs, sync",
                "erpoz",
                eb.CONCURRENT_IMPLS["sync"],
                1_000,
                3,
                cap_s,
            )
        )
    return jobs


def _run_job(job: Job, progress: Progress) -> Measurement:
    m = Measurement(job.key, job.label, job.impl, job.unit)
    t0 = time.perf_counter()
    try:
        if job.in_subprocess:
            # The child does the measuring; poll so that the progress display stays alive.
            with ThreadPoolExecutor(max_workers=1) as pool:
                future = pool.submit(job.fn)
                while not future.done():
                    progress.refresh()
                    time.sleep(0.2)
                outcome = future.result()
        else:
            # In-process timing: no display refresh (and no refresh thread) while it runs.
            outcome = job.fn()
    except subprocess.CalledProcessError as exc:
        m.error = (
            f"child process failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}\n"
            f"{(exc.stderr or '').rstrip()}"
        )
    except Exception:
        m.error = traceback.format_exc().rstrip()
    else:
        if outcome is None:
            m.capped = True
        elif isinstance(outcome, peers.RssResult):
            m.value = outcome.wall_s
            m.rss = asdict(outcome)
        else:
            m.value = float(outcome)
    m.took_s = time.perf_counter() - t0
    return m


def run_jobs(jobs: list[Job], console: Console) -> dict[str, Measurement]:
    results: dict[str, Measurement] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        task = progress.add_task("benchmarks", total=len(jobs))
        for job in jobs:
            progress.update(task, description=f"{job.label} [bold]{job.impl}[/bold]")
            progress.refresh()
            m = _run_job(job, progress)
            results[job.key] = m
            if m.error is not None:
                outcome = "[red]ERROR[/red] (details after the table)"
            elif m.capped:
                outcome = "[yellow]capped[/yellow]"
            else:
                outcome = f"{_fmt(m.value)} {m.unit}"
                if m.rss:
                    outcome += f", {m.rss['rss_per_run_kb']:.3g} KiB/run"
            what = escape(f"{job.label} [{job.impl}]")
            progress.console.log(f"{what}: {outcome} ({m.took_s:.1f} s)")
            progress.advance(task)
            progress.refresh()
    return results


# --------------------------------------------------------------------------- #
# Table
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Cell:
    value: float | None
    missing: str = DASH  # shown when value is None: '–', 'error', 'capped'


@dataclass(frozen=True)
class Target:
    limit: float
    text: str


@dataclass(frozen=True)
class Row:
    label: str
    erpoz: Cell
    langgraph: Cell
    floor: Cell
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        e, lg = self.erpoz.value, self.langgraph.value
        if e is None or lg is None or lg == 0:
            return None
        return e / lg

    @property
    def met(self) -> bool | None:
        if self.target is None or self.erpoz.value is None:
            return None
        return self.erpoz.value <= self.target.limit


def _cell(results: dict[str, Measurement], key: str) -> Cell:
    m = results.get(key)
    if m is None:
        return Cell(None)
    if m.error is not None:
        return Cell(None, "error")
    if m.capped:
        return Cell(None, "capped")
    return Cell(m.value)


def _rss_cell(results: dict[str, Measurement], key: str) -> Cell:
    c = _cell(results, key)
    if c.value is None:
        return c
    return Cell(float(results[key].rss["rss_per_run_kb"]))


def _combine(a: Cell, b: Cell, op: Callable[[float, float], float]) -> Cell:
    if a.value is None:
        return a
    if b.value is None:
        return b
    return Cell(op(a.value, b.value))


def _minus(a: Cell, b: Cell) -> Cell:
    return _combine(a, b, lambda x, y: x - y)


def _over(a: Cell, b: Cell) -> Cell:
    return _combine(a, b, lambda x, y: x / y)


def build_rows(results: dict[str, Measurement], run_counts: tuple[int, ...]) -> list[Row]:
    def c(key: str) -> Cell:
        return _cell(results, key)

    floor_chain = c("floor.chain")
    lg_sqlite = _minus(c("langgraph.chain.sqlite"), floor_chain)
    rows = [
        Row(
            f"chain {N_STEPS} steps: overhead, memory (µs/step)",
            _minus(c("erpoz.chain.memory"), floor_chain),
            _minus(c("langgraph.chain.memory"), floor_chain),
            floor_chain,
            Target(5.0, "≤ 5"),
        ),
        Row(
            f"chain {N_STEPS} steps: overhead, sync SQLite (µs/step)",
            _minus(c("erpoz.chain.sync"), floor_chain),
            lg_sqlite,
            floor_chain,
            Target(30.0, "≤ 30"),
        ),
        Row(
            f"chain {N_STEPS} steps: overhead, batch SQLite (µs/step)",
            _minus(c("erpoz.chain.batch"), floor_chain),
            lg_sqlite,
            floor_chain,
        ),
        Row(
            f"chain {N_STEPS} steps: overhead, effects SQLite (µs/step)",
            _minus(c("erpoz.chain.effects"), floor_chain),
            lg_sqlite,
            floor_chain,
            Target(15.0, "≤ 15"),
        ),
        Row(
            f"fan-out {WIDTH} → join, memory (ms/run)",
            c("erpoz.fanout.memory"),
            c("langgraph.fanout"),
            c("floor.fanout"),
            Target(0.5, "≤ 0.5"),
        ),
        Row(
            f"fan-out {WIDTH} → join, sync SQLite (ms/run)",
            c("erpoz.fanout.sync"),
            Cell(None),
            c("floor.fanout"),
        ),
        Row(
            f"compile {N_STEPS} steps, compile only (ms)",
            c("erpoz.compile"),
            c("langgraph.compile"),
            Cell(None),
            Target(2.0, "≤ 2"),
        ),
        Row(
            f"build + compile {N_STEPS} steps (ms)",
            c("erpoz.build_compile"),
            c("langgraph.build_compile"),
            Cell(None),
        ),
    ]
    cases = [(n, "erpoz.memory", "memory") for n in run_counts]
    if 1_000 in run_counts:
        cases.append((1_000, "erpoz.sync", "sync SQLite"))
    for n, erpoz_impl, mode in cases:
        floor = c(_conc_key("floor", n))
        erpoz = c(_conc_key(erpoz_impl, n))
        lg = c(_conc_key("langgraph", n)) if erpoz_impl == "erpoz.memory" else Cell(None)
        name = f"{n:,} concurrent runs, {mode}"
        rows += [
            Row(f"{name}: wall (s)", erpoz, lg, floor),
            Row(
                f"{name}: wall ÷ floor (×)",
                _over(erpoz, floor),
                _over(lg, floor),
                _over(floor, floor),
                Target(1.5, "≤ 1.5"),
            ),
            Row(
                f"{name}: peak RSS growth (KiB/run)",
                _rss_cell(results, _conc_key(erpoz_impl, n)),
                _rss_cell(results, _conc_key("langgraph", n)) if lg.value is not None else lg,
                _rss_cell(results, _conc_key("floor", n)),
            ),
        ]
    return rows


def _fmt(value: float | None) -> str:
    if value is None:
        return DASH
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:#.3g}"


def _show(cell: Cell) -> str:
    return cell.missing if cell.value is None else _fmt(cell.value)


COLUMNS = ("benchmark", "erpoz", "LangGraph", "floor", "erpoz/LangGraph", "target", "met?")


def row_cells(row: Row) -> tuple[str, ...]:
    ratio = row.ratio
    met = row.met
    return (
        row.label,
        _show(row.erpoz),
        _show(row.langgraph),
        _show(row.floor),
        DASH if ratio is None else f"{ratio:.2f}×",
        DASH if row.target is None else row.target.text,
        DASH if met is None else ("yes" if met else "NO"),
    )


def print_table(rows: list[Row], title: str, console: Console) -> None:
    table = Table(title=title)
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        cells = list(row_cells(row))
        if row.met is not None:
            cells[-1] = f"[green]{cells[-1]}[/green]" if row.met else f"[bold red]{cells[-1]}[/]"
        table.add_row(*cells)
    console.print(table)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join([":---", *["---:"] * (len(COLUMNS) - 1)]) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


NOTES = (
    "chain overhead = (per-step wall time) − (floor per-step wall time); the floor column "
    "shows the floor's own per-step time.",
    "LangGraph on SQLite: AsyncSqliteSaver with its default durability='async', its "
    "connection set to synchronous=NORMAL like erpoz's (the same LangGraph figure appears in "
    "the sync, batch and effects rows; bench/durable_bench.py pairs durabilities).",
    "LangGraph figures are measured here, in this run; they are not the reference numbers "
    "quoted elsewhere.",
    "concurrent runs: 5 steps each awaiting asyncio.sleep(10 ms), all runs in one "
    "asyncio.gather, each case in a fresh subprocess; peak RSS growth per run in flight.",
)


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="erpoz vs LangGraph vs a plain-asyncio floor, one table.",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="write results as JSON")
    parser.add_argument("--quick", action="store_true", help="skip the 10,000-run cases")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip LangGraph (need not be installed)"
    )
    parser.add_argument(
        "--cap-s",
        type=float,
        default=90.0,
        help="kill a concurrent-runs subprocess after this many seconds (default 90)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)

    run_counts: tuple[int, ...] = (1_000,) if args.quick else (1_000, 10_000)
    with_peers = not args.no_peers
    err = Console(stderr=True, log_path=False)
    if not err.is_terminal:
        err = Console(stderr=True, log_path=False, width=120)
    out = Console() if sys.stdout.isatty() else Console(width=150)

    versions = {
        "python": platform.python_version(),
        "erpoz": _version("erpoz"),
        "langgraph": _version("langgraph") if with_peers else "skipped (--no-peers)",
        "langgraph-checkpoint-sqlite": _version("langgraph-checkpoint-sqlite")
        if with_peers
        else "skipped (--no-peers)",
    }
    machine = _machine()
    machine["loadavg_1m_start"] = _loadavg()
    started = dt.datetime.now(dt.UTC)
    jobs = build_jobs(run_counts=run_counts, with_peers=with_peers, cap_s=args.cap_s)
    err.log(
        f"{len(jobs)} measurements; {machine['cores']} cores, {machine['cpu']}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    t0 = time.perf_counter()
    results = run_jobs(jobs, err)
    total_s = time.perf_counter() - t0
    machine["loadavg_1m_end"] = _loadavg()
    rows = build_rows(results, run_counts)

    title = (
        f"erpoz benchmark, {started:%Y-%m-%d} — {machine['cores']} cores, "
        f"Python {versions['python']}, erpoz {versions['erpoz']}, "
        f"LangGraph {versions['langgraph']}"
    )
    print_table(rows, title, out)
    for i, note in enumerate(NOTES, 1):
        out.print(f"[dim]{i}. {note}[/dim]")
    out.print(f"total {total_s:.0f} s")
    busy = [x for x in (machine["loadavg_1m_start"], machine["loadavg_1m_end"]) if x is not None]
    if busy and max(busy) > BUSY_LOAD * (machine["cores"] or 1):
        out.print(
            f"[yellow]warning: 1-minute load average was {machine['loadavg_1m_start']:.2f} at "
            f"the start and {machine['loadavg_1m_end']:.2f} at the end on "
            f"{machine['cores']} cores; other processes were competing for the CPU, so these "
            "numbers (the floor included) are likely inflated.[/yellow]"
        )
    if args.markdown:
        out.print(markdown_table(rows), markup=False, highlight=False, soft_wrap=True)

    errors = [m for m in results.values() if m.error is not None]
    for m in errors:
        out.rule(f"[red]ERROR[/red] {m.label} [{m.impl}] ({m.key})")
        out.print(m.error, markup=False, highlight=False, soft_wrap=True)

    if args.json is not None:
        payload = {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine,
            "versions": versions,
            "args": {"quick": args.quick, "no_peers": args.no_peers, "cap_s": args.cap_s},
            "total_s": total_s,
            "rows": [
                {
                    "benchmark": r.label,
                    "erpoz": r.erpoz.value,
                    "langgraph": r.langgraph.value,
                    "floor": r.floor.value,
                    "erpoz_over_langgraph": r.ratio,
                    "target": None if r.target is None else r.target.limit,
                    "met": r.met,
                }
                for r in rows
            ],
            "measurements": [asdict(m) for m in results.values()],
            "notes": list(NOTES),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        err.log(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
