"""``erpoz ingest`` (files into the memory database) and ``erpoz search`` (passages from it).
Mounted by :mod:`erpoz.cli` with :func:`register`; :data:`memory_cli` holds the same two
commands on their own (for tests).

Exit codes as for every erpoz command: 0 ok · 1 a file failed to ingest (the others were
ingested), the memory is empty, or the embedding model failed · 2 usage · 4 the memory database
cannot be opened.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ErpozError, StoreError
from ..memory import FileResult, Memory, QueryError, open_memory
from ._console import EXIT_FAILED, EXIT_INVALID, EXIT_STORE, JsonOpt, err, fail, out

__all__ = ["ingest_command", "memory_cli", "register", "search_command"]

MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--memory",
        "-m",
        help="Memory database: a SQLite path, postgresql://… or 'memory' \\[default: "
        "$ERPOZ_MEMORY or .erpoz/memory.db]",
        show_default=False,
    ),
]


class Mode(StrEnum):
    hybrid = "hybrid"
    vector = "vector"
    keyword = "keyword"


def make_embedder() -> Any:
    """The embedder of the CLI: the local MiniLM (loaded when first needed)."""
    from ..models.local_embed import MiniLMEmbed

    return MiniLMEmbed()


def _open(memory: str | None) -> Memory:
    try:
        return open_memory(memory, embedder=make_embedder())
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_MARK = {"ingested": "[green]✓[/]", "unchanged": "[dim]=[/]", "forgotten": "[yellow]-[/]"}


def ingest_command(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Files and folders (walked).")
    ],
    memory: MemoryOpt = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Forget stored documents under PATH whose file is gone."),
    ] = False,
    max_mb: Annotated[
        float, typer.Option("--max-mb", help="Refuse files larger than this (MB).")
    ] = 50.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Ingest files into the memory database: text, Markdown, HTML, PDF and images (OCR).
    Changed files replace their chunks, unchanged ones are skipped; a file that fails is
    reported and the others go on (exit 1).

    [dim]Example:[/] erpoz ingest docs/ handbook.pdf --memory .erpoz/memory.db
    """
    if max_mb <= 0:
        fail(f"--max-mb must be positive, not {max_mb:g}", EXIT_INVALID)
    mem = _open(memory)
    try:
        ingestor = mem.ingestor(max_bytes=int(max_mb * 1_000_000), root=Path.cwd())
        planned = ingestor.plan(paths)
        show = progress and not as_json and err.is_terminal
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True, disable=not show) as bar:
            task = bar.add_task("ingesting", total=len(planned))

            def on_file(result: FileResult) -> None:
                if result.status != "forgotten":
                    bar.update(task, advance=1, description=escape(result.source)[-50:])

            report = ingestor.ingest(paths, prune=prune, on_file=on_file, planned=planned)
    finally:
        mem.close()
    if as_json:
        out.print_json(data={"memory": mem.path, **report.to_json()})
    else:
        for f in report.files:
            if f.status == "failed":
                err.print(
                    f"[red]✗[/] {escape(f.source)}: {escape(f.reason or '')}", highlight=False
                )
            elif f.status == "ingested" or f.status == "forgotten":
                note = f" ({'; '.join(f.notes)})" if f.notes else ""
                what = _count(f.chunks, "chunk") if f.status == "ingested" else "forgotten"
                out.print(
                    f"{_MARK[f.status]} {escape(f.source)}: {what}{escape(note)}", highlight=False
                )
        out.print(f"{report.summary()} → {escape(mem.path)}", highlight=False)
    if not planned and not report.files:
        fail("nothing to ingest: the paths given hold no files", EXIT_FAILED)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def search_command(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="What to look for.")],
    mode: Annotated[Mode, typer.Option(help="vector, keyword (BM25) or hybrid (both).")] = (
        Mode.hybrid
    ),
    k: Annotated[int, typer.Option("-k", "--top", help="How many passages.", min=1)] = 5,
    source: Annotated[
        str | None, typer.Option(help="Only documents whose source matches this pattern.")
    ] = None,
    mmr: Annotated[
        float | None,
        typer.Option(help="Diversify: 1 = relevance only … 0 = diversity only.", min=0, max=1),
    ] = None,
    memory: MemoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the memory database: the best passages for QUERY, with where they come from
    (source, headings, page, span) and their score.

    [dim]Example:[/] erpoz search "how long does a refund take" -k 3
    """
    mem = _open(memory)
    t0 = time.perf_counter()
    try:
        if not mem.documents_sync():
            fail(
                f"the memory {mem.path} holds no documents; add some with `erpoz ingest PATH`",
                EXIT_FAILED,
            )
        filters = {"source": source} if source else None
        hits = mem.search_sync(query, k=k, mode=mode.value, filters=filters, mmr=mmr)
    except QueryError as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    except ErpozError as exc:
        fail(str(exc), EXIT_FAILED)
    finally:
        mem.close()
    ms = (time.perf_counter() - t0) * 1000
    if as_json:
        out.print_json(
            data={
                "query": query,
                "mode": mode.value,
                "k": k,
                "ms": round(ms, 1),
                "hits": [h.to_json() for h in hits],
            }
        )
        return
    if not hits:
        out.print(f"no passage matches {query!r} ({mode.value} search)", highlight=False)
        return
    for rank, hit in enumerate(hits, start=1):
        out.print(
            f"[bold]{rank}.[/] {escape(hit.location)}  [dim]{hit.id} · score {hit.score:.4f}[/]",
            highlight=False,
        )
        text = " ".join(hit.text.split())
        out.print("   " + escape(text if len(text) <= 400 else text[:399] + "…"), highlight=False)
    out.print(f"[dim]{_count(len(hits), 'passage')}, {mode.value} search, {ms:.0f} ms[/]")


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``search`` to the ``erpoz`` command."""
    app.command("ingest")(ingest_command)
    app.command("search")(search_command)


memory_cli = typer.Typer(
    help="Memory: ingest documents and search them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
register(memory_cli)
