"""The review queue from the command line: list, show, approve, reject, edit; who decided."""

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erpoz import Engine, Flow, ReviewRequired, step
from erpoz.cli import app
from erpoz.store import open_store


@step
def draft(amount: int) -> str:
    if amount > 100:
        raise ReviewRequired(
            f"refund of {amount} EUR needs approval",
            output=f"Refunding {amount} EUR.",
            evidence={"limit": 100, "amount": amount},
        )
    return f"Refunding {amount} EUR."


# a source lets `erpoz review approve` (another "process") load the flow again
FLOW = Flow("refund", inputs={"amount": int}, source=f"{__name__}:FLOW")
FLOW.add(draft, amount=FLOW.input("amount"))


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[str, list[str]]:
    path = tmp_path / "r.db"

    async def main() -> list[str]:
        store = open_store(path)
        engine = Engine(store)
        ids = [(await engine.run(FLOW, {"amount": a})).run_id for a in (500, 50, 900)]
        await store.close()
        return ids

    return str(path), asyncio.run(main())


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "ERPOZ_REVIEWER": "ana"})
    return result.exit_code, result.output


def test_queue_lists_only_waiting_steps_with_reason_and_evidence(
    waiting: tuple[str, list[str]],
) -> None:
    store, ids = waiting
    code, text = invoke("review", "ls", "--store", store, "--json")
    assert code == 0
    items = json.loads(text)
    assert [i["run_id"] for i in items] == [ids[0], ids[2]]  # the 50 EUR run did not wait
    assert items[0]["step"] == "draft" and items[0]["reason"] == "refund of 500 EUR needs approval"
    assert items[0]["evidence"] == {"limit": 100, "amount": 500}
    assert items[0]["proposal"] == "Refunding 500 EUR."
    code, text = invoke("review", "show", ids[2], "--store", store)
    assert code == 0 and "refund of 900 EUR" in text and "Refunding 900 EUR." in text


def test_approve_reject_edit_record_the_reviewer(waiting: tuple[str, list[str]]) -> None:
    store, ids = waiting
    code, text = invoke("review", "approve", ids[0], "--comment", "checked", "--store", store)
    assert code == 0 and "succeeded" in text
    code, _ = invoke("review", "reject", ids[2], "--comment", "too much", "--store", store)
    assert code == 1

    async def resolved(run_id: str) -> dict[str, object]:
        s = open_store(store)
        try:
            (e,) = [e for e in await s.events(run_id) if e.kind == "review_resolved"]
            return e.data
        finally:
            await s.close()

    assert asyncio.run(resolved(ids[0]))["reviewer"] == "ana"
    rejected = asyncio.run(resolved(ids[2]))
    assert rejected["decision"] == "reject" and rejected["comment"] == "too much"
    code, text = invoke("review", "ls", "--store", store)
    assert code == 0 and "0 waiting" in text
    code, _ = invoke("review", "show", ids[0], "--store", store)
    assert code == 5  # nothing waits any more


def test_edit_checks_the_type_and_continues(waiting: tuple[str, list[str]], tmp_path: Path) -> None:
    store, ids = waiting
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"not": "a string"}')
    code, text = invoke("review", "edit", ids[0], "-f", str(wrong), "--store", store)
    assert code == 5 and "does not fit" in text
    fixed = tmp_path / "fixed.json"
    fixed.write_text('"Refunding 450 EUR (fee kept)."')
    code, text = invoke("review", "edit", ids[0], "-f", str(fixed), "--store", store, "--json")
    assert code == 0 and json.loads(text)["output"] == "Refunding 450 EUR (fee kept)."
