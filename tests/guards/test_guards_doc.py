"""docs/guards.md: its example runs and says what it prints."""

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).parents[2] / "docs" / "guards.md"


def test_the_example_runs_and_prints_what_it_says() -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(DOC), "exec"), {"__name__": "guards_doc"})
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    assert printed.getvalue().splitlines() == expected
