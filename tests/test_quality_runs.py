"""Quality inside the engine: one verdict per row, the judge through the runner's own attempts, its cost apart."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.client import Attempt
from harness.config import build_config
from harness.errors import ConfigError
from harness.plan import make_plan
from harness.pricing import PriceTable
from harness.records import Case, PlannedCall
from harness.runner import Runner, RunnerSettings
from tests.helpers import FreeLimiter, ListSink

MODELS = ["claude-haiku-4-5", "claude-opus-4-8"]
JUDGE = "claude-sonnet-4-6"
PRICES = PriceTable.resolve([*MODELS, JUDGE])


class JudgingClient:
    """Answers "Ottawa is the capital"; as the judge, replies from a script (a verdict per request)."""

    def __init__(
        self, verdicts: list[str], *, answer: str = "Ottawa is the capital.", stop: str = "end_turn"
    ) -> None:
        self.verdicts = verdicts
        self.answer, self.stop = answer, stop
        self.judge_prompts: list[str] = []
        self.judge_streamed: list[bool] = []

    async def call(self, call: PlannedCall, *, stream: bool, attempt: int) -> Attempt:
        await asyncio.sleep(0.001)
        a = Attempt(sent_ns=time.perf_counter_ns())
        a.first_token_ns = a.last_byte_ns = time.perf_counter_ns()
        a.ok, a.status = True, 200
        if call.judge:
            self.judge_prompts.append(str(call.case.system) + str(call.case.messages))
            self.judge_streamed.append(stream)
            script = self.verdicts
            if isinstance(script, dict):
                script = next(v for k, v in script.items() if f"(case {k})" in str(call.case.messages))
            a.stop_reason, a.text = "end_turn", script.pop(0) if script else "???"
            a.input_tokens, a.output_tokens = 400, 30
        else:
            a.stop_reason, a.text = self.stop, f"{self.answer} (case {call.case.id})"
            a.input_tokens, a.output_tokens = 20, 10
        return a


def judged_cases(n: int, expected: dict) -> list[Case]:
    return [
        Case(
            id=f"c{i}",
            messages=({"role": "user", "content": f"Capital of Canada? ({i})"},),
            expected=expected,
        )
        for i in range(n)
    ]


async def run(client: JudgingClient, cases: list[Case], **settings) -> list:
    sink = ListSink()
    runner = Runner(
        RunnerSettings(run_id="r1", target="simulator", judge_model=JUDGE, **settings),
        client,
        FreeLimiter(),
        PRICES,
        [sink],
    )
    plan = make_plan(cases, MODELS[:1], repeats=1, seed=1, run_id="r1")
    await runner.run(plan)
    return sink.records


async def test_a_judged_row_carries_the_verdict_and_the_judges_own_cost() -> None:
    client = JudgingClient(['{"score": 0.9, "reason": "Names Ottawa."}'] * 3)
    rows = await run(client, judged_cases(3, {"judge": {"rubric": "names Ottawa", "pass_score": 0.8}}))
    assert len(rows) == 3, "one row per call, written once, with its verdict"
    for row in rows:
        assert (row.passed, row.score, row.grader, row.judge_model) == (True, 0.9, "judge", JUDGE)
        assert row.judge_rationale == "Names Ottawa." and row.judge_error is None
        judge_cost = PRICES.cost(JUDGE, 400, 30).total_usd
        assert row.judge_cost_usd == pytest.approx(judge_cost)
        assert row.total_cost_usd == pytest.approx(PRICES.cost(MODELS[0], 20, 10).total_usd), "apart"
        assert (row.judge_input_tokens, row.judge_output_tokens) == (400, 30)
    assert client.judge_streamed == [False] * 3, "judge calls are not streamed"
    assert not any("claude-haiku" in p for p in client.judge_prompts), "the judge never sees the model"


async def test_a_malformed_verdict_is_reasked_once_then_a_judge_error() -> None:
    client = JudgingClient({"c0": ["8/10", '{"score": 0.2, "reason": "No."}'], "c1": ["bad", "still bad"]})
    rows = sorted(
        await run(client, judged_cases(2, {"judge": "names Ottawa"}), concurrency=1), key=lambda r: r.case_id
    )
    assert (rows[0].passed, rows[0].score) == (False, 0.2), "the re-ask's verdict counts"
    assert rows[1].passed is None and "malformed" in (rows[1].judge_error or ""), "never a silent verdict"
    assert rows[1].judge_cost_usd == pytest.approx(2 * PRICES.cost(JUDGE, 400, 30).total_usd)


async def test_repeats_average_and_a_refusal_is_never_judged() -> None:
    client = JudgingClient(['{"score": 0.6, "reason": "a"}', '{"score": 1.0, "reason": "b"}'])
    rows = await run(client, judged_cases(1, {"judge": "names Ottawa"}), judge_repeats=2)
    assert rows[0].judge_score == pytest.approx(0.8) and rows[0].judge_spread == pytest.approx(0.2)
    refusing = JudgingClient([], answer="I can't help with that.", stop="refusal")
    refused = await run(refusing, judged_cases(1, {"judge": "names Ottawa"}))
    assert refused[0].passed is False and refusing.judge_prompts == []


async def test_deterministic_graders_score_without_a_judge() -> None:
    client = JudgingClient([])
    rows = await run(client, judged_cases(2, {"all": [{"contains": "Ottawa"}, {"number": 3}]}))
    assert all((r.passed, r.score, r.grader) == (False, 0.5, "all") for r in rows)
    assert client.judge_prompts == [] and all(r.judge_model is None for r in rows)


def test_the_judge_may_not_be_a_model_under_test(tmp_path) -> None:
    from harness.bench import _judge_of

    cfg = build_config({"models": f"{JUDGE},{MODELS[0]}", "judge_model": JUDGE}, env={})
    cases = judged_cases(1, {"judge": "r"})
    with pytest.raises(ConfigError, match="--allow-self-judge") as caught:
        _judge_of(cfg, cases)
    assert caught.value.option == "--judge-model"
    allowed = build_config(
        {"models": f"{JUDGE},{MODELS[0]}", "judge_model": JUDGE, "allow_self_judge": True}, env={}
    )
    assert _judge_of(allowed, cases).name == JUDGE
    assert _judge_of(cfg, judged_cases(1, {"contains": "x"})) is None, "no judge needed, none checked"


# ---------------------------------------------------------------- against the simulator


def _quality_dataset(path, n: int = 40):
    rows = []
    for i in range(n):
        kind = i % 4
        row = {"id": f"q{i}", "prompt": f"Question {i}?", "max_tokens": 200, "tags": ["hard"]}
        if kind == 0:
            row["expected"] = {"contains": "Ottawa"}
        elif kind == 1:
            row["expected"] = {"number": {"value": 3500 + i, "tolerance": 0.01}}
        elif kind == 2:
            schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
            row["expected"] = {"json": {"schema": schema}}
        else:
            row["expected"] = {
                "judge": {"rubric": "Names the river.", "reference": "The Ottawa River", "pass_score": 0.6}
            }
        rows.append(row)
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    return path


def test_graders_and_the_judge_against_the_simulator(simulator, tmp_path) -> None:
    import polars as pl

    from harness import loops
    from harness.bench import execute_run
    from harness.rundir import RunDir

    dataset = _quality_dataset(tmp_path / "q.jsonl")
    cfg = build_config(
        {
            "dataset": dataset,
            "models": "claude-haiku-4-5,claude-opus-4-8",
            "repeats": 2,
            "results_dir": tmp_path / "results",
            "base_url": simulator.url,
            "target": "simulator",
            "progress": "off",
            "posthog_enabled": False,
            "report": False,
            "judge_model": JUDGE,
        },
        env={},
    )
    result = loops.run(execute_run(cfg), cfg.event_loop)
    calls = RunDir.read(result.run_dir).load_calls().collect()
    assert calls.height == 160 and calls["status"].eq("ok").all()
    truth = {r["call_id"]: r for r in simulator.requests() if r.get("call_id") and r.get("expected_kind")}
    for row in calls.iter_rows(named=True):
        if row["grader"] != "judge":  # the simulator's decision is what our graders find
            assert row["passed"] is truth[row["call_id"]]["quality_pass"], row
    judged = calls.filter(pl.col("grader") == "judge")
    assert judged.height == 40 and judged["judge_error"].is_null().all()
    assert judged["judge_cost_usd"].min() > 0 and (judged["judge_model"] == JUDGE).all()
    assert (judged["passed"] == (judged["judge_score"] >= 0.6)).all()
    by_model = calls.group_by("model").agg(pl.col("passed").mean()).sort("model")
    haiku, opus = by_model["passed"].to_list()
    assert opus > haiku, "the profile's better model passes more often on hard cases"
    judge_requests = [r for r in simulator.requests() if r.get("judge_score") is not None]
    assert len(judge_requests) >= 40


def test_quality_headers_go_to_the_simulator_only() -> None:
    from harness.client import simulator_quality_headers
    from harness.target import Target

    case = Case(
        id="c", messages=({"role": "user", "content": "q"},), expected={"contains": "x"}, tags=("hard",)
    )
    call = PlannedCall(call_id="a", case=case, model=MODELS[0], repeat=0, index=0)
    assert set(simulator_quality_headers(call)) == {"x-harness-expected", "x-harness-tags"}
    for target, sends in (("simulator", True), ("custom", False), ("anthropic", False)):
        cli = {"models": MODELS[0], "target": target, "posthog_enabled": False}
        if target != "anthropic":
            cli["base_url"] = "http://127.0.0.1:9"
        env = {"ANTHROPIC_API_KEY": "sk-ant-" + "k" * 30} if target == "anthropic" else {}
        cfg = build_config(cli, env=env)
        resolved = Target.resolve(cfg)
        try:
            assert resolved.client_kwargs(cfg)["quality_headers"] is sends, target
        finally:
            resolved.close()
