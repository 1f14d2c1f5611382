"""docs/integrations/kubeflow.md: its example compiles and runs the flow with kfp's local
runner, as written, in a folder holding a copy of examples/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

if os.environ.get("ERPOZ_TEST_KFP") == "required":
    import kfp  # noqa: F401
else:
    pytest.importorskip("kfp", reason="kfp runs in its own venv: make test-kfp")

from test_docs import fenced_blocks, run_printing

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "integrations" / "kubeflow.md"


def test_the_example_compiles_and_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = fenced_blocks(PAGE.read_text(encoding="utf-8"))
    (code,) = [b for lang, b in blocks if lang == "python"]
    (shown,) = [b for lang, b in blocks if lang == "text"]
    (tmp_path / "examples").mkdir()
    for name in ("triage.yaml", "triage_steps.py"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "examples" / name)
    monkeypatch.chdir(tmp_path)
    printed = run_printing(code, "docs/integrations/kubeflow.md (python block)")
    assert printed.strip().splitlines()[-1] == shown.strip()
    spec = yaml.safe_load((tmp_path / "triage_pipeline.yaml").read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["ticket"]["parameterType"] == "STRING"
    assert (tmp_path / ".erpoz" / "kfp.db").exists()
