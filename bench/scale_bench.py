"""Scale-out: workers draining a PostgreSQL queue, and the Ray executor against local threads.

``python -m bench.scale_bench [--url URL] [--runs 10000] [--workers 1,2,4] [--concurrency 32]
[--no-workers] [--no-ray] [--json PATH]``

**Workers.** For each worker count, in a fresh schema: ``--runs`` runs of a 5-step chain whose
steps ``await asyncio.sleep(0.01)`` are submitted (``Engine.submit``), then that many
``erpoz worker --burst`` processes drain the queue. ``runs/s`` is runs over the drain's wall
time *as the log records it*: from the first ``run_resumed`` (a worker took a run) to the
last ``run_succeeded``, so process start-up is not counted. ``ideal`` is what the slots alone
would allow (workers × concurrency / 50 ms). ``claim p50 / p99`` is how long
``claim_next`` (one ``UPDATE … FOR UPDATE SKIP LOCKED`` round trip) took in the workers,
pooled. Every run is checked: succeeded with the right output, each step recorded once.

**Ray.** In one process, against a Ray started for it (``ray.init(num_cpus=2)``):

* overhead per step: a 20-step chain of trivial pure sync steps, as µs per step on the local
  thread executor and on :class:`~erpoz.engine.RayExecutor`; and the floor, a bare Ray task
  round trip (``await f.remote(x)``) without erpoz;
* per-task cost on the driver: CPU time of this process per Ray task when 1,000 trivial tasks
  are submitted at once (what bounds how fast one orchestrator can feed a cluster);
* a CPU-bound fan-out of 50 steps (each ~``--work-ms`` of pure-Python arithmetic, holding the
  GIL) on the local executor (threads: one core's worth) and on Ray with 2 CPUs: wall and
  speed-up. The speed-up on a larger cluster is *estimated* from the measured figures, not
  measured: ``T(N) ≈ ceil(50 / N) × t_step + 50 × driver cost per task + t_chain_floor``.

Machine load (1-minute load average) is printed with the figures; numbers from a busy machine
are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
DEFAULT_URL = os.environ.get("ERPOZ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ERPOZ = Path(sys.executable).parent / "erpoz"


def _load() -> float:
    return os.getloadavg()[0]


def _busy_cpu_s() -> float:
    """CPU seconds this machine has spent busy (all cores, all processes) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- workers ------------------------------------------------------------------------------
