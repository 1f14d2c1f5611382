"""Start-up of the ``erpoz`` command and ``runs show`` of a long run, as a user meets them: each
command in a fresh process, the commands interleaved, the median of ``--reps`` wall times.

    python -m bench.startup_bench                  # 5 repetitions, a run of 100,001 events
    python -m bench.startup_bench --reps 9 --events 20000 --json

It measures the erpoz of the interpreter it runs on (``sys.executable``); to compare two
checkouts, run it with each one's interpreter, one after the other, and compare the ratios.
The load average is printed with the figures: on a loaded machine every row is slower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

ERPOZ = [sys.executable, "-c", "from erpoz.cli import main; main()"]


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


def _wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_001)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one_step.py").write_text(FLOW)
        run_id = asyncio.run(_long_run(folder / "long.db", args.events))
        cases = {
            "python -c 'import erpoz'": [sys.executable, "-c", "import erpoz"],
            "erpoz --help": [*ERPOZ, "--help"],
            "erpoz run (one step, memory store)": [
                *ERPOZ,
                "run",
                "one_step.py:flow",
                "-i",
                "x=1",
                "--store",
                "memory",
            ],
            f"erpoz runs show ({args.events:,} events)": [
                *ERPOZ,
                "runs",
                "show",
                run_id,
                "--store",
                "long.db",
            ],
        }
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.reps):  # interleaved: each repetition runs every case once
            for name, cmd in cases.items():
                times[name].append(_wall(cmd, folder))
        load_after = os.getloadavg()[0]
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    if args.json:
        print(json.dumps({"loadavg": [load_before, load_after], "median_s": medians}, indent=2))
        return 0
    print(f"load average {load_before:.2f} → {load_after:.2f}; median of {args.reps}")
    for name, s in medians.items():
        print(f"{name:<45}{s:>8.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
