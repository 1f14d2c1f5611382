"""The suite itself: no test can reach a model provider on the network by accident."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from erpoz.errors import ModelError
from erpoz.models import ChatRequest, Message, ModelSpec
from erpoz.models.openai_compat import create
from erpoz.testing import Behaviour, OpenAIStubServer


def _chat(base_url: str) -> ModelSpec:
    return ModelSpec(
        "remote", "openai", params={"base_url": base_url, "api_key": "sk-x", "max_retries": 0}
    )


def test_a_provider_on_another_host_is_refused_before_it_sends() -> None:
    assert os.environ["ERPOZ_BLOCK_REAL_MODELS"] == "network"  # set by tests/conftest.py
    model = create(_chat("https://api.openai.com/v1"))
    with pytest.raises(ModelError, match="real provider blocked in tests") as refused:
        asyncio.run(model.generate(ChatRequest((Message.user("hi"),))))
    assert "HTTP to https://api.openai.com/v1" in str(refused.value)


def test_a_local_stub_server_is_allowed() -> None:
    with OpenAIStubServer() as server:
        server.always("chat", Behaviour.reply("pong"))
        model = create(_chat(server.base_url))
        answer = asyncio.run(model.generate(ChatRequest((Message.user("ping"),))))
    assert answer.text == "pong"


def test_processes_a_test_starts_inherit_the_block() -> None:
    code = (
        "import asyncio\n"
        "from erpoz.models import ChatRequest, Message, ModelSpec\n"
        "from erpoz.models.openai_compat import create\n"
        "m = create(ModelSpec('r', 'openai', params={'base_url': 'https://api.openai.com/v1',"
        " 'api_key': 'k', 'max_retries': 0}))\n"
        "try:\n"
        "    asyncio.run(m.generate(ChatRequest((Message.user('hi'),))))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "real provider blocked in tests" in out.stdout, out
