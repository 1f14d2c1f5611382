"""Retrieval speed and quality of ``erpoz.memory``.

``python -m bench.retrieval_bench`` runs three parts and prints a table for each:

* **latency**: top-10 exact search over ``--n`` (100,000) chunks in a memory database on disk
  (SQLite, or PostgreSQL with ``--store``): random unit 384-d vectors, and texts cut from the
  real words of the GSM8K
  questions and answers under ``../shared/data/routellm-gsm8k`` (read, not copied). Queries
  are GSM8K questions (their first sentence) with random query vectors (the query's embedding
  is not timed: it is the embedder's cost, not the store's). p50 / p95 per search for the
  vector, keyword and hybrid modes, with a ``source`` filter and with MMR, after a warm-up
  (the first search reads the vectors into memory; that load is reported too).
  Targets: vector ≤ 20 ms, hybrid ≤ 40 ms (p50). Keyword search in a store this large leaves
  the query's commonest words out of the match (``KEYWORD_BUDGET``); its recall@10 against
  the store's own ranking (BM25 in SQLite, ``ts_rank`` in PostgreSQL) of every chunk with any
  query word is reported.
* **ingest**: throughput of ingesting the demo corpus replicated ``--copies`` times (as
  separate files) with the real MiniLM: chunks / s, end to end (read, parse, chunk, embed,
  store).
* **quality**: hit@1 and hit@5 of the question set ``tests/memory/questions.json`` over the
  demo corpus, for vector, keyword and hybrid retrieval, with MiniLM.

``--quality`` (or ``--latency``, ``--ingest``) runs that part alone; ``--json PATH`` writes
the figures. ``--store postgresql://…`` runs every part on PostgreSQL instead of SQLite: each
in a throw-away schema of that database (created, then dropped; the URL must not set
``options``). Vector search is exact (no approximate index), so its recall@10 against exact
search is 1 by construction. The machine's load average is printed with the figures: on a
shared machine it says how far to trust them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from erpoz.memory import Chunk, DocumentInfo, Hit, demo_corpus, open_database, open_memory
from erpoz.memory._exact import ExactSearch
from erpoz.memory._search import query_terms

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "tests" / "memory" / "questions.json"
WORDS = ROOT.parent / "shared" / "data" / "routellm-gsm8k" / "gsm8k_responses.csv"
TARGETS_MS = {"vector": 20.0, "hybrid": 40.0}
MODES = ("vector", "keyword", "hybrid")

console = Console(stderr=True)


# --- latency ------------------------------------------------------------------------------------
def gsm8k_text(path: Path = WORDS) -> tuple[list[str], list[str]]:
    """The words of every question and recorded answer, in order, and the questions' first
    sentences (the queries)."""
    if not path.exists():
        raise SystemExit(f"the word source is missing: {path} (give --words PATH to a CSV)")
    csv.field_size_limit(sys.maxsize)
    words: list[str] = []
    queries: list[str] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.reader(fh):
            if row and row[0] == "prompt":
                continue
            texts = [row[0], *row[3:5]]
            for text in texts:
                words.extend(text.split())
            first = re.split(r"(?<=[.?!])\s", row[0].strip(), maxsplit=1)[0]
            queries.append(first)
    return words, queries


def load_average() -> str:
    """The machine's load average (1, 5, 15 minutes), as ``uptime`` shows it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def memory_at(store: str | None, folder: Path, name: str) -> Iterator[str]:
    """Where a fresh memory goes: a SQLite file in ``folder`` (``store`` None), else a
    throw-away schema of the PostgreSQL database ``store`` names, dropped afterwards."""
    if store is None:
        yield str(folder / f"{name}.db")
        return
    import psycopg

    schema = f"erpoz_bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(store, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in store else "?"
        yield f"{store}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(store, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')


