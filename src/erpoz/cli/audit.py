"""``erpoz audit``: verify the run store (hash chains, seals, the Merkle tree, signed
checkpoints), sign checkpoints, prove a run's events to an auditor and check such a proof
offline, export records for auditors, and trace the lineage of a step's output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from ..audit import AuditReport, Lineage, StepLineage, UnknownStep, export, lineage, verify
from ..audit.bundle import BundleError, check_bundle, load_bundle, prove
from ..audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointLog,
    PublicKey,
    SigningKey,
    generate_key,
    read_checkpoints,
    sign_checkpoint,
    write_checkpoint,
)
from ..audit.settings import AuditSettings, audit_settings
from ..errors import ConfigError, ErpozError, FlowError, RunError, StoreError
from ..store import Store
from ._console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_RUN,
    EXIT_STORE,
    JsonOpt,
    StoreOpt,
    err,
    fail,
    open_or_fail,
    out,
    parse_since,
)

audit_app = typer.Typer(
    help="Tamper evidence: verify the log, sign checkpoints, prove runs to auditors, export "
    "records.\n\n[dim]Example:[/] erpoz audit verify --all --checkpoint audit/checkpoints.jsonl",
    no_args_is_help=True,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Project file (its audit: section) \\[default: $ERPOZ_CONFIG or ./erpoz.yaml]",
        show_default=False,
    ),
]
PublicKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The key checkpoints must be signed with (PEM) \\[default: audit.public_key, else "
        "audit.key's, in erpoz.yaml]",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="The signing key (PEM) \\[default: audit.key or audit.key_env in erpoz.yaml]",
        show_default=False,
    ),
]


def _settings(config: str | None) -> AuditSettings | None:
    from ..models import load_config

    try:
        return audit_settings(load_config(config))
    except ConfigError as exc:
        fail(str(exc), EXIT_INVALID)


def _trusted(public_key: Path | None, config: str | None) -> PublicKey:
    """The key checkpoints must be signed with: ``--public-key``, else the project's."""
    try:
        if public_key is not None:
            return PublicKey.load(public_key)
        settings = _settings(config)
        if settings is None:
            fail(
                "a checkpoint is checked against a public key you trust: pass --public-key FILE, "
                "or set audit.public_key (or audit.key) in erpoz.yaml",
                EXIT_INVALID,
            )
        return settings.trusted_key()
    except (CheckpointError, ConfigError) as exc:
        fail(str(exc), EXIT_INVALID)


def _signing_key(key: Path | None, settings: AuditSettings | None) -> SigningKey:
    try:
        if key is not None:
            return SigningKey.load(key)
        if settings is None:
            fail(
                "no signing key: pass --key FILE, or set audit.key (or audit.key_env) in "
                "erpoz.yaml; make a key with `erpoz audit keygen`",
                EXIT_INVALID,
            )
        return settings.signing_key()
    except (CheckpointError, ConfigError) as exc:
        fail(str(exc), EXIT_INVALID)


