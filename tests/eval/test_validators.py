"""The general cascade validators of ``erpoz.routing.validators``, each on hand-written answers
that it must accept and answers that it must reject; and one of them at work in a cascade."""

from __future__ import annotations

import asyncio

import pytest

from erpoz.models import ChatRequest, ChatResult, Message
from erpoz.routing import CascadeRouter, Verdict
from erpoz.routing.validators import (
    AnswerFollows,
    ArithmeticCheck,
    FinalAnswer,
    NoHedging,
    SelfConsistency,
    answer_follows,
    answer_form,
    arithmetic,
    choice_answer,
    equations,
    final_answer,
    final_answer_text,
    finished,
    json_answer,
    no_hedging,
    offered_options,
    parse_number,
)
from erpoz.testing import FunctionModel, ScriptedModel

REQUEST = ChatRequest((Message.user("Tom has 16 eggs and eats 3 of them. How many are left?"),))


def judge(validator: object, text: str, finish_reason: str | None = "stop") -> Verdict:
    result = ChatResult(text, "weak", finish_reason=finish_reason)
    out = validator(REQUEST, result)  # type: ignore[operator]
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    assert isinstance(out, Verdict)
    return out


# --- numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("$1,234.50", 1234.5), ("15%", 0.15), ("-3", -3), (".5", 0.5), ("x", None)],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


# --- final answer --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "She has 16 - 3 = 13 eggs.\n#### 13",
        "So the total is $18.\nThe answer is 18.",
        "Working...\nFinal answer: 1,250",
        "Hence \\boxed{7}",
        "Answer: $40",
        "#### 12\n#### 15",  # the last marker counts
    ],
)
def test_final_answer_accepts_a_plain_number_after_a_marker(text: str) -> None:
    assert judge(final_answer, text).ok


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("She has 16 - 3 = 13 eggs left.", "no final answer"),
        ("#### 84 (corrected)", "not a plain number"),
        ("#### 90 minutes or 1 hour and 30 minutes", "not a plain number"),
        ("#### ", "empty"),
        ("Total: 100 + 30 = 130,00", "no final answer"),
    ],
)
def test_final_answer_rejects_missing_or_malformed(text: str, why: str) -> None:
    verdict = judge(final_answer, text)
    assert not verdict.ok and why in verdict.reason


def test_final_answer_options() -> None:
    assert judge(FinalAnswer(numeric=False), "#### two apples").ok
    whole = FinalAnswer(whole=True)
    assert judge(whole, "#### 12").ok
    verdict = judge(whole, "#### 12.5")
    assert not verdict.ok and "whole number" in verdict.reason
    custom = FinalAnswer([r"RESULT=>(?P<x>[^\n]*)"])
    assert judge(custom, "RESULT=> 9").ok and not judge(custom, "#### 9").ok
    assert final_answer_text("blah\n#### 18 \n") == "18"


# --- arithmetic ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "16 - 3 = 13 and 13 - 4 = 9, sold at 9 * $2 = $<<9*2=18>>18.\n#### 18",
        "3 x 60 = 180 meters, then 180 x 3 = 540.",
        "2 + 1/2 = 5/2 = 2.5 bolts",
        "100 / 3 = 33.33 each",  # rounded as written
        "(6 / 12) x 100 = 50%",
        "90 / 450 = 0.2 * 100 = 20% of the time",
        "12.8 / 2/5 = 32 hectares",  # a fraction written tight binds first
        "It costs $80,000 + $75,000 = $155,000.",
        "She runs 3 sprints * 60 meters/sprint = 180 meters.",  # not pure arithmetic: skipped
        "No arithmetic here at all.",
    ],
)
def test_arithmetic_accepts_calculations_that_hold(text: str) -> None:
    verdict = judge(arithmetic, text)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("5 * 75 + 120 = 795 dollars", "5 * 75 + 120 = 795"),
        ("They made <<4+20+7+8=49>>49 cookies", "<<4+20+7+8=49>>"),
        ("So 3 x 30 + 3 x 20 = 210.", "3 x 30 + 3 x 20 = 210"),
        ("(12 / 20) x 100 = 55%", "(12 / 20) x 100 = 55%"),
    ],
)
def test_arithmetic_rejects_a_calculation_that_does_not_hold(text: str, shown: str) -> None:
    verdict = judge(arithmetic, text)
    assert not verdict.ok
    assert shown in verdict.reason and verdict.score is not None and verdict.score < 1


