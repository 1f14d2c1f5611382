"""`erpoz run` gives steps the project's models from erpoz.yaml, and a project budget holds
across processes: the second run is refused before anything is sent; `erpoz stats budget`
shows the ledger."""

import json
import subprocess
from pathlib import Path

import pytest

from erpoz.testing import Behaviour, OpenAIStubServer

from ._helpers import ERPOZ, cli_env

FLOW = """
from erpoz import Context, Flow, step


@step
async def ask(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("paid", q, max_tokens=10)).text


flow = Flow("paid", inputs={"q": str})
flow.add(ask, q=flow.input("q"))
"""


@pytest.mark.slow
def test_project_budget_spans_processes(tmp_path: Path) -> None:
    with OpenAIStubServer() as server:
        server.always("chat", Behaviour.reply("fine"))
        (tmp_path / "erpoz.yaml").write_text(
            "models:\n"
            "  paid:\n"
            "    provider: openai\n"
            f"    params: {{base_url: '{server.base_url}', max_retries: 0}}\n"
            "    price: {input: 1000, output: 1000}\n"
            # one call is estimated at (3 prompt + 10 max output tokens) x $0.001 = $0.013:
            # the first fits, the second cannot (whatever the first cost, it cost something)
            "budget: {per_project_usd: 0.014}\n"
        )
        (tmp_path / "paidflow.py").write_text(FLOW)
        store = str(tmp_path / "b.db")

        def run() -> dict[str, object]:
            proc = subprocess.run(
                [
                    str(ERPOZ),
                    "run",
                    "paidflow.py:flow",
                    "-i",
                    "q=hello there",
                    "--json",
                    "--store",
                    store,
                ],
                cwd=tmp_path,
                env=cli_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=60,
            )
            result: dict[str, object] = json.loads(proc.stdout)
            return result

        first, second = run(), run()
        calls = len(server.requests_to("chat"))
        ledger = subprocess.run(
            [str(ERPOZ), "stats", "budget", "--json", "--store", store],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert first["status"] == "succeeded" and first["output"] == "fine"
    assert second["status"] == "failed"
    assert "BudgetExceeded" in str(second["error"]) and "project" in str(second["error"])
    assert calls == 1  # the refused call never reached the server
    assert ledger.returncode == 0, ledger.stderr
    (project,) = json.loads(ledger.stdout)["scopes"]
    assert project["scope"] == "project" and project["ceiling_usd"] == 0.014
    assert project["reserved_usd"] == 0.0 and 0 < project["spent_usd"] <= 0.013
    assert project["left_usd"] == pytest.approx(0.014 - project["spent_usd"])