def _read_checkpoints(paths: list[Path]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for p in paths:
        try:
            found += read_checkpoints(p)
        except CheckpointError as exc:
            fail(str(exc), EXIT_INVALID)
    return found


def _busy(what: str, quiet: bool) -> contextlib.AbstractContextManager[object]:
    """A spinner on a terminal while something takes a while."""
    if quiet or not err.is_terminal:
        return contextlib.nullcontext()
    return err.status(what)


async def _verify(
    store: Store, run_id: str | None, checkpoints: list[Checkpoint], key: PublicKey | None
) -> AuditReport:
    try:
        if run_id is not None:
            info = await store.get_run(run_id)
            if info is None:
                raise LookupError(f"no run {run_id!r} in {store.url}")
            run_id = info.run_id
        return await verify(store, run_id, checkpoints=checkpoints, public_key=key)
    finally:
        await store.close()


@audit_app.command("verify")
def verify_cmd(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="One run (a unique prefix works).")
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the store.")] = False,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A signed checkpoint (a file, a JSON-lines log of them, or a directory): "
            "prove the log extends each one (repeatable).",
        ),
    ] = None,
    public_key: PublicKeyOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute hash chains, check recorded heads and that finished runs are sealed, recompute
    the Merkle tree over the whole log, and with --checkpoint prove that the log extends each
    signed checkpoint (nothing before it changed, re-chained, removed, reordered or rolled
    back). Names the first event that does not check out. Exit 0 when everything checks out,
    1 when not.

    [dim]Example:[/] erpoz audit verify --all --checkpoint audit/checkpoints.jsonl --json
    """
    if (run_id is None) == (not all_runs):
        fail("give a RUN or --all", EXIT_INVALID)
    checkpoints = _read_checkpoints(checkpoint or [])
    key = _trusted(public_key, config) if checkpoints else None
    st = open_or_fail(store)
    try:
        with _busy("verifying the log", as_json):
            report = asyncio.run(_verify(st, run_id, checkpoints, key))
    except LookupError as exc:
        fail(str(exc), 5)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        out.print_json(data=report.to_json())
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_report(report: AuditReport) -> None:
    rate = f"{report.events / report.seconds:,.0f} events/s" if report.seconds else ""
    if report.ok:
        out.print(
            f"[green]ok[/]: {report.runs} runs, {report.events} events verified "
            f"({report.seconds * 1000:.1f} ms, {rate})"
        )
    else:
        named = len({p.run_id for p in report.problems if p.run_id})
        whole = sum(1 for p in report.problems if not p.run_id)
        parts = [f"{named} of {report.runs} runs do not check out"] if named else []
        parts += [f"{whole} problems of the log as a whole"] if whole else []
        out.print(f"[red]FAILED[/]: {'; '.join(parts)}")
        for p in report.problems:
            out.print(f"  {escape(str(p))}", highlight=False)
    if report.tree_size is not None:
        out.print(
            f"merkle tree: {report.tree_size} events, root {report.root} (log {report.origin})",
            highlight=False,
        )
    for c in report.checkpoints:
        mark = "[green]ok[/]" if c.ok else "[red]FAILED[/]"
        out.print(f"checkpoint {c.checkpoint.time}: {mark}: {escape(c.detail)}", highlight=False)
    out.print(f"heads digest: {report.heads_digest}", highlight=False)


# --- keys and checkpoints -------------------------------------------------------------------------
@audit_app.command("keygen")
def keygen_cmd(
    output: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the private key (PEM).")
    ] = Path("audit.key"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make an Ed25519 key pair for signing checkpoints: the private key (PEM, readable by its
    owner only) and its public half next to it (.pub), which auditors and `verify` trust. Keep
    the private key off the database's machine if you can: whoever holds it can vouch for a
    rewritten log. Exit 2 when a key file exists (without --force).

    [dim]Example:[/] erpoz audit keygen -o /etc/erpoz/audit.key
    """
    public = output.with_suffix(".pub") if output.suffix == ".key" else Path(f"{output}.pub")
    for path in (output, public):
        if path.exists() and not force:
            fail(
                f"{path} exists: pass --force to replace it (checkpoints signed with the old key "
                "then need the old public key to verify)",
                EXIT_INVALID,
            )
    key = generate_key()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if force:
            output.unlink(missing_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.pem())
        public.write_bytes(key.public_key.pem())
    except OSError as exc:
        fail(f"cannot write the key: {exc}", EXIT_FAILED)
    if as_json:
        out.print_json(data={"key": str(output), "public_key": str(public), "key_id": key.key_id})
        return
    out.print(f"signing key: {output} (key id {key.key_id}; keep it secret)", highlight=False)
    out.print(
        f"public key:  {public} (give it to whoever checks your checkpoints)", highlight=False
    )
    out.print("in erpoz.yaml:", highlight=False)
    out.print(
        f"  audit:\n    key: {output}\n    public_key: {public}\n"
        "    checkpoints: audit/checkpoints.jsonl   # outside the database; ship it elsewhere\n"
        "    every_events: 10000\n    every_seconds: 300",
        highlight=False,
        markup=False,
    )


