"""Commands of the ``erpoz`` CLI that live in other modules are imported when they run (or when
their own ``--help`` is asked for), not when ``erpoz`` starts: ``erpoz --help`` and ``erpoz run``
do not pay for the model registry, the memory, the server, the audit or the evaluation.

A group built with ``cls=LazyGroup`` lists its lazy commands next to its own, in :data:`ORDER`;
its ``--help`` shows them with the one-line help kept here (a test checks it is the commands'
own), and looking one up by name imports its module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer import _click as click  # typer 0.29 carries its own click
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command (a function) or a group of commands (a ``typer.Typer``) of another module."""

    module: str
    attr: str
    help: str
    """The first paragraph of its help, as ``erpoz --help`` shows it (``test_cli_lazy.py``
    checks it is the command's own)."""


LAZY: dict[str, dict[str, Lazy]] = {
    "erpoz": {
        "demo": Lazy(
            ".demo",
            "demo",
            "Run the offline demo: ingest a corpus, read a scanned invoice, answer "
            "with citations,\n"
            "and show guards, review and audit at work (about 30 s; nothing is "
            "downloaded).",
        ),
        "trace": Lazy(
            ".trace",
            "trace",
            "Show a run's OpenTelemetry spans (run, steps, model and tool calls, "
            "guards, reviews),\n"
            "derived from its event log; export them over OTLP/HTTP when an "
            "endpoint is configured.\n"
            "The trace id comes from the run id: exporting again gives the same "
            "trace.",
        ),
        "serve": Lazy(
            ".serve",
            "serve",
            "Serve the runs API, the OpenAI-compatible gateway (/v1), the dashboard and /metrics.",
        ),
        "submit": Lazy(
            ".worker",
            "submit",
            "Queue a run of a flow for a worker (`erpoz worker`) and print its id.",
        ),
        "worker": Lazy(
            ".worker",
            "worker",
            "Take runs from the queues of a shared store and run them until stopped.",
        ),
        "limits": Lazy(
            ".worker",
            "limits_command",
            "Show every limit as it stands: the models' limits of the project file and those the\n"
            "store keeps (workers' --rate and --max-running), each with its use now and its room.",
        ),
        "migrate": Lazy(
            ".migrate",
            "migrate_command",
            "Copy a run store into another — SQLite into PostgreSQL, back, or "
            "between two stores of\n"
            "one kind — and verify the audit chains on both sides. The source must "
            "verify first (else it\n"
            "is refused, naming the first bad event, unless --force). Runs already "
            "in the destination are\n"
            "skipped and runs that grew get their new events; a run whose events "
            "differ stops everything\n"
            "before anything is written. Nothing in the destination is overwritten "
            "or deleted, so the same\n"
            "command continues an interrupted migration. Runs a live process owns "
            "are left behind unless\n"
            "--include-active. Afterwards the copied runs' chains and heads are "
            "checked in the destination.",
        ),
        "ingest": Lazy(
            ".memory",
            "ingest_command",
            "Ingest files into the memory database: text, Markdown, HTML, PDF and "
            "images (OCR).\n"
            "Changed files replace their chunks, unchanged ones are skipped; a file "
            "that fails is\n"
            "reported and the others go on (exit 1).",
        ),
        "search": Lazy(
            ".memory",
            "search_command",
            "Search the memory database: the best passages for QUERY, with where "
            "they come from\n"
            "(source, headings, page, span) and their score.",
        ),
        "runs": Lazy(".runs", "runs_app", "List, inspect, resume, replay and cancel runs."),
        "review": Lazy(
            ".review",
            "review_app",
            "The human review queue: runs waiting for a person, and their decisions.",
        ),
        "models": Lazy(
            ".models",
            "models_app",
            "The models and routers of the project file (erpoz.yaml), and whether they answer.",
        ),
        "stats": Lazy(".models", "stats_app", "Statistics from the run store."),
        "audit": Lazy(
            ".audit",
            "audit_app",
            "Tamper evidence: verify the log, sign checkpoints, prove runs to "
            "auditors, export records.",
        ),
        "policy": Lazy(
            ".policy",
            "policy_app",
            "Policies: who may call which tool or model, and what happens to which data.",
        ),
        "eval": Lazy(".eval", "eval_app", "Measure erpoz on public data."),
        "schema": Lazy(
            ".schema",
            "schema_command",
            "Print (or write) the JSON Schema of erpoz.yaml, a policy file or a YAML flow, so an\n"
            "editor can complete and check the file (e.g. the YAML language server's\n"
            "``# yaml-language-server: $schema=flow.schema.json``).",
        ),
        "schedule": Lazy(
            ".schedule",
            "schedule_app",
            "Cron-style schedules that start runs of a flow: workers (erpoz worker) fire each "
            "tick once, however many share the store.",
        ),
        "mcp": Lazy(
            ".mcp",
            "mcp_app",
            "MCP: the tools of the project's MCP servers, and flows served to MCP clients.",
        ),
    },
    "runs": {
        "send": Lazy(
            ".waits",
            "runs_send",
            "Send a message to a run: kept until it takes it with ctx.recv; a run waiting for it\n"
            "wakes (a worker of its queue goes on at once, else `erpoz runs resume RUN`).",
        ),
        "event": Lazy(
            ".waits",
            "runs_event",
            "Print an event a run published (ctx.set_event); exit 3 when it is not set (yet, or\n"
            "set to null).",
        ),
        "wake": Lazy(
            ".waits",
            "runs_wake",
            "Resume, here, the sleeping runs whose wake time has come (runs of no queue: a worker\n"
            "wakes the runs of its queues itself). Run it from cron, or after a restart.",
        ),
        "version": Lazy(
            ".waits",
            "runs_version",
            "Show the flow version a run started on (fingerprint, version, patches), the plans it\n"
            "was resumed on, and the plan it would go on with now — or why it cannot.",
        ),
        "diff": Lazy(
            ".diff",
            "runs_diff",
            "Compare two runs: inputs, each step (status, attempts, time, output), "
            "the models called\n"
            "(calls, tokens, cost), the output and the total cost.",
        ),
    },
}
"""The lazy commands of each group (by the group's name)."""

