"""Start-up of the ``erpoz`` command and ``runs show`` of a long run, as a user meets them: each
command in a fresh process, the commands interleaved, the median of ``--reps`` wall times.

    python -m bench.startup_bench                  # 5 repetitions, a run of 100,001 events
    python -m bench.startup_bench --reps 9 --events 20000 --json

It measures the erpoz of the interpreter it runs on (``sys.executable``) and, with
``--against SRC``, another checkout's ``src`` folder too (the same interpreter with
``PYTHONPATH=SRC``), interleaved with it (each repetition runs every command with both):

    git archive main src | tar -x -C /tmp/base
    python -m bench.startup_bench --against /tmp/base/src

Each row gives the median wall time and the median CPU time of the process (user + system; less
sensitive to a loaded machine than the wall time), with the load average before and after.

Bytecode is cached (``PYTHONPYCACHEPREFIX`` in a temporary folder, one untimed warm-up run of
each command first): a shell with ``PYTHONDONTWRITEBYTECODE=1`` would otherwise make every
command compile erpoz from source, which is not what an installed erpoz does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOW = """
from erpoz import Flow, step


@step
def inc(x: int) -> int:
    return x + 1


flow = Flow("one-step", inputs={"x": int})
flow.add(inc, x=flow.input("x"))
"""

MAIN = "from erpoz.cli import main; main()"


async def _long_run(path: Path, events: int) -> str:
    from erpoz.store import NewRun, open_store

    store = open_store(path, durability="batch")
    run_id = "r-long-run-bench"
    w = await store.create_run(NewRun(run_id, "long", "f" * 16, "{}"), "bench:1:owner")
    for i in range((events - 2) // 2):
        w.append("step_started", f"s{i}", 1)
        w.append("step_succeeded", f"s{i}", 1, {"ms": 0.1}, "1")
    w.append("run_succeeded", payload="1")
    await w.release()
    await store.close()
    return run_id


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cases(python: str, run_id: str, events: int) -> dict[str, list[str]]:
    erpoz = [python, "-c", MAIN]
    return {
        "python -c 'import erpoz'": [python, "-c", "import erpoz"],
        "erpoz --help": [*erpoz, "--help"],
        "erpoz run (one step, memory store)": [
            *erpoz,
            *("run", "one_step.py:flow", "-i", "x=1", "--store", "memory"),
        ],
        f"erpoz runs show ({events:,} events)": [
            *erpoz,
            *("runs", "show", run_id, "--store", "long.db"),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_001)
    parser.add_argument("--against", metavar="SRC", help="another checkout's src folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sources = {"this": None, **({"against": args.against} if args.against else {})}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        (folder / "one_step.py").write_text(FLOW)
        run_id = asyncio.run(_long_run(folder / "long.db", args.events))
        envs = {
            who: env if src is None else {**env, "PYTHONPATH": src} for who, src in sources.items()
        }
        cases = {
            (who, name): cmd
            for who in sources
            for name, cmd in _cases(sys.executable, run_id, args.events).items()
        }
        for (who, _), cmd in cases.items():  # warm-up, untimed: bytecode compiled and cached
            _timed(cmd, folder, envs[who])
        load_before = os.getloadavg()[0]
        walls: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
        cpus: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
        for rep in range(args.reps):  # interleaved, the order rotated each repetition
            keys = list(cases)
            keys = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            for key in keys:
                wall, cpu = _timed(cases[key], folder, envs[key[0]])
                walls[key].append(wall)
                cpus[key].append(cpu)
        load_after = os.getloadavg()[0]
    rows = [
        {
            "who": who,
            "src": sources[who] or "(installed)",
            "command": name,
            "wall_s": statistics.median(walls[(who, name)]),
            "cpu_s": statistics.median(cpus[(who, name)]),
        }
        for who, name in cases
    ]
    if args.json:
        print(json.dumps({"loadavg": [load_before, load_after], "rows": rows}, indent=2))
        return 0
    print(f"load average {load_before:.2f} → {load_after:.2f}; medians of {args.reps}")
    for who, src in sources.items():
        print(f"{who}: {sys.executable} {'' if src is None else 'PYTHONPATH=' + src}")
    print(f"{'command':<45}{'who':>8}{'wall':>10}{'cpu':>10}")
    for r in rows:
        print(f"{r['command']:<45}{r['who']:>8}{r['wall_s']:>9.3f}s{r['cpu_s']:>9.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