@audit_app.command("checkpoint")
def checkpoint_cmd(
    output: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Append it to this file (or a directory, DIR/: one file each) instead of "
            "audit.checkpoints (and no witness).",
        ),
    ] = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign the log's Merkle tree as it is now (its size, root and the time) and keep the
    checkpoint outside the database: appended to audit.checkpoints in erpoz.yaml (or --out),
    and POSTed to audit.witness when one is set. Exit 1 when it cannot be written or the
    witness refuses it, 2 without a key or a place to keep it.

    [dim]Example:[/] erpoz audit checkpoint --json
    """
    settings = _settings(config)
    signing = _signing_key(key, settings)
    sink = CheckpointLog(output) if output is not None else settings.sink() if settings else None
    witness = settings.witness if settings is not None and output is None else None
    if sink is None and witness is None:
        fail(
            "nowhere to keep the checkpoint: set audit.checkpoints (a file or directory outside "
            "the store) or audit.witness in erpoz.yaml, or pass --out FILE",
            EXIT_INVALID,
        )
    st = open_or_fail(store)

    async def sign() -> Checkpoint:
        try:
            return await sign_checkpoint(st, signing)
        finally:
            await st.close()

    try:
        cp = asyncio.run(sign())
    except (StoreError, CheckpointError) as exc:
        fail(str(exc), EXIT_STORE)
    try:
        written = asyncio.run(write_checkpoint(cp, sink, witness))
    except CheckpointError as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        out.print_json(data={**cp.to_json(), "written": list(written)})
        return
    out.print(
        f"checkpoint: {cp.size} events, root {cp.root.hex()}, {cp.time}, key {cp.key_id}",
        highlight=False,
    )
    for where in written:
        out.print(f"  kept in {escape(where)}", highlight=False)


# --- proofs for auditors --------------------------------------------------------------------------
def _checkpoint_for_proofs(
    checkpoint: Path | None, key: Path | None, config: str | None, store: Store
) -> Checkpoint:
    """The newest checkpoint of ``--checkpoint``, else a new one signed with the project's key
    (kept where audit.checkpoints says)."""
    if checkpoint is not None:
        return _read_checkpoints([checkpoint])[-1]
    settings = _settings(config)
    signing = _signing_key(key, settings)

    async def sign() -> Checkpoint:
        cp = await sign_checkpoint(store, signing)
        if settings is not None and (settings.checkpoints or settings.witness):
            await write_checkpoint(cp, settings.sink(), settings.witness)
        return cp

    try:
        return asyncio.run(sign())
    except (StoreError, CheckpointError) as exc:
        fail(str(exc), EXIT_STORE)


@audit_app.command("prove")
def prove_cmd(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run (a unique prefix works).")],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the bundle here, not to stdout.")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Prove against the newest checkpoint in this file or directory instead of "
            "signing a new one.",
        ),
    ] = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With --out: print a JSON summary (run, events, checkpoint, output) instead of "
            "a line of text. The bundle itself is JSON either way.",
        ),
    ] = False,
) -> None:
    """Write a proof bundle of a run for an auditor: its events (their exact content), each
    with its inclusion proof in the Merkle tree, and the signed checkpoint they lead to. The
    auditor checks it without the database (`erpoz audit check`). Without --checkpoint a new
    checkpoint is signed with the project's key (and kept where audit.checkpoints says).
    Exit 1 when the store does not match the checkpoint, 5 for an unknown run.

    [dim]Example:[/] erpoz audit prove r1a2121f8760 -o r1a2121f8760.proof.json
    """
    st = open_or_fail(store)
    try:
        cp = _checkpoint_for_proofs(checkpoint, key, config, st)

        async def make() -> dict[str, object]:
            return await prove(st, run_id, cp)

        with _busy("proving", output is None):
            bundle = asyncio.run(make())
    except RunError as exc:
        fail(str(exc), EXIT_RUN)
    except BundleError as exc:
        fail(str(exc), EXIT_FAILED)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    finally:
        asyncio.run(st.close())
    text = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", EXIT_FAILED)
    events = bundle["events"]
    assert isinstance(events, list)
    if as_json:
        summary = {"run_id": bundle["run_id"], "events": len(events), "output": str(output)}
        checkpoint_of = {"time": cp.time, "size": cp.size, "root": cp.root.hex()}
        out.print_json(data={**summary, "checkpoint": checkpoint_of})
        return
    err.print(
        f"{len(events)} events of run {bundle['run_id']} proved against the checkpoint of "
        f"{cp.time} ({cp.size} events) → {output}",
        highlight=False,
    )


@audit_app.command("check")
def check_cmd(
    bundle: Annotated[Path, typer.Argument(help="A proof bundle (erpoz audit prove).")],
    public_key: PublicKeyOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a proof bundle offline, without the database: the checkpoint's signature (with
    the public key you trust), every event's hash and link to the one before, every inclusion
    proof. Says whether the bundle is the whole run (it ends with the run's terminal event).
    Exit 0 when it checks out, 1 when not, 2 when the file is not a bundle or no key is given.

    [dim]Example:[/] erpoz audit check r1a2121f8760.proof.json --public-key audit.pub
    """
    key = _trusted(public_key, config)
    try:
        doc = load_bundle(bundle.read_text(encoding="utf-8"), str(bundle))
        result = check_bundle(doc, key, str(bundle))
    except OSError as exc:
        fail(f"cannot read {bundle}: {exc.strerror}", EXIT_INVALID)
    except BundleError as exc:
        fail(str(exc), EXIT_INVALID)
    if as_json:
        out.print_json(data=result.to_json())
    else:
        cp = result.checkpoint
        assert cp is not None
        if result.ok:
            out.print(
                f"[green]ok[/]: run {result.run_id}: {result.events} events, each in the log "
                f"signed at {cp.time} ({cp.size} events, key {cp.key_id}); {result.outcome}",
                highlight=False,
            )
        else:
            out.print(f"[red]FAILED[/]: run {escape(result.run_id)}", highlight=False)
            for p in result.problems:
                out.print(f"  {escape(p)}", highlight=False)
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("export")
def export_cmd(
    since: Annotated[
        str, typer.Option(help="Runs created in this span before now: 30m, 24h, 7d, …")
    ] = "24h",
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one record per event)")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    proofs: Annotated[
        bool,
        typer.Option(
            "--proofs",
            help="Add each event's leaf and inclusion proof; the first line is the signed "
            "checkpoint they lead to (--checkpoint, else a new one).",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="With --proofs: the newest checkpoint in this file."),
    ] = None,
    key: KeyOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With --output: print a JSON summary (records, output, since) instead of a "
            "line of text. The records themselves are JSON lines either way.",
        ),
    ] = False,
) -> None:
    """Export what record-keeping for an AI system needs: timestamps, flow and inputs, model
    calls, decisions, reviewers, outputs, and each event's hash; with --proofs, each event's
    inclusion proof and the signed checkpoint it leads to.

    [dim]Example:[/] erpoz audit export --since 7d -o audit.jsonl --json ·
    erpoz audit export --since 7d --proofs -o audit.jsonl
    """
    if fmt != "jsonl":
        fail(f"--format {fmt!r}: only jsonl is supported", EXIT_INVALID)
    if output is not None and output.is_dir():
        fail(f"--output {output}: is a folder; give a file to write", EXIT_INVALID)
    if checkpoint is not None and not proofs:
        fail("--checkpoint goes with --proofs", EXIT_INVALID)
    try:
        cutoff = time.time() - parse_since(since)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)
    cp = _checkpoint_for_proofs(checkpoint, key, config, st) if proofs else None

    async def collect() -> list[str]:
        try:
            head = [] if cp is None else [{"record": "checkpoint", "checkpoint": cp.to_json()}]
            records = [*head, *await export(st, since=cutoff, checkpoint=cp)]
            return [json.dumps(r, ensure_ascii=False) for r in records]
        finally:
            await st.close()

    try:
        with _busy("exporting", output is None):
            lines = asyncio.run(collect())
    except (StoreError, ErpozError) as exc:
        fail(str(exc), EXIT_STORE)
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"--output {output}: cannot write it: {exc.strerror or exc}", EXIT_INVALID)
        if as_json:
            summary = {"records": len(lines), "output": str(output), "since": since}
            out.print_json(data={**summary, "cutoff_ts": cutoff})
        else:
            err.print(f"{len(lines)} records written to {output}")


