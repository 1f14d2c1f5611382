"""The flow schedules start in the schedule tests (loaded by file path, in-process and by the
`erpoz worker` subprocesses alike).

``stamp``'s one step appends ``run_id`` to ``$ERPOZ_TEST_EXEC_LOG``. When
``$ERPOZ_TEST_SCHEDULE_GATE`` names a file, importing this module waits until that file
exists: a worker that claimed a tick stays between the claim and the submission of its run
(it loads the flow there) until the test opens the gate — the moment the crash test kills it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from erpoz import Context, Flow, step

HERE = Path(__file__).resolve()

_gate = os.environ.get("ERPOZ_TEST_SCHEDULE_GATE")
while _gate and not Path(_gate).exists():
    time.sleep(0.02)


@step
def note(who: str, ctx: Context) -> str:
    path = os.environ.get("ERPOZ_TEST_EXEC_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{ctx.run_id}\n")
    return f"hello {who}"


stamp = Flow("stamp", inputs={"who": str}, source=f"{HERE}:stamp")
stamp.add(note, id="note", who=stamp.input("who"))
