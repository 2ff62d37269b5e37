"""The judge: a Claude model scores an answer against a rubric (and an optional reference).

The prompt is fixed and versioned (`JUDGE_PROMPT_VERSION`, recorded in the manifest) so that
scores of different runs are comparable. The judge never sees which model answered, nor the
other arms. It must reply with one JSON object `{"score": <0..1>, "reason": "<one sentence>"}`;
the reply is parsed strictly: anything else is a malformed verdict, answered by one re-ask that
quotes the format, and if that fails too the row records a judge error (never a silent pass or
fail). With `repeats` > 1 the judge is asked that many times and the mean score counts; the
spread is recorded.

The judge's calls go through an injected `send` (the runner's own attempt loop: the same client,
retries and price table, the judge's own limiter pool); its cost is its own figure, never part of
the answer's `total_cost_usd`.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from harness.graders import Answer, JudgeSpec
from harness.records import Case

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "Judge",
    "JudgeCall",
    "JudgeFailed",
    "JudgeOutcome",
    "judge_case",
    "parse_verdict",
]

JUDGE_PROMPT_VERSION = "judge-v1"
JUDGE_MAX_TOKENS = 300
MAX_RATIONALE_CHARS = 300

_SYSTEM = (
    "You grade answers for a model evaluation. You see a rubric, optionally a reference answer, "
    "and the answer to grade. Judge only the answer against the rubric (and the reference, when "
    "given). Reply with exactly one JSON object and nothing else: "
    '{"score": <a number from 0 to 1>, "reason": "<one sentence>"}. '
    "1 means the answer fully meets the rubric, 0 that it does not at all."
)
_REASK = (
    "Your reply was not in the required format. Reply with exactly one JSON object and nothing else: "
    '{"score": <a number from 0 to 1>, "reason": "<one sentence>"}.'
)


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """What one judge request returned (filled by the runner's attempt loop)."""

    ok: bool
    text: str | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    error: str | None = None


@dataclass(slots=True)
class JudgeOutcome:
    """A verdict (score and short rationale) or an error, with what judging cost."""

    score: float | None = None
    rationale: str | None = None
    error: str | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    scores: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float | None:
        return statistics.pstdev(self.scores) if len(self.scores) > 1 else None


Send = Callable[[Case, str], Awaitable[JudgeCall]]


def judge_case(spec: JudgeSpec, answer: Answer, *, case_id: str, reask_of: str | None = None) -> Case:
    """The judge's request as a `Case`: the versioned system prompt, then rubric, reference, answer."""
    parts = [f"<rubric>\n{spec.rubric}\n</rubric>"]
    if spec.reference:
        parts.append(f"<reference>\n{spec.reference}\n</reference>")
    shown = answer.text or ""
    if answer.tool_calls:
        shown += "\n" + "\n".join(
            f"[tool call] {orjson.dumps(dict(c), option=orjson.OPT_SORT_KEYS).decode()}"
            for c in answer.tool_calls
        )
    parts.append(f"<answer>\n{shown.strip()}\n</answer>")
    messages: list[dict[str, Any]] = [{"role": "user", "content": "\n\n".join(parts)}]
    if reask_of is not None:
        messages += [
            {"role": "assistant", "content": reask_of or "(empty)"},
            {"role": "user", "content": _REASK},
        ]
    return Case(
        id=f"judge:{case_id}",
        messages=tuple(messages),
        system=_SYSTEM,
        max_tokens=JUDGE_MAX_TOKENS,
        temperature=0.0,
    )


def parse_verdict(text: str | None) -> tuple[float, str] | None:
    """(score, reason) from a strict JSON verdict, or None when it is malformed."""
    if not text:
        return None
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        verdict = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(verdict, dict) or set(verdict) - {"score", "reason"}:
        return None
    score, reason = verdict.get("score"), verdict.get("reason")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return None
    if not isinstance(reason, str) or not reason.strip():
        return None
    return float(score), reason.strip()[:MAX_RATIONALE_CHARS]


class Judge:
    """Scores answers with `model` through `send`; `repeats` verdicts per answer, one re-ask each."""

    def __init__(self, model: str, send: Send, *, repeats: int = 1) -> None:
        self.model = model
        self._send = send
        self.repeats = max(1, repeats)

    async def score(self, spec: JudgeSpec, answer: Answer, call_id: str, outcome: JudgeOutcome) -> float:
        """The mean score of `repeats` verdicts (costs added to `outcome`); raises JudgeFailed."""
        for i in range(self.repeats):
            score, reason = await self._one(spec, answer, f"{call_id}:judge{i}", outcome)
            outcome.scores.append(score)
            outcome.rationale = outcome.rationale or reason
        outcome.score = statistics.fmean(outcome.scores)  # over every verdict of every judge grader
        return statistics.fmean(outcome.scores[-self.repeats :])

    async def _one(
        self, spec: JudgeSpec, answer: Answer, call_id: str, outcome: JudgeOutcome
    ) -> tuple[float, str]:
        reply: str | None = None
        for attempt in range(2):  # the verdict, then at most one re-ask
            case = judge_case(spec, answer, case_id=call_id, reask_of=reply if attempt else None)
            got = await self._send(case, f"{call_id}:{attempt}")
            outcome.cost_usd += got.cost_usd
            outcome.input_tokens += got.input_tokens
            outcome.output_tokens += got.output_tokens
            if not got.ok:
                raise JudgeFailed(got.error or "the judge call failed")
            parsed = parse_verdict(got.text)
            if parsed is not None:
                return parsed
            reply = got.text or ""
        raise JudgeFailed("malformed verdict (after one re-ask)")


class JudgeFailed(Exception):
    """The judge could not give a verdict: recorded on the row as a judge error."""
