"""The judge's prompt, its strict verdict parser, the one re-ask, repeats, and what it never shows."""

from __future__ import annotations

import pytest

from harness.graders import Answer, JudgeSpec, grade
from harness.judge import (
    JUDGE_PROMPT_VERSION,
    Judge,
    JudgeCall,
    JudgeFailed,
    JudgeOutcome,
    judge_case,
    parse_verdict,
)

SPEC = JudgeSpec(rubric="Names Ottawa as the capital.", reference="Ottawa", pass_score=0.7)


def test_strict_verdicts() -> None:
    assert parse_verdict('{"score": 0.8, "reason": "Names Ottawa."}') == (0.8, "Names Ottawa.")
    assert parse_verdict('```json\n{"score": 1, "reason": "ok"}\n```') == (1.0, "ok")
    for bad in (None, "", "8/10", '{"score": 1.4, "reason": "x"}', '{"score": "0.5", "reason": "x"}',
                '{"score": 0.5}', '{"score": 0.5, "reason": "x", "extra": 1}', '[0.5]', '{"score": true, "reason": "x"}'):  # fmt: skip
        assert parse_verdict(bad) is None, bad


def test_the_judge_sees_rubric_reference_and_answer_but_not_the_model() -> None:
    case = judge_case(
        SPEC, Answer(text="It is Ottawa.", tool_calls=[{"name": "t", "input": {}}]), case_id="c1"
    )
    prompt = case.messages[0]["content"]
    assert "<rubric>" in prompt and "<reference>\nOttawa" in prompt and "It is Ottawa." in prompt
    assert '[tool call] {"input":{},"name":"t"}' in prompt
    assert "claude" not in (case.system or "").lower() + prompt.lower(), "no model name reaches the judge"
    assert case.temperature == 0.0 and JUDGE_PROMPT_VERSION == "judge-v1"
    reask = judge_case(SPEC, Answer(text="x"), case_id="c1", reask_of="8/10")
    assert [m["role"] for m in reask.messages] == ["user", "assistant", "user"]


class FakeSend:
    def __init__(self, replies: list[str | None]) -> None:
        self.replies = replies
        self.cases: list = []

    async def __call__(self, case, call_id: str) -> JudgeCall:
        self.cases.append((case, call_id))
        text = self.replies.pop(0)
        return JudgeCall(ok=text is not None, text=text, cost_usd=0.001, input_tokens=100, output_tokens=20,
                         error=None if text is not None else "overloaded")  # fmt: skip


async def test_a_malformed_verdict_gets_one_reask() -> None:
    send = FakeSend(["I'd say 8/10", '{"score": 0.9, "reason": "Correct."}'])
    outcome = JudgeOutcome()
    assert await Judge("claude-sonnet-4-6", send).score(SPEC, Answer(text="Ottawa"), "call1", outcome) == 0.9
    assert len(send.cases) == 2 and send.cases[1][0].messages[1]["content"] == "I'd say 8/10"
    assert (outcome.cost_usd, outcome.input_tokens, outcome.output_tokens) == (pytest.approx(0.002), 200, 40)
    assert outcome.rationale == "Correct."


async def test_two_malformed_verdicts_are_a_judge_error_not_a_verdict() -> None:
    send = FakeSend(["nope", "still nope"])
    outcome = JudgeOutcome()
    with pytest.raises(JudgeFailed, match="malformed"):
        await Judge("m", send).score(SPEC, Answer(text="Ottawa"), "call1", outcome)
    assert outcome.score is None and outcome.cost_usd == pytest.approx(0.002), "what judging cost is kept"


async def test_repeats_average_and_record_the_spread() -> None:
    send = FakeSend(
        ['{"score": 0.6, "reason": "a"}', '{"score": 1.0, "reason": "b"}', '{"score": 0.8, "reason": "c"}']
    )
    outcome = JudgeOutcome()
    judge = Judge("m", send, repeats=3)
    verdict = await grade({"judge": {"rubric": "r", "pass_score": 0.75}}, Answer(text="x"),
                          lambda spec, answer: judge.score(spec, answer, "c", outcome))  # fmt: skip
    assert verdict.passed and verdict.score == pytest.approx(0.8)
    assert outcome.score == pytest.approx(0.8) and outcome.spread == pytest.approx(0.1633, abs=1e-3)
