"""The quality of one finished call: its case's grader applied to the answer, the judge asked when needed.

The runner asks `Quality.of(...)` once per call, after the answer arrived and before the row is
written, so the row is written once, with its verdict. A call without an expectation gets no
verdict (null columns); a failed call with one fails it. A judge that cannot give a verdict
leaves `passed` null and says why in `judge_error` (never a silent pass or fail); what judging
cost is recorded either way, in its own columns, never in the answer's `total_cost_usd`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.graders import Answer, JudgeSpec, grade, judge_specs, kind_of
from harness.judge import Judge, JudgeFailed, JudgeOutcome
from harness.records import Case

__all__ = ["NO_VERDICT", "Quality", "Verdicts"]


@dataclass(frozen=True, slots=True)
class Quality:
    """The quality columns of one row."""

    passed: bool | None = None
    score: float | None = None
    grader: str | None = None
    judge_model: str | None = None
    judge_score: float | None = None
    judge_spread: float | None = None
    judge_rationale: str | None = None
    judge_error: str | None = None
    judge_cost_usd: float = 0.0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0

    def columns(self) -> dict[str, Any]:
        """The row's quality columns, named as the fields are."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


NO_VERDICT = Quality()


class Verdicts:
    """Grades answers for one engine; `judge` is None when no case needs one."""

    def __init__(self, judge: Judge | None) -> None:
        self.judge = judge

    async def of(
        self,
        case: Case,
        ok: bool,
        text: str | None,
        tool_calls: Sequence[Mapping[str, Any]] | None,
        stop_reason: str | None,
        call_id: str,
    ) -> Quality:
        expected = case.expected
        if not expected:
            return NO_VERDICT
        grader = kind_of(expected)
        if not ok:
            return Quality(passed=False, score=0.0, grader=grader)
        answer = Answer(text=text, tool_calls=tool_calls or (), stop_reason=stop_reason)
        specs = judge_specs(expected)
        if not specs or stop_reason == "refusal":
            verdict = await grade(expected, answer)
            return Quality(passed=verdict.passed, score=verdict.score, grader=grader)
        judge = self.judge
        if judge is None:  # bench refuses such a run before any call; kept for direct engine users
            return Quality(grader=grader, judge_error="no judge model configured")
        outcome = JudgeOutcome()

        async def ask(spec: JudgeSpec, given: Answer) -> float:
            return await judge.score(spec, given, call_id, outcome)

        common: dict[str, Any] = {"grader": grader, "judge_model": judge.model}
        try:
            verdict = await grade(expected, answer, ask)
        except JudgeFailed as exc:
            return Quality(judge_error=str(exc)[:300], **common, **_costs(outcome))
        return Quality(
            passed=verdict.passed,
            score=verdict.score,
            judge_score=outcome.score,
            judge_spread=outcome.spread,
            judge_rationale=outcome.rationale,
            **common,
            **_costs(outcome),
        )


def _costs(outcome: JudgeOutcome) -> dict[str, Any]:
    return {
        "judge_cost_usd": outcome.cost_usd,
        "judge_input_tokens": outcome.input_tokens,
        "judge_output_tokens": outcome.output_tokens,
    }
