from __future__ import annotations

from pathlib import Path

import pytest

from ._helpers import ERPOZ, Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The ``erpoz`` command, run in this process against ``tmp_path/x.db``."""
    return Cli(tmp_path)


@pytest.fixture
def real_cli(tmp_path: Path) -> Cli:
    """The ``erpoz`` command, run as a subprocess against ``tmp_path/x.db``."""
    assert ERPOZ.exists(), f"console script missing: {ERPOZ} (pip install -e '.[dev]')"
    return Cli(tmp_path, real=True)