def test_arithmetic_score_and_options() -> None:
    text = "1 + 1 = 2, 2 + 2 = 4, 3 + 3 = 7"
    assert [e.holds for e in equations(text)] == [True, True, False]
    assert judge(ArithmeticCheck(min_share=0.5), text).ok
    assert judge(ArithmeticCheck(min_share=0.5), text).score == pytest.approx(2 / 3)
    assert not judge(ArithmeticCheck(min_equations=1), "No numbers.").ok
    assert judge(arithmetic, "No numbers.").abstained
    # "a = b op c = d" runs on: the middle expression is judged against what follows it
    assert equations("12 + 43 = $55 ÷ 5 = $11")[-1].holds


# --- the answer follows from the working
def test_answer_follows() -> None:
    assert judge(answer_follows, "9 * 2 = 18 dollars.\n#### 18").ok
    assert judge(answer_follows, "The share is 20/100 * 40 = 8%.\n#### 8").ok
    assert judge(answer_follows, "No final answer here").abstained  # final_answer judges that
    verdict = judge(answer_follows, "9 * 2 = 18 dollars.\nShe saves some.\n#### 27")
    assert not verdict.ok and "27" in verdict.reason
    assert judge(AnswerFollows(lines=3), "Total 27.\n9 * 2 = 18.\nOk.\n#### 27").ok


# --- hedging
def test_no_hedging() -> None:
    assert judge(no_hedging, "She has 9 eggs.\n#### 9").ok
    for text in (
        "Assuming the bus was empty, 30 people.\n#### 30",
        "There seems to be a mistake in the question.\n#### 0",
        "It is 13 / 3 = approximately 4.3 hours.",
    ):
        verdict = judge(no_hedging, text)
        assert not verdict.ok and "hedges" in verdict.reason
    assert not judge(NoHedging([r"\bmaybe\b"]), "maybe 3").ok
    assert judge(NoHedging([r"\bmaybe\b"]), "assuming 3").ok


# --- finished
def test_finished() -> None:
    assert judge(finished, "So she makes $18.\n#### 18").ok
    assert not judge(finished, "ok", finish_reason="length").ok
    assert not judge(finished, "he spends $5000 * 2 = $<<5000*2=10000>>10,00 and").ok
    assert not judge(finished, "the total is 36 * 68/12 = $<<36*68/1").ok
    assert not judge(finished, "   ").ok


# --- self-consistency -----------------------------------------------------------------------------
def test_self_consistency_samples_the_model_again() -> None:
    agreeing = ScriptedModel(["So #### 18", "#### 18.0"], name="weak")
    check = SelfConsistency(agreeing, samples=2)
    verdict = judge(check, "9 * 2 = 18\n#### 18")
    assert verdict.ok and verdict.score == 1.0
    assert all(r.temperature == 0.7 for r in agreeing.calls)  # sampled, not greedy

    split = SelfConsistency(ScriptedModel(["#### 17", "#### 19"], name="weak"), samples=2)
    verdict = judge(split, "#### 18")
    assert not verdict.ok and "1 of 3 answers agree on 18" in verdict.reason
    assert not judge(SelfConsistency(agreeing), "no answer").ok


# --- in a cascade
def test_validators_in_a_cascade_escalate_a_wrong_calculation() -> None:
    weak = FunctionModel(lambda r: "5 * 75 + 120 = 795\n#### 795", name="weak")
    strong = FunctionModel(lambda r: "5 * 75 + 120 = 495\n#### 495", name="strong")
    cascade = CascadeRouter("checked", [weak, strong], [final_answer, arithmetic])
    assert asyncio.run(cascade.generate(REQUEST)).model == "strong"
    fine = FunctionModel(lambda r: "5 * 75 + 120 = 495\n#### 495", name="fine")
    cascade = CascadeRouter("checked", [fine, strong], [final_answer, arithmetic, no_hedging])
    assert asyncio.run(cascade.generate(REQUEST)).model == "fine"