def drain(
    url: str, runs: int, workers: int, concurrency: int, durability: str = "sync"
) -> dict[str, Any]:
    import psycopg

    from erpoz import Engine, open_store
    from erpoz.flow._load import load_flow

    schema = f"erpoz_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    surl = f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        plan = load_flow(f"{HERE / 'flows.py'}:chain5")

        async def submit() -> float:
            store = open_store(surl)
            engine = Engine(store)
            t0 = time.perf_counter()
            for i in range(runs):
                await engine.submit(plan, {"x": i})
            elapsed = time.perf_counter() - t0
            await store.close()
            return elapsed

        submit_s = asyncio.run(submit())
        load0 = _load()
        busy0 = _busy_cpu_s()
        procs = [
            subprocess.Popen(
                [
                    str(ERPOZ),
                    "worker",
                    "--store",
                    surl,
                    "--burst",
                    "--json",
                    "--quiet",
                    "-n",
                    str(concurrency),
                    "--poll",
                    "0.05",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=HERE,
            )
            for _ in range(workers)
        ]
        stats = []
        for p in procs:
            out, errtext = p.communicate(timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"a worker failed ({p.returncode}): {errtext[-2000:]}")
            stats.append(json.loads(out))
        busy = _busy_cpu_s() - busy0
        with psycopg.connect(surl) as db:
            first, last = db.execute(
                "SELECT (SELECT min(ts) FROM events WHERE kind = 'run_resumed'), "
                "(SELECT max(ts) FROM events WHERE kind = 'run_succeeded')"
            ).fetchone()
            bad = db.execute(
                "SELECT count(*) FROM runs WHERE status <> 'succeeded' "
                "OR output <> ((inputs::json->>'x')::int + 5)::text"
            ).fetchone()[0]
            successes = db.execute(
                "SELECT count(*), count(DISTINCT (run_id, step)) FROM events "
                "WHERE kind = 'step_succeeded'"
            ).fetchone()
        if bad or successes[0] != successes[1] or successes[0] != 5 * runs:
            raise RuntimeError(f"{bad} runs wrong; step successes {successes}")
        wall = last - first
        claims = [s for s in stats if s["claim_ms_p50"] is not None]
        return {
            "workers": workers,
            "concurrency": concurrency,
            "durability": durability,
            "runs": runs,
            "submit_runs_per_s": runs / submit_s,
            "drain_s": wall,
            "runs_per_s": runs / wall,
            "ideal_runs_per_s": workers * concurrency / 0.05,
            "claim_ms_p50": statistics.median(s["claim_ms_p50"] for s in claims),
            "claim_ms_p99": max(s["claim_ms_p99"] for s in claims),
            "per_worker": [s["succeeded"] for s in stats],
            "worker_cpu_ms_per_run": sum(s["cpu_seconds"] for s in stats) / runs * 1000,
            "machine_cpu_ms_per_run": busy / runs * 1000,
            "load": [load0, _load()],
        }
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- Ray ----------------------------------------------------------------------------------
def ray_figures(work_ms: float) -> dict[str, Any]:
    import ray

    from bench import flows
    from erpoz import Engine, open_store
    from erpoz.engine import RayExecutor, ThreadExecutor

    executor = RayExecutor(num_cpus=2)
    executor.nodes()  # start Ray before anything is timed
    out: dict[str, Any] = {"load": [_load()]}
    try:
        chain = flows.pure_chain(20).compile()

        async def per_step(ex: Any, reps: int = 15) -> float:
            engine = Engine(open_store("memory"), executor=ex)
            for _ in range(2):
                await engine.run(chain, {"x": 0})
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                result = await engine.run(chain, {"x": 0})
                times.append(time.perf_counter() - t0)
                assert result.output == 20, result
            return statistics.median(times) / 20 * 1e6

        out["local_us_per_step"] = asyncio.run(per_step(ThreadExecutor()))
        out["ray_us_per_step"] = asyncio.run(per_step(executor))

        remote_inc = ray.remote(flows.plain_inc)

        async def floor(reps: int = 300) -> float:
            for _ in range(20):
                await remote_inc.remote(1)
            t0 = time.perf_counter()
            for i in range(reps):
                await remote_inc.remote(i)
            return (time.perf_counter() - t0) / reps * 1e6

        out["ray_floor_us_per_task"] = asyncio.run(floor())

        c0, w0 = time.process_time(), time.perf_counter()
        refs = [remote_inc.remote(i) for i in range(1000)]
        ray.get(refs)
        out["driver_cpu_us_per_task"] = (time.process_time() - c0) / 1000 * 1e6
        out["burst_1000_tasks_s"] = time.perf_counter() - w0

        flows.WORK_MS = work_ms
        fan = flows.cpu_fan_out(50, work_ms).compile()

        async def fan_wall(ex: Any) -> float:
            engine = Engine(open_store("memory"), executor=ex)
            await engine.run(flows.cpu_fan_out(4, work_ms).compile(), {"n": 4})
            t0 = time.perf_counter()
            result = await engine.run(fan, {"n": 50})
            assert result.ok, result.error
            return time.perf_counter() - t0

        t_step = flows.time_work(work_ms)
        out["step_s"] = t_step
        out["fan_local_s"] = asyncio.run(fan_wall(ThreadExecutor()))
        out["fan_ray_s"] = asyncio.run(fan_wall(executor))
        out["speedup_2"] = out["fan_local_s"] / out["fan_ray_s"]
        per_task = out["ray_us_per_step"] / 1e6
        serial = 50 * t_step
        out["estimated"] = {
            n: serial
            / (math.ceil(50 / n) * t_step + 50 * out["driver_cpu_us_per_task"] / 1e6 + per_task)
            for n in (2, 4, 8, 16, 50)
        }
        out["load"].append(_load())
    finally:
        executor.shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=DEFAULT_URL)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--durability", default="sync,batch", help="the workers' store durability")
    ap.add_argument("--work-ms", type=float, default=100.0)
    ap.add_argument("--no-workers", action="store_true")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    if not args.no_workers:
        rows = []
        for durability in args.durability.split(","):
            for n in (int(x) for x in args.workers.split(",")):
                print(f"draining {args.runs} runs: {n} worker(s), {durability}", file=sys.stderr)
                rows.append(drain(args.url, args.runs, n, args.concurrency, durability))
        report["workers"] = rows
        base = {r["durability"]: r["runs_per_s"] for r in reversed(rows)}  # 1st of each
        print("\nworkers draining a PostgreSQL queue (5 steps × 10 ms per run)")
        print(
            "| workers × slots, durability | runs/s | vs 1 worker | ideal runs/s "
            "| claim p50 / p99 (ms) | CPU per run: workers / whole machine (ms) "
            "| runs per worker | load |"
        )
        print("|---|---:|---:|---:|---:|---:|---|---|")
        for r in rows:
            print(
                f"| {r['workers']} × {r['concurrency']}, {r['durability']} | "
                f"{r['runs_per_s']:.0f} | {r['runs_per_s'] / base[r['durability']]:.2f}× | "
                f"{r['ideal_runs_per_s']:.0f} | "
                f"{r['claim_ms_p50']:.2f} / {r['claim_ms_p99']:.2f} | "
                f"{r['worker_cpu_ms_per_run']:.2f} / {r['machine_cpu_ms_per_run']:.2f} | "
                f"{'/'.join(map(str, r['per_worker']))} | "
                f"{r['load'][0]:.1f}→{r['load'][1]:.1f} |"
            )
        print(f"(submitting: {rows[0]['submit_runs_per_s']:.0f} runs/s from one process)")
        cpu = min(r["machine_cpu_ms_per_run"] for r in rows if r["durability"] == "sync") / 1000
        cores = os.cpu_count() or 1
        print(
            f"The drain is CPU-bound here: {cores} cores at ~{cpu * 1000:.1f} ms of CPU per run "
            f"(workers + PostgreSQL + kernel) allow ~{cores / cpu:.0f} runs/s. Were the "
            "cost per run the same with more cores (SKIP LOCKED claims do not contend), "
            + ", ".join(f"{n} cores: ~{n / cpu:,.0f} runs/s" for n in (8, 32))
            + " (a projection from the measured CPU per run, not a measurement)."
        )
    if not args.no_ray:
        print("measuring Ray …", file=sys.stderr)
        r = ray_figures(args.work_ms)
        report["ray"] = r
        print("\nRay executor (local Ray, 2 CPUs)")
        print("| what | figure |")
        print("|---|---:|")
        print(f"| chain step, local threads (µs/step) | {r['local_us_per_step']:.0f} |")
        print(f"| chain step, Ray (µs/step) | {r['ray_us_per_step']:.0f} |")
        print(f"| bare Ray task round trip, no erpoz (µs) | {r['ray_floor_us_per_task']:.0f} |")
        print(
            f"| erpoz on Ray ÷ bare Ray | "
            f"{r['ray_us_per_step'] / r['ray_floor_us_per_task']:.2f}× |"
        )
        print(f"| driver CPU per task, 1,000 at once (µs) | {r['driver_cpu_us_per_task']:.0f} |")
        print(f"| one fan-out step (CPU-bound, s) | {r['step_s']:.3f} |")
        print(f"| fan-out 50, local threads (s) | {r['fan_local_s']:.2f} |")
        print(f"| fan-out 50, Ray 2 CPUs (s) | {r['fan_ray_s']:.2f} |")
        print(f"| speed-up, 2 CPUs (measured) | {r['speedup_2']:.2f}× |")
        for n, s in r["estimated"].items():
            print(f"| speed-up, {n} CPUs (estimated) | {s:.1f}× |")
        print(f"(load {r['load'][0]:.1f} → {r['load'][-1]:.1f})")
    if args.json_path:
        out = Path(args.json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