# --- erpoz audit lineage --------------------------------------------------------------------------
@audit_app.command("lineage")
def lineage_cmd(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run (a unique prefix works).")],
    step: Annotated[
        str,
        typer.Argument(
            metavar="STEP",
            help="A step of the run, or one execution of it: answer[3], revise#2, sub/inner.",
        ),
    ],
    flow: Annotated[
        str | None,
        typer.Option(
            "--flow",
            help="Take the graph from this flow (file.yaml, module:attr, file.py:attr) instead "
            "of the source the run recorded.",
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which inputs, models, tools and decisions produced a step's output: the step, the steps
    upstream of it in the flow's graph, and for each its output hash, model calls, routing,
    tool calls, policy, guard and review decisions; the run's inputs (hashed) and tags.

    [dim]Example:[/] erpoz audit lineage r1a2121f8760 reply --json
    """
    given = None
    if flow is not None:
        from ..flow import load_flow

        try:
            given = load_flow(flow)
        except FlowError as exc:
            fail(str(exc), EXIT_INVALID)
    st = open_or_fail(store)

    async def trace() -> Lineage:
        try:
            return await lineage(st, run_id, step, flow=given)
        finally:
            await st.close()

    try:
        result = asyncio.run(trace())
    except RunError as exc:
        fail(str(exc), EXIT_RUN)
    except UnknownStep as exc:
        fail(str(exc), EXIT_INVALID)
    except StoreError as exc:
        fail(str(exc), EXIT_STORE)
    if as_json:
        out.print_json(data=result.to_json())
        return
    _print_lineage(result)


def _print_lineage(lin: Lineage) -> None:
    graph = lin.graph if lin.graph_note is None else f"{lin.graph} ({lin.graph_note})"
    out.print(
        f"run {lin.run_id} · flow {escape(lin.flow)} · {lin.run_status} · graph: {escape(graph)}",
        highlight=False,
    )
    inputs = ", ".join(f"{escape(i['name'])} {i['sha256'][:12]}" for i in lin.inputs) or "none"
    out.print(f"inputs: {inputs}", highlight=False)
    if lin.tags:
        tags = ", ".join(f"{escape(k)}={escape(v)}" for k, v in lin.tags.items())
        out.print(f"tags: {tags}", highlight=False)
    label = lin.step.step if lin.execution is None else f"{lin.step.step} ({lin.execution})"
    root = Tree(_step_label(lin.step, label))
    _add_records(root, lin.step)
    if lin.upstream:
        branch = root.add(f"[bold]upstream[/] ({len(lin.upstream)} steps, dependency order)")
        for up in lin.upstream:
            _add_records(branch.add(_step_label(up, up.step)), up)
    else:
        root.add("[dim]no upstream steps: it reads only the run's inputs[/]")
    out.print(root, highlight=False)


def _step_label(s: StepLineage, name: str) -> str:
    parts = [f"[bold]{escape(name)}[/]", s.status]
    if s.output_sha256 is not None:
        parts.append(f"output {s.output_sha256[:12]} ({s.output_bytes} B)")
    if s.cached:
        parts.append("cached")
    if s.copied_from:
        parts.append(f"copied from {s.copied_from}")
    if s.deps:
        parts.append("needs " + ", ".join(escape(d) for d in s.deps))
    many = [x for x in s.executions if x["execution"] != s.step]
    if many:
        parts.append(f"{len(many)} execution{'s' if len(many) != 1 else ''}")
    return " · ".join(parts)


def _add_records(node: Tree, s: StepLineage) -> None:
    if s.label == "untrusted":
        whence = [escape(x) for x in s.sources] + [f"step {escape(x)}" for x in s.from_steps]
        node.add(f"[yellow]provenance untrusted[/] · from {', '.join(whence)}")
    for c in s.contained:
        text = f"containment {escape(str(c.get('resource')))}: {c.get('action')}"
        if c.get("blocked"):
            text += " · untrusted " + ", ".join(escape(str(b)) for b in c["blocked"])
        node.add(text + f" (rule {escape(str(c.get('rule')))})" + _at(c, s))
    for m in s.models:
        node.add(_model_line(m) + _at(m, s))
    for r in s.routes:
        node.add(
            f"route {escape(str(r.get('router')))} → {escape(str(r.get('winner')))}: "
            f"{escape(str(r.get('reason', '')))}" + _at(r, s)
        )
    for t in s.tools:
        node.add(_tool_line(t) + _at(t, s))
    for w in s.memory:
        node.add(_memory_line(w) + _at(w, s))
    for p in s.policy:
        node.add(
            f"policy {escape(str(p.get('resource')))}: {p.get('action')} "
            f"(rule {escape(str(p.get('rule')))})" + _at(p, s)
        )
    for g in s.guards:
        kinds = ", ".join(g.get("findings", [])) or "clean"
        node.add(
            f"guard {g.get('checkpoint')}: {g.get('action')} · {escape(kinds)}"
            + (f" (rule {escape(str(g['rule']))})" if g.get("rule") else "")
            + _at(g, s)
        )
    for x in s.escalations:
        node.add(f"escalated {x.get('from')} → {x.get('to')} (rule {x.get('rule')})" + _at(x, s))
    for r in s.reviews:
        if r["event"] == "requested":
            text = f"review requested: {escape(str(r.get('reason', '')))}"
        else:
            text = f"review {r.get('decision')} by {escape(str(r.get('reviewer')))}"
        node.add(text + _at(r, s))


def _model_line(m: dict[str, Any]) -> str:
    text = f"model {escape(str(m.get('model')))}"
    if m.get("kind"):
        text += f" ({escape(str(m['kind']))})"
    if "status" in m:
        text += f" {escape(str(m['status']))}"
    if "input_tokens" in m or "output_tokens" in m:
        text += f" · {m.get('input_tokens', 0)} in / {m.get('output_tokens', 0)} out tok"
    cost = m.get("cost_usd")
    if isinstance(cost, int | float):
        text += f" · ${cost:.6f}"
    return text


def _tool_line(t: dict[str, Any]) -> str:
    text = f"tool {escape(str(t.get('tool')))}"
    if "status" in t:
        text += f" {escape(str(t['status']))}"
    if "result_bytes" in t:
        text += f" · {t['result_bytes']} B result"
    if t.get("repeat"):
        text += f" · repeated after a crash or error ({t['repeat']}×, same key)"
    return text


def _memory_line(w: dict[str, Any]) -> str:
    text = f"memory {escape(str(w.get('op')))}"
    if w.get("session"):
        text += f" session {escape(str(w['session']))}"
    if "seq" in w:
        text += f" turn {w['seq']}"
    if w.get("source"):
        text += f" {escape(str(w['source']))}"
    if isinstance(w.get("files"), list):
        text += f" · {len(w['files'])} file(s)"
    return text


def _at(record: dict[str, object], s: StepLineage) -> str:
    where = record.get("execution")
    return f" [dim]@ {escape(str(where))}[/]" if where and where != s.step else ""
