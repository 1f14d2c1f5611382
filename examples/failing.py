"""A flow whose second step fails, for docs/cli.md: ``erpoz run examples/failing.py:flow -i x=3``
shows how a failed run is reported (and ``erpoz runs replay RUN --from boom`` retries it)."""

from __future__ import annotations

from erpoz import Flow, step


@step
def check(x: int) -> int:
    return x


@step
def boom(x: int) -> int:
    if x % 2:
        raise ValueError(f"bad value {x}")
    return x // 2


flow = Flow("failing", inputs={"x": int})
flow.output(flow.add(boom, x=flow.add(check, x=flow.input("x"))))