def build_store(
    url: str, n: int, dim: int, words: Sequence[str], seed: int = 7
) -> tuple[ExactSearch, float]:
    """A store at ``url`` of ``n`` chunks (100 per document) with random unit vectors and texts
    of 40-120 consecutive real words; and the seconds it took to write."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    store = open_database(url).vector_store()
    assert isinstance(store, ExactSearch)
    per_doc = 100
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("writing chunks", total=n)
        for d in range(0, n, per_doc):
            count = min(per_doc, n - d)
            vectors = rng.standard_normal((count, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            chunks = []
            for _ in range(count):
                length = pick.randint(40, 120)
                start = pick.randrange(0, len(words) - length)
                text = " ".join(words[start : start + length])
                heading = (f"Section {pick.randint(1, 20)}",)
                chunks.append(Chunk(text, heading, None, 0, len(text), 0))
            source = f"synthetic/doc-{d // per_doc:05d}.txt"
            info = DocumentInfo(source, "-", "text", 0, 0, 0.0, "-")
            store.replace_document(info, chunks, vectors, embedder="random")
            bar.advance(task, count)
    seconds = time.perf_counter() - t0
    if url.startswith(("postgresql://", "postgres://")):
        settle(url)
    return store, seconds


def settle(url: str) -> None:
    """Vacuum and analyze the tables just written, as autovacuum soon would: else it does so
    on the same two cores while the searches are timed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE memory_documents, memory_chunks, memory_vectors")


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def latency(
    n: int, dim: int, queries: int, words_path: Path, store_url: str | None = None
) -> dict[str, Any]:
    where = "PostgreSQL" if store_url else "SQLite"
    console.print(f"[bold]latency[/]: building a {where} store of {n:,} chunks …")
    words, questions = gsm8k_text(words_path)
    with tempfile.TemporaryDirectory() as tmp, memory_at(store_url, Path(tmp), "latency") as url:
        store, build_s = build_store(url, n, dim, words)
        rng = np.random.default_rng(11)
        qvecs = rng.standard_normal((queries, dim), dtype=np.float32)
        qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
        texts = [questions[i % len(questions)] for i in range(queries)]
        t0 = time.perf_counter()
        store.matrix()
        load_ms = (time.perf_counter() - t0) * 1000
        cases: dict[str, Callable[[int], list[Hit]]] = {
            "vector": lambda i: store.search(texts[i], qvecs[i], k=10, mode="vector"),
            "keyword": lambda i: store.search(texts[i], None, k=10, mode="keyword"),
            "hybrid": lambda i: store.search(texts[i], qvecs[i], k=10, mode="hybrid"),
            "vector + source filter": lambda i: store.search(
                texts[i], qvecs[i], k=10, mode="vector", filters={"source": "synthetic/doc-0*"}
            ),
            "hybrid + MMR 0.7": lambda i: store.search(
                texts[i], qvecs[i], k=10, mode="hybrid", mmr=0.7
            ),
        }
        floor = _time(lambda: np.argpartition(-(store.matrix().vectors @ qvecs[0]), 9)[:10], 50)
        results: dict[str, Any] = {
            "store": where,
            "chunks": n,
            "dim": dim,
            "queries": queries,
            "build_s": round(build_s, 2),
            "matrix_load_ms": round(load_ms, 1),
            "numpy_floor_p50_ms": round(statistics.median(floor), 3),
            "cases": {},
        }
        # keyword search leaves common words out in a large store: how much of exact BM25's
        # top 10 (every chunk with any query word ranked) does it still find?
        overlap = []
        for text in texts[:100]:
            terms = query_terms(text)
            if not terms:
                continue
            exact = set(store._rank(store._any(terms), 10, 10, None, None))
            got = set(store._keyword(text, 10, None, None))
            if exact:
                overlap.append(len(exact & got) / len(exact))
        results["keyword_recall_at_10_vs_full_bm25"] = round(statistics.mean(overlap), 3)
        for name, case in cases.items():
            for i in range(min(20, queries)):  # warm-up
                case(i)
            times = []
            hits = 0
            for i in range(queries):
                t0 = time.perf_counter()
                found = case(i)
                times.append((time.perf_counter() - t0) * 1000)
                hits += len(found)
            times.sort()
            results["cases"][name] = {
                "p50_ms": round(statistics.median(times), 3),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
                "mean_results": round(hits / queries, 2),
            }
        results["load_average"] = load_average()
        store.close()
    return results


# --- ingest -------------------------------------------------------------------------------------
def ingest_throughput(copies: int, store_url: str | None = None) -> dict[str, Any]:
    from erpoz.models.local_embed import MiniLMEmbed

    console.print(f"[bold]ingest[/]: the demo corpus × {copies} with MiniLM …")
    embedder = MiniLMEmbed()
    t0 = time.perf_counter()
    embedder.embed_array(["warm up"])
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        for i in range(copies):
            shutil.copytree(demo_corpus(), corpus / f"copy-{i:03d}")
        with (
            memory_at(store_url, Path(tmp), "ingest") as url,
            open_memory(url, embedder=embedder) as memory,
        ):
            report = memory.ingest_sync(corpus, root=corpus)
            again = memory.ingest_sync(corpus, root=corpus)
    return {
        "files": len(report.ingested),
        "failed": len(report.failed),
        "chunks": report.chunks,
        "seconds": round(report.seconds, 2),
        "chunks_per_s": round(report.chunks_per_s, 1),
        "files_per_s": round(len(report.ingested) / report.seconds, 1),
        "model_load_s": round(load_s, 2),
        "precision": embedder.dtype,
        "reingest_unchanged_s": round(again.seconds, 3),
    }


# --- quality ------------------------------------------------------------------------------------
def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    questions: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["questions"]
    return questions


def answers(question: dict[str, Any], hit: Hit) -> bool:
    """Whether ``hit`` is the passage that answers ``question``."""
    if hit.source != question["source"]:
        return False
    if question.get("heading") and (not hit.heading or hit.heading[-1] != question["heading"]):
        return False
    return not question.get("contains") or question["contains"] in hit.text