# --- answer forms: a validator abstains on what it cannot judge -----------------------------
MCQ = ChatRequest(
    (Message.user("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Mercury\nAnswer:"),)
)
ESSAY = ChatRequest((Message.user("Write a short poem about the sea."),))


def judge_on(validator: object, request: ChatRequest, text: str) -> Verdict:
    out = validator(request, ChatResult(text, "weak", finish_reason="stop"))  # type: ignore[operator]
    assert isinstance(out, Verdict)
    return out


@pytest.mark.parametrize(
    ("request_", "text", "form"),
    [
        (MCQ, "B", "choice"),
        (MCQ, "The answer is B.", "choice"),
        (ESSAY, "(C)", "choice"),
        (ESSAY, "Option d", "choice"),
        (REQUEST, "16 - 3 = 13\n#### 13", "numeric"),
        (REQUEST, "Q = 700 / 5", "numeric"),
        (REQUEST, "#### ", "numeric"),
        (ESSAY, '{"poem": "waves"}', "json"),
        (ESSAY, "```json\n[1, 2]\n```", "json"),
        (ESSAY, "The sea, the sea, it sings to me,\nin 1,000 voices.", "text"),
        (ESSAY, "A gull cries over the water.", "text"),  # "A" is a word, not an option
        (ESSAY, "```python\nx = 5\n```", "text"),  # code, not a calculation
    ],
)
def test_answer_forms(request_: ChatRequest, text: str, form: str) -> None:
    assert answer_form(request_, text) == form


def test_offered_options_are_a_run_of_letters() -> None:
    assert offered_options(MCQ) == ("A", "B", "C", "D")
    assert offered_options(ESSAY) == ()
    stray = ChatRequest((Message.user("B. is a note\nD. another line"),))
    assert offered_options(stray) == ()


@pytest.mark.parametrize("text", ["B", "The answer is B.", "B. Jupiter", "(B)"])
def test_numeric_validators_abstain_on_multiple_choice(text: str) -> None:
    for validator in (final_answer, arithmetic, answer_follows, FinalAnswer(whole=True)):
        verdict = judge_on(validator, MCQ, text)
        assert verdict.ok and verdict.abstained, (validator, verdict)
    assert judge_on(choice_answer, MCQ, text).ok
    assert not judge_on(choice_answer, MCQ, text).abstained


def test_numeric_validators_abstain_on_prose_and_json() -> None:
    poem = "The sea, the sea, it sings to me,\nassuming the tide is kind."
    assert judge_on(final_answer, ESSAY, poem).abstained
    assert judge_on(final_answer, ESSAY, '{"x": 1}').abstained
    # "assuming" is a hedge in a result, a word in a poem; doubt is a hedge in both
    assert judge_on(no_hedging, ESSAY, poem).ok
    assert not judge_on(no_hedging, REQUEST, "Assuming none broke, 13.\n#### 13").ok
    doubt = judge_on(no_hedging, ESSAY, "I am not sure there is enough information here.")
    assert not doubt.ok and "not sure" in doubt.reason


def test_choice_answer_rejects_what_was_not_offered_or_not_said() -> None:
    verdict = judge_on(choice_answer, MCQ, "The answer is F.")
    assert not verdict.ok and "not offered" in verdict.reason
    verdict = judge_on(choice_answer, MCQ, "Jupiter is the largest planet of all, by far.")
    assert not verdict.ok and "no option" in verdict.reason
    assert judge_on(choice_answer, REQUEST, "16 - 3 = 13\n#### 13").abstained


def test_json_answer() -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    asks = ChatRequest((Message.user("Give the name as JSON."),), response_schema=schema)
    assert judge_on(json_answer, asks, '{"name": "Ada"}').ok
    assert not judge_on(json_answer, asks, "Ada").ok
    assert not judge_on(json_answer, asks, '{"name": "Ada"').ok
    pytest.importorskip("jsonschema")
    verdict = judge_on(json_answer, asks, '{"age": 3}')
    assert not verdict.ok and "name" in verdict.reason
    assert judge_on(json_answer, ESSAY, "just prose").abstained
