"""``erpoz schema config|policy|flow``: the JSON Schema of a configuration file, for editors.

Mounted through ``lazy.py``. Exit codes: 0 written · 2 wrong usage (an unknown kind, a file that
cannot be written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._console import EXIT_INVALID, fail, out


def schema_command(
    kind: Annotated[str, typer.Argument(help="config (erpoz.yaml), policy or flow")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (it always is)")] = False,
) -> None:
    """Print (or write) the JSON Schema of erpoz.yaml, a policy file or a YAML flow, so an
    editor can complete and check the file (e.g. the YAML language server's
    ``# yaml-language-server: $schema=flow.schema.json``).

    [dim]Example:[/] erpoz schema flow -o flow.schema.json
    """
    from ..schema import KINDS, json_schema

    if kind not in KINDS:
        fail(f"unknown schema {kind!r}: choose {', '.join(KINDS)}", EXIT_INVALID)
    text = json.dumps(json_schema(kind), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"--output {output}: cannot write it: {exc.strerror or exc}", EXIT_INVALID)
    out.print(f"wrote the {kind} schema to {output}", highlight=False)