def evaluate_quality(
    embedder: Any = None, k: int = 5, store_url: str | None = None
) -> dict[str, Any]:
    """hit@1 and hit@``k`` per search mode over the demo corpus (default embedder: MiniLM), in
    an in-memory SQLite memory, or a throw-away schema of the PostgreSQL ``store_url``."""
    questions = load_questions()
    corpus = demo_corpus()
    out: dict[str, Any] = {"questions": len(questions)}
    with contextlib.ExitStack() as stack:
        url = "memory"
        if store_url is not None:
            url = stack.enter_context(memory_at(store_url, Path(), "quality"))
        memory = stack.enter_context(open_memory(url, embedder=embedder))
        report = memory.ingest_sync(corpus, root=corpus)
        if not report.ok:
            raise RuntimeError(f"the demo corpus did not ingest: {report.summary()}")
        out["chunks"] = report.chunks
        out["embedder"] = getattr(memory.embedder, "name", "?")
        for mode in MODES:
            at1 = atk = 0
            misses = []
            for q in questions:
                hits = memory.search_sync(q["question"], k=k, mode=mode)  # type: ignore[arg-type]
                ranks = [i for i, h in enumerate(hits) if answers(q, h)]
                at1 += bool(ranks and ranks[0] == 0)
                atk += bool(ranks)
                if not ranks or ranks[0] != 0:
                    misses.append({"id": q["id"], "top": hits[0].id if hits else None})
            out[mode] = {
                "hit@1": round(at1 / len(questions), 3),
                f"hit@{k}": round(atk / len(questions), 3),
                "not_first": misses,
            }
    return out


# --- main ---------------------------------------------------------------------------------------
def _print_latency(r: dict[str, Any]) -> None:
    table = Table(
        title=f"top-10 search over {r['chunks']:,} chunks ({r['dim']}-d) in {r['store']}, "
        f"{r['queries']} queries",
        title_justify="left",
    )
    for col in ("case", "p50 ms", "p95 ms", "target (p50)", "met?"):
        table.add_column(col)
    for name, c in r["cases"].items():
        target = TARGETS_MS.get(name)
        met = "" if target is None else ("yes" if c["p50_ms"] <= target else "NO")
        table.add_row(name, f"{c['p50_ms']:.2f}", f"{c['p95_ms']:.2f}", f"{target or ''}", met)
    out = Console()
    out.print(table)
    out.print(
        f"store written in {r['build_s']} s; vectors read into memory in "
        f"{r['matrix_load_ms']} ms (first search after a change); numpy matrix-vector "
        f"product + top-10 alone: {r['numpy_floor_p50_ms']} ms; keyword recall@10 against "
        f"the full ranking of every chunk with a query word: "
        f"{r['keyword_recall_at_10_vs_full_bm25']}; load average after: {r['load_average']}",
        highlight=False,
    )


def _print_quality(r: dict[str, Any]) -> None:
    table = Table(
        title=f"{r['questions']} questions over the demo corpus ({r['chunks']} chunks, "
        f"embedder {r['embedder']})",
        title_justify="left",
    )
    for col in ("mode", "hit@1", "hit@5", "not first"):
        table.add_column(col)
    for mode in MODES:
        m = r[mode]
        missed = ", ".join(x["id"] for x in m["not_first"])
        table.add_row(mode, f"{m['hit@1']:.3f}", f"{m['hit@5']:.3f}", missed)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval_bench", description=__doc__)
    parser.add_argument("--quality", action="store_true", help="only the quality part")
    parser.add_argument("--latency", action="store_true", help="only the latency part")
    parser.add_argument("--ingest", action="store_true", help="only the ingest part")
    parser.add_argument("--n", type=int, default=100_000, help="chunks in the latency store")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--copies", type=int, default=20, help="demo corpus copies to ingest")
    parser.add_argument("--words", type=Path, default=WORDS, help="CSV to take words from")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--store",
        default=None,
        metavar="postgresql://…",
        help="run on this PostgreSQL database (throw-away schemas) instead of SQLite",
    )
    args = parser.parse_args(argv)
    if args.store is not None and not args.store.startswith(("postgresql://", "postgres://")):
        parser.error("--store takes a postgresql:// URL (SQLite is the default)")
    chosen = {p for p in ("quality", "latency", "ingest") if getattr(args, p)}
    parts = chosen or {"quality", "latency", "ingest"}
    figures: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_average(),
        },
    }
    Console().print(f"load average at start: {load_average()}", highlight=False)
    if "latency" in parts:
        figures["latency"] = latency(args.n, args.dim, args.queries, args.words, args.store)
        _print_latency(figures["latency"])
    if "ingest" in parts:
        r = figures["ingest"] = ingest_throughput(args.copies, args.store)
        Console().print(
            f"ingest: {r['files']} files, {r['chunks']} chunks in {r['seconds']} s = "
            f"[bold]{r['chunks_per_s']} chunks/s[/] ({r['files_per_s']} files/s; MiniLM in "
            f"{r['precision']}, loaded in {r['model_load_s']} s before); unchanged re-ingest "
            f"{r['reingest_unchanged_s']} s",
            highlight=False,
        )
    if "quality" in parts:
        figures["quality"] = evaluate_quality(store_url=args.store)
        _print_quality(figures["quality"])
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
