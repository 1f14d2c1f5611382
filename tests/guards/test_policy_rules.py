"""Policy rules as a user writes them: YAML mistakes named by file and line, how data rules
match findings (``pii`` / ``pii.email`` / ``pii.*``, scores, models, checkpoints), first match
wins, and rules by tenant and user on real runs (the run's ``tenant`` / ``user`` tags)."""

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import erpoz
from erpoz import Context, Decision, Engine, Flow, step
from erpoz.errors import ConfigError
from erpoz.guards import Guardrails
from erpoz.models import ModelHub, ModelSpec
from erpoz.policy import (
    CHECKPOINTS,
    DATA_DEFAULT,
    MODEL_DEFAULT,
    TOOL_DEFAULT,
    Policy,
    Rule,
    Subject,
    load_policy,
    parse_policy,
)
from erpoz.store import Event, Store
from erpoz.testing import ScriptedModel
from erpoz.tools import Tool, ToolRegistry, tool


def policy_of(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text), file="policy.yaml")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        policy_of(text)
    return info.value


# --- YAML: what is read ------------------------------------------------------------------------
def test_the_module_example_reads_as_documented() -> None:
    import erpoz.policy as module

    doc = module.__doc__ or ""
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, file="example.yaml")
    by_name = {r.name: r for r in policy.rules}
    assert [r.resource for r in policy.rules] == ["tool", "tool", "model", "data", "data", "tool"]
    mail = by_name["mail only to people the user named"]
    assert mail.untrusted == "deny" and mail.untrusted_fields == {"subject", "body"}
    assert policy.untrusted == "deny" and policy.spotlight == "delimit"
    assert by_name["billing may read invoices"].flow == "billing"
    assert by_name["free tier stays local"].tenant == "free-*"
    cards = by_name["cards never reach a model"]
    assert cards.data == "pii.credit_card" and cards.at == {"model_input", "delivery"}
    rude = by_name["rude answers are asked again"]
    assert rude.action == "reask" and rude.at == {"model_output"} and rude.max_reasks == 2


def test_a_rule_reads_every_field() -> None:
    (rule,) = policy_of(
        """
        rules:
          - name: cloud models get no cards
            data: pii.credit_card
            model: gpt-*
            flow: billing
            step: draft
            tenant: acme
            user: bob
            at: model_input          # one checkpoint, not a list
            min_score: 0.9
            action: block
        """
    ).rules
    assert rule == Rule(
        "cloud models get no cards",
        "block",
        data="pii.credit_card",
        model="gpt-*",
        flow="billing",
        step="draft",
        tenant="acme",
        user="bob",
        at=frozenset({"model_input"}),
        min_score=0.9,
    )
    assert rule.resource == "data"  # a data rule narrowed to a model


def test_a_data_rule_without_at_applies_at_every_checkpoint() -> None:
    (rule,) = policy_of("rules: [{name: cards, data: pii.credit_card, action: redact}]").rules
    assert rule.at == frozenset(CHECKPOINTS)


def test_load_policy_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - {name: reads, tool: lookup_*, action: allow}\n")
    assert load_policy(path).decide("lookup_invoice") == ("allow", "reads")
    with pytest.raises(ConfigError, match="cannot read the policy file") as info:
        load_policy(tmp_path / "missing.yaml")
    assert info.value.file == str(tmp_path / "missing.yaml")


