"""The local models with their real weights (MiniLM embeddings, RapidOCR, the extractive
reader), and the logic around them with an offline embedder."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from erpoz.errors import ModelError
from erpoz.models import ChatRequest, EmbedModel, Message, ModelSpec, OCRModel, create
from erpoz.models.extractive import NO_ANSWER, ExtractiveReader, passages_prompt
from erpoz.models.local_embed import MiniLMEmbed
from erpoz.models.local_ocr import RapidOCRReader
from models.local_fixtures import WordsEmbed, minilm, rapidocr, real_models_blocked


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbed:
    return minilm()


@pytest.fixture(scope="session")
def ocr() -> RapidOCRReader:
    return rapidocr()


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- MiniLM -------------------------------------------------------------------------------------
def test_minilm_puts_similar_sentences_closer_than_unrelated_ones(embedder: MiniLMEmbed) -> None:
    texts = [
        "How do I get a refund for my invoice?",
        "I want my money back for this bill.",
        "The Python script crashes with a KeyError.",
    ]
    result = run(embedder.embed(texts))
    assert isinstance(embedder, EmbedModel)
    assert result.model == "minilm"
    assert [len(v) for v in result.vectors] == [384, 384, 384]
    for v in result.vectors:
        assert abs(cosine(v, v) - 1.0) < 1e-4
    related, unrelated = cosine(*result.vectors[:2]), cosine(result.vectors[0], result.vectors[2])
    assert related > 0.4 > unrelated
    # the tokenizer's count: every text has at least its words plus [CLS] and [SEP]
    assert result.usage.input_tokens >= sum(len(t.split()) + 2 for t in texts)
    assert result.latency_s > 0
    # one text alone takes the frozen fast path, and gets the vector it gets in a batch
    assert embedder._loaded is not None and embedder._loaded.single is not None
    (alone,) = run(embedder.embed(texts[:1])).vectors
    assert cosine(alone, result.vectors[0]) > 0.999
    assert run(embedder.embed([])).vectors == ()


def test_minilm_refuses_to_load_while_real_providers_are_blocked() -> None:
    fresh = MiniLMEmbed("guarded")
    with real_models_blocked(), pytest.raises(ModelError, match="blocked") as info:
        run(fresh.embed(["hello"]))
    assert info.value.model == "guarded"
    assert fresh.dtype is None


def test_local_providers_are_plugins_built_from_specs() -> None:
    embed = create(ModelSpec("vectors", "minilm", kind="embed", params={"precision": "float32"}))
    assert isinstance(embed, MiniLMEmbed)
    assert (embed.name, embed.precision) == ("vectors", "float32")
    reader = create(ModelSpec("scanner", "rapidocr", kind="ocr"))
    assert isinstance(reader, RapidOCRReader) and isinstance(reader, OCRModel)
    answerer = create(ModelSpec("reader", "extractive", params={"top_k": 1, "min_score": 0.5}))
    assert isinstance(answerer, ExtractiveReader)
    assert (answerer.name, answerer.top_k, answerer.min_score) == ("reader", 1, 0.5)
    with pytest.raises(ValueError, match="precision"):
        MiniLMEmbed(precision="float16")  # type: ignore[arg-type]


# --- RapidOCR -----------------------------------------------------------------------------------
def invoice_png() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font_file = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    font = (
        ImageFont.truetype(str(font_file), 44)
        if font_file.exists()
        else ImageFont.load_default(size=44)
    )
    image = Image.new("RGB", (820, 260), "white")
    draw = ImageDraw.Draw(image)
    draw.text((30, 150), "TOTAL 49.00", fill="black", font=font)  # drawn first, read second
    draw.text((30, 30), "INVOICE 1042", fill="black", font=font)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_ocr_reads_the_text_of_a_rendered_invoice_in_reading_order(ocr: RapidOCRReader) -> None:
    result = run(ocr.read(invoice_png()))
    assert result.model == "rapidocr"
    squashed = [line.text.replace(" ", "").upper() for line in result.lines]
    assert squashed == ["INVOICE1042", "TOTAL49.00"]
    for line in result.lines:
        assert len(line.box) == 4 and 0.5 < line.score <= 1.0
    assert result.lines[0].box[0][1] < result.lines[1].box[0][1]
    assert "1042" in result.text and "49.00" in result.text
    assert result.latency_s > 0


@pytest.mark.parametrize(
    ("what", "problem"),
    [
        ("a PDF", "not an image Pillow can open"),
        ("a cut-off PNG", "damaged or unreadable"),
        ("nothing", "empty image"),
    ],
)
def test_ocr_says_what_is_wrong_with_bytes_that_are_not_an_image(what: str, problem: str) -> None:
    pytest.importorskip("PIL", reason="needs erpoz[local]")
    data = {
        "a PDF": b"%PDF-1.7 this is a PDF, not an image",
        "a cut-off PNG": invoice_png()[:300],
        "nothing": b"",
    }[what]
    fresh = RapidOCRReader("scanner")  # not loaded: the bytes are refused before the model
    with pytest.raises(ModelError, match=problem) as info:
        run(fresh.read(data))
    assert info.value.model == "scanner"
    assert fresh._engine is None


def test_ocr_refuses_to_load_while_real_providers_are_blocked() -> None:
    pytest.importorskip("PIL", reason="needs erpoz[local]")
    with real_models_blocked(), pytest.raises(ModelError, match="blocked"):
        run(RapidOCRReader("guarded").read(invoice_png()))


# --- the extractive reader ----------------------------------------------------------------------
PASSAGES = [
    (
        "invoices/1042",
        "Invoice 1042 was paid on 3 May 2024 by bank transfer. The amount was 49.00 EUR.",
    ),
    ("faq/refunds", "Refunds are processed within five working days. Ask support for one."),
    ("hr/holidays", "Employees get 25 days of paid holiday a year. Unused days expire in March."),
]


def ask(question: str) -> ChatRequest:
    return ChatRequest(tuple(passages_prompt(question, PASSAGES)))


def test_extractive_reader_answers_from_the_passages_citing_the_right_source(
    embedder: MiniLMEmbed,
) -> None:
    reader = ExtractiveReader(embedder=embedder)
    result = run(reader.generate(ask("How long does it take to get a refund?")))
    assert result.text.startswith("Refunds are processed within five working days. [faq/refunds]")
    assert result.citations[0] == "faq/refunds"
    assert result.confidence is not None and result.confidence > 0.5
    assert result.model == "extractive" and result.usage.input_tokens > 0

    chunks = run(_collect(reader.stream(ask("When was invoice 1042 paid?"))))
    final = chunks[-1].result
    assert final is not None and final.citations[0] == "invoices/1042"
    assert "".join(c.text for c in chunks[:-1]) == final.text
    assert final.text.startswith("Invoice 1042 was paid on 3 May 2024 by bank transfer.")

    off_topic = run(reader.generate(ask("What is the boiling point of mercury?")))
    assert off_topic.text == NO_ANSWER
    assert off_topic.citations == ()
    assert off_topic.confidence is not None and off_topic.confidence < reader.min_score


async def _collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def test_extractive_reader_reads_passages_wherever_the_format_puts_them() -> None:
    words = WordsEmbed()
    reader = ExtractiveReader(embedder=words, top_k=1, min_score=0.1)
    one_message = ChatRequest(
        (
            Message.user(
                "[a] The red door opens at nine. Nothing else here.\n"
                "[b] Blue boxes ship on Fridays.\n"
                "when do blue boxes ship"
            ),
        )
    )
    result = run(reader.generate(one_message))
    assert result.text == "Blue boxes ship on Fridays. [b]"
    assert result.citations == ("b",)
    # the question is only the last user message; earlier ones may hold passages too
    split = ChatRequest(
        (
            Message.user("[x] Cats sleep a lot."),
            Message.assistant("[y] Dogs bark."),  # not read: only system and user messages
            Message.user("do cats sleep"),
        )
    )
    assert run(reader.generate(split)).citations == ("x",)


def test_extractive_reader_errors_name_the_missing_piece() -> None:
    reader = ExtractiveReader(embedder=WordsEmbed())
    with pytest.raises(ModelError, match="no passages"):
        run(reader.generate(ChatRequest((Message.user("what is it?"),))))
    with pytest.raises(ModelError, match="no question"):
        run(reader.generate(ChatRequest((Message.system("[a] Text."),))))
    schema = {"type": "object"}
    with pytest.raises(ModelError, match="cannot answer in JSON"):
        run(
            reader.generate(
                ChatRequest(tuple(passages_prompt("q", PASSAGES)), response_schema=schema)
            )
        )
    with pytest.raises(ValueError, match="source id"):
        passages_prompt("q", [("bad]id", "text")])
    with pytest.raises(ValueError, match="top_k"):
        ExtractiveReader(embedder=WordsEmbed(), top_k=0)


def test_the_offline_default_says_what_it_does_when_asked_without_passages() -> None:
    from erpoz.models import Models, default_config
    from erpoz.models._meter import Recorder
    from erpoz.models.extractive import ABOUT
    from erpoz.project import build_hub

    embedder = WordsEmbed()
    explaining = ExtractiveReader(embedder=embedder, without_passages="explain")
    result = run(explaining.generate(ChatRequest((Message.user("Reply with one word: pong"),))))
    assert result.text == ABOUT and result.confidence == 0.0 and result.citations == ()
    assert "OPENAI_BASE_URL" in result.text and "erpoz.yaml" in result.text
    assert embedder.calls == []  # nothing to embed: answered at once, no weights needed
    # with passages it reads them as before
    assert run(explaining.generate(ask("how long do refunds take"))).text != ABOUT
    assert embedder.calls  # the passages were read
    # the built-in default hub's `default` is such a reader: it answers, it does not fail
    hub = build_hub(default_config())
    models = Models(hub, Recorder(lambda kind, data: None, ""))
    with real_models_blocked():  # and it loads no weights for that answer
        answer = run(models.chat("default", "What is the capital of France?"))
    assert answer.text == ABOUT and answer.model == "reader"


def test_extractive_params_are_checked_when_the_project_is_read(tmp_path: Path) -> None:
    from erpoz.errors import ConfigError
    from erpoz.models import load_config
    from erpoz.project import build_hub

    path = tmp_path / "erpoz.yaml"
    path.write_text(
        "models:\n  reader:\n    provider: extractive\n    params: {without_passages: shout}\n"
    )
    with pytest.raises(ConfigError, match="without_passages is error or explain") as bad:
        build_hub(load_config(path))
    assert bad.value.line == 2
    path.write_text("models:\n  reader:\n    provider: extractive\n    params: {topk: 3}\n")
    with pytest.raises(ConfigError, match="unknown params topk"):
        build_hub(load_config(path))