ORDER = {
    "erpoz": [
        "run",
        "validate",
        "events",
        "demo",
        "trace",
        "serve",
        "submit",
        "worker",
        "limits",
        "migrate",
        "ingest",
        "search",
        "runs",
        "models",
        "stats",
        "audit",
        "review",
        "policy",
        "eval",
        "mcp",
        "schedule",
        "schema",
    ],
    "runs": [
        "ls",
        "show",
        "resume",
        "replay",
        "fork",
        "cancel",
        "diff",
        "send",
        "event",
        "wake",
        "version",
    ],
}
"""The order ``--help`` lists a group's commands in (others follow, in the order added)."""


def load(name: str, lazy: Lazy) -> click.Command:
    """The click command of a lazy entry (importing its module)."""
    obj: Any = getattr(importlib.import_module(lazy.module, "erpoz.cli"), lazy.attr)
    if isinstance(obj, typer.Typer):
        cmd: click.Command = typer.main.get_group(obj)
    else:
        holder = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)
        holder.command(name)(obj)
        cmd = typer.main.get_command(holder)
    cmd.name = name
    return cmd


class LazyGroup(TyperGroup):
    """A Typer group whose commands of :data:`LAZY` are imported on first use."""

    _listing = False

    def _lazy(self) -> dict[str, Lazy]:
        return LAZY.get(self.name or "", {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [*self.commands, *(n for n in self._lazy() if n not in self.commands)]
        order = {n: i for i, n in enumerate(ORDER.get(self.name or "", []))}
        return sorted(names, key=lambda n: order.get(n, len(order)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = self.commands.get(cmd_name)
        lazy = self._lazy().get(cmd_name)
        if cmd is not None or lazy is None:
            return cmd
        if self._listing:  # only its line in the list: no need to import it
            return TyperCommand(cmd_name, help=lazy.help)
        cmd = self.commands[cmd_name] = load(cmd_name, lazy)
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