# --- YAML: mistakes, each with its line ----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            """
            rules:
              - name: cards
                data: pii.credit_card
                at: [model_input, model_inptu]
                action: redact
            """,
            5,
            "rule 1: at[1] 'model_inptu': expected one of model_input, model_output",
        ),
        (
            """
            rules:
              - name: rude answers
                data: toxicity
                action: reask
            """,
            5,
            "action 'reask' applies only at model_output",
        ),
        (
            """
            rules:
              - name: rude inputs
                data: toxicity
                at: [model_input, model_output]
                action: reask
            """,
            6,
            "applies only at model_output",
        ),
        (
            """
            rules:
              - name: mails
                data: pii.email
                at: delivery
                action: pseudonymize
            """,
            6,
            "action 'pseudonymize' applies only at model_input",
        ),
        (
            """
            rules:
              - name: rude answers
                data: toxicity
                at: model_output
                action: escalate
            """,
            6,
            "names the model to ask instead with 'to'",
        ),
        (
            """
            rules:
              - name: cards
                data: pii.credit_card
                action: redact
                to: gpt-big
            """,
            6,
            "'to' is for escalate rules",
        ),
        (
            """
            rules:
              - name: ok
                tool: lookup
                action: allow
              - name: confused
                tool: send_email
                model: gpt-*
                action: deny
            """,
            6,
            "names tool and model; a rule is about one resource",
        ),
        (
            """
            rules:
              - name: sure cards
                data: pii.credit_card
                min_score: 1.5
                action: block
            """,
            5,
            "rule 1: 'min_score' must be a number between 0 and 1, got 1.5",
        ),
        (
            """
            rules:
              - name: sure cards
                data: pii.credit_card
                min_score: high
                action: block
            """,
            5,
            "'min_score' must be a number",
        ),
        (
            """
            rules:
              - name: rude answers
                data: toxicity
                at: model_output
                action: reask
                max_reasks: 0
            """,
            7,
            "'max_reasks' must be a whole number >= 1",
        ),
        (
            """
            rules:
              - name: mail
                tool: send_email
                action: redact
            """,
            5,
            "expected one of allow, deny, log, review for a tool rule",
        ),
        (
            """
            rules:
              - name: mail
                tool: send_email
                at: tool_call
                action: review
            """,
            5,
            "'at' (checkpoints) is for data rules only",
        ),
        (
            """
            rules:
              - name: mail
                tool: send_email
                tennant: acme
                action: review
            """,
            5,
            "unknown key 'tennant' in rule 1 (expected: action, at, data",
        ),
        (
            """
            rules:
              - name: twice
                tool: a
                action: allow
              - name: twice
                tool: b
                action: allow
            """,
            6,
            "two rules are named 'twice'",
        ),
        (
            """
            rules:
              - name: nameless action
                tool: a
            """,
            3,
            "rule 1 has no 'action'",
        ),
        (
            """
            rules:
              - name: mail
                tool: send_email
                tenant: 42
                action: allow
            """,
            5,
            "'tenant' must be a string",
        ),
        (
            """
            rule:
              - {name: a, tool: b, action: allow}
            """,
            2,
            "a policy file is a mapping with 'rules'",
        ),
    ],
    ids=[
        "unknown-checkpoint",
        "reask-without-at",
        "reask-outside-model-output",
        "pseudonymize-outside-model-input",
        "escalate-without-to",
        "to-without-escalate",
        "tool-and-model",
        "min-score-over-1",
        "min-score-not-a-number",
        "max-reasks-0",
        "data-action-on-a-tool",
        "at-on-a-tool-rule",
        "misspelt-key",
        "duplicate-name",
        "no-action",
        "tenant-not-a-string",
        "not-rules",
    ],
)
def test_mistakes_name_file_and_line(text: str, line: int, message: str) -> None:
    exc = error_of(text)
    assert message in exc.message
    assert (exc.file, exc.line) == ("policy.yaml", line)
    assert str(exc).startswith(f"policy.yaml:{line}: ")


# --- matching data rules -------------------------------------------------------------------------
ANYONE = Subject()


def decided(policy: Policy, data: str, checkpoint: str = "model_input", **kw: Any) -> str | None:
    rule = policy.decide_data(data, checkpoint, kw.pop("subject", ANYONE), **kw)
    return None if rule is None else rule.name


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("pii", ["pii.email", "pii.credit_card"], ["injection.encoded", "piiz.email"]),
        ("pii.email", ["pii.email"], ["pii.phone", "pii"]),
        ("pii.*", ["pii.email", "pii.iban"], ["injection.hidden_text"]),
        ("*.error", ["pii.error", "crashy.error"], ["pii.email"]),
        ("toxicity", ["toxicity.toxic"], ["pii.email"]),
    ],
)
def test_a_data_pattern_names_a_detector_or_a_detector_and_kind(
    pattern: str, matches: list[str], misses: list[str]
) -> None:
    policy = Policy([Rule("r", "block", data=pattern)])
    assert [decided(policy, d) for d in matches] == ["r"] * len(matches)
    assert [decided(policy, d) for d in misses] == [None] * len(misses)


def test_no_data_rule_means_the_finding_is_logged() -> None:
    assert Policy().decide_data("pii.email", "delivery", ANYONE) is None
    assert DATA_DEFAULT == "default: findings are logged"


def test_first_matching_data_rule_wins() -> None:
    narrow_first = Policy(
        [Rule("mail is fine", "log", data="pii.email"), Rule("other pii", "block", data="pii")]
    )
    assert decided(narrow_first, "pii.email") == "mail is fine"
    assert decided(narrow_first, "pii.phone") == "other pii"
    broad_first = Policy(
        [Rule("other pii", "block", data="pii"), Rule("mail is fine", "log", data="pii.email")]
    )
    assert decided(broad_first, "pii.email") == "other pii"


def test_min_score_lets_weak_findings_fall_through() -> None:
    policy = Policy(
        [
            Rule("sure injections", "block", data="injection", min_score=0.8),
            Rule("the rest", "log", data="injection"),
        ]
    )
    assert decided(policy, "injection.encoded", score=0.9) == "sure injections"
    assert decided(policy, "injection.encoded", score=0.8) == "sure injections"
    assert decided(policy, "injection.encoded", score=0.3) == "the rest"


def test_a_data_rule_can_be_narrowed_to_models() -> None:
    policy = Policy([Rule("no pii to the cloud", "redact", data="pii", model="gpt-*")])
    assert decided(policy, "pii.email", model="gpt-4o") == "no pii to the cloud"
    assert decided(policy, "pii.email", model="local-llama") is None
    assert decided(policy, "pii.email") is None  # no model: a tool call, a delivery
    # it is a data rule: it decides nothing about which models may be asked
    assert policy.decide_model("gpt-4o", ANYONE) == ("allow", MODEL_DEFAULT)
    assert not policy.has_model_rules and policy.has_data_rules


def test_a_data_rule_applies_at_its_checkpoints_only() -> None:
    policy = Policy([Rule("cards", "redact", data="pii.credit_card", at=frozenset({"delivery"}))])
    assert decided(policy, "pii.credit_card", "delivery") == "cards"
    assert decided(policy, "pii.credit_card", "model_input") is None


def test_data_rules_match_flow_step_tenant_and_user() -> None:
    policy = Policy([Rule("free", "block", data="pii", tenant="free-*", user="b*", step="send")])
    free_bob = Subject("billing", "send", "free-eu", "bob")
    assert decided(policy, "pii.email", subject=free_bob) == "free"
    assert decided(policy, "pii.email", subject=Subject("billing", "send", "pro", "bob")) is None
    assert (
        decided(policy, "pii.email", subject=Subject("billing", "draft", "free-eu", "bob")) is None
    )
    assert (
        decided(policy, "pii.email", subject=Subject("billing", "send", "free-eu", "ana")) is None
    )


# --- tool and model rules ----------------------------------------------------------------------
def test_tools_are_denied_unless_a_rule_grants_them_first_match_wins() -> None:
    policy = Policy(
        [
            Rule("no deletes", "deny", "delete_*"),
            Rule("everything else", "allow", "*"),
            Rule("never reached", "review", "delete_account"),
        ]
    )
    assert policy.decide("delete_account") == ("deny", "no deletes")
    assert policy.decide("lookup") == ("allow", "everything else")
    assert Policy().decide("lookup") == ("deny", TOOL_DEFAULT)
    # model and data rules never grant a tool
    only_others = Policy([Rule("m", "allow", model="*"), Rule("d", "allow", data="pii")])
    assert only_others.decide("lookup") == ("deny", TOOL_DEFAULT)


def test_model_rules_by_tenant_and_user() -> None:
    policy = Policy(
        [
            Rule("free tier stays local", "deny", model="gpt-*", tenant="free*"),
            Rule("bob asks first", "review", model="*", user="bob"),
        ]
    )
    assert policy.decide_model("gpt-4o", Subject(tenant="free")) == (
        "deny",
        "free tier stays local",
    )
    assert policy.decide_model("gpt-4o", Subject(tenant="free-eu", user="bob"))[1] == (
        "free tier stays local"
    )
    assert policy.decide_model("llama", Subject(tenant="free", user="bob")) == (
        "review",
        "bob asks first",
    )
    assert policy.decide_model("gpt-4o", Subject(tenant="acme")) == ("allow", MODEL_DEFAULT)


# --- tenants and users on real runs --------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = erpoz.open_store(tmp_path / "runs.db")
    yield s
    asyncio.run(s.close())


TENANT_POLICY = Policy(
    [
        Rule("free tier stays local", "deny", model="gpt-*", tenant="free*"),
        Rule("pro may export", "allow", "export", tenant="pro"),
        Rule("bob's exports need a person", "review", "export", user="bob"),
    ]
)


def tenant_engine(store: Store, *models: ScriptedModel, tools: tuple[Tool, ...] = ()) -> Engine:
    hub = ModelHub()
    for m in models:
        hub.add(m, ModelSpec(m.name, "test"))
    return Engine(
        store,
        services={
            ModelHub: hub,
            Guardrails: Guardrails((), TENANT_POLICY),
            ToolRegistry: ToolRegistry(list(tools)),
        },
    )


@step
async def ask_cloud(q: str, ctx: Context) -> str:
    return (await ctx.models.chat("gpt-4o", q)).text


def one_step(fn: Any) -> Flow:
    flow = Flow("tenants", inputs={"q": str})
    flow.output(flow.add(fn, q=flow.input("q")))
    return flow


def of_kind(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


def test_a_model_denied_for_a_tenant_is_never_asked(store: Store) -> None:
    model = ScriptedModel(["hello"], name="gpt-4o")

    async def main() -> None:
        eng = tenant_engine(store, model)
        result = await eng.run(
            one_step(ask_cloud), {"q": "hi"}, tags={"tenant": "free", "user": "bob"}
        )
        assert result.status == "failed" and "PolicyViolation" in (result.error or "")
        assert "free tier stays local" in (result.error or "")
        assert model.calls == []
        events = await store.events(result.run_id)
        (decided,) = of_kind(events, "policy_decided")
        assert decided == {
            "resource": "model:gpt-4o",
            "action": "deny",
            "rule": "free tier stays local",
            "flow": "tenants",
            "step": "ask_cloud",
            "tenant": "free",
            "user": "bob",
        }
        assert of_kind(events, "model_called") == []

    asyncio.run(main())


def test_another_tenant_may_ask_the_model(store: Store) -> None:
    model = ScriptedModel(["hello"], name="gpt-4o")

    async def main() -> None:
        eng = tenant_engine(store, model)
        result = await eng.run(one_step(ask_cloud), {"q": "hi"}, tags={"tenant": "acme"})
        assert result.output == "hello"
        # no model rule decided: nothing to record
        assert of_kind(await store.events(result.run_id), "policy_decided") == []

    asyncio.run(main())


def test_a_run_without_tags_is_tenant_dash(store: Store) -> None:
    seen: list[tuple[str, str]] = []

    @step
    async def who(q: str, ctx: Context) -> str:
        seen.append((ctx.tenant, ctx.user))
        return q

    async def main() -> None:
        await tenant_engine(store).run(one_step(who), {"q": "x"})

    asyncio.run(main())
    assert seen == [("-", "-")]


exported_reports: list[str] = []


@tool(side_effects=True)
def export(report: str) -> str:
    """Export a report."""
    exported_reports.append(report)
    return f"exported {report}"


@step
async def export_step(q: str, ctx: Context) -> str:
    return f"{ctx.tenant}/{ctx.user}: " + str(await ctx.tools.call("export", report=q))


@pytest.mark.parametrize(
    ("tags", "status", "rule"),
    [
        ({"tenant": "pro", "user": "ana"}, "succeeded", "pro may export"),
        ({"tenant": "free", "user": "ana"}, "failed", TOOL_DEFAULT),
        ({"tenant": "free", "user": "bob"}, "waiting", "bob's exports need a person"),
    ],
)
def test_tool_rules_by_tenant_and_user(
    store: Store, tags: dict[str, str], status: str, rule: str
) -> None:
    exported_reports.clear()

    async def main() -> None:
        eng = tenant_engine(store, tools=(export,))
        result = await eng.run(one_step(export_step), {"q": "q3"}, tags=tags)
        assert result.status == status
        (decided,) = of_kind(await store.events(result.run_id), "policy_decided")
        assert decided["rule"] == rule
        assert (decided["tenant"], decided["user"]) == (tags["tenant"], tags["user"])

    asyncio.run(main())
    assert exported_reports == (["q3"] if status == "succeeded" else [])


def test_tags_survive_a_resume(store: Store) -> None:
    exported_reports.clear()

    async def main() -> None:
        eng = tenant_engine(store, tools=(export,))
        flow = one_step(export_step)
        paused = await eng.run(flow, {"q": "q3"}, tags={"tenant": "free", "user": "bob"})
        assert paused.status == "waiting"
        done = await eng.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.output == "free/bob: exported q3"
        events = await store.events(paused.run_id)
        after = of_kind(events, "policy_decided")[-1]
        assert (after["tenant"], after["user"], after["approved_by_review"]) == (
            "free",
            "bob",
            True,
        )

    asyncio.run(main())
    assert exported_reports == ["q3"]


def test_a_model_review_rule_is_approved_once_per_run(store: Store) -> None:
    model = ScriptedModel(["one", "two"], name="llama")
    policy = Policy([Rule("bob asks first", "review", model="*", user="bob")])

    @step
    async def twice(q: str, ctx: Context) -> str:
        a = await ctx.models.chat("llama", q)
        b = await ctx.models.chat("llama", q)
        return f"{a.text} {b.text}"

    hub = ModelHub()
    hub.add(model, ModelSpec("llama", "test"))

    async def main() -> None:
        eng = Engine(store, services={ModelHub: hub, Guardrails: Guardrails((), policy)})
        flow = one_step(twice)
        paused = await eng.run(flow, {"q": "hi"}, tags={"user": "bob"})
        assert paused.status == "waiting" and model.calls == []
        events = await store.events(paused.run_id)
        (request,) = [e.data for e in events if e.kind == "review_requested"]
        assert request["grant"] == "model:llama"
        assert request["evidence"] == {"model": "llama", "rule": "bob asks first"}
        done = await eng.resume(paused.run_id, flow, decision=Decision("approve"))
        assert done.output == "one two"

    asyncio.run(main())
