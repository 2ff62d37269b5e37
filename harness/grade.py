"""`harness grade RUN_DIR`: grade, or re-grade with another judge, the stored answers of a finished run.

Why: a team re-judges last week's run with a new rubric version or another judge model without
paying for the answers again, and a run made without a judge can be judged afterwards. The
expectations come from the run's dataset (the same file: its sha256 must match the manifest's);
the answers from `calls.parquet`. Each verdict is one JSON line appended to the run directory's
verdicts file (`RunDir.append_verdicts`) as soon as it is known, so a kill loses only verdicts
in flight: a rerun skips every call already graded the same way ("grading": deterministic
graders, or judge model + prompt version + repeats) and grades each remaining call once. Only
the quality columns change; the measured ones never do. `--only-missing` grades only calls with
no verdict (or a judge error).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from harness.client import ClaudeClient
from harness.config import RunConfig, build_config
from harness.dataset import load_cases
from harness.errors import ConfigError, StorageError
from harness.graders import judge_specs
from harness.judge import JUDGE_PROMPT_VERSION
from harness.limiter import Limiter, PoolLimits
from harness.pricing import PriceTable
from harness.quality import Quality
from harness.records import Case
from harness.rundir import VERDICT_COLUMNS, RunDir
from harness.runner import Runner, RunnerSettings
from harness.target import Target, launch_simulator, needs_simulator, preflight

__all__ = ["GradeResult", "grade_run"]


@dataclass
class GradeResult:
    graded: int = 0
    skipped: int = 0
    judge_errors: int = 0
    judge_cost_usd: float = 0.0
    grading: str = ""


def _grading(case: Case, cfg: RunConfig) -> str:
    """What grades this case: its result does not change unless this does."""
    if judge_specs(case.expected):
        return f"judge:{cfg.judge_model}:{JUDGE_PROMPT_VERSION}:x{cfg.judge_repeats}"
    return "deterministic"


def _config(run: RunDir, given: dict[str, Any]) -> RunConfig:
    """The run's own configuration (its saved command line), with the grading options given now."""
    saved = run.manifest.get("cli")
    if not isinstance(saved, dict):
        raise StorageError(f"{run.path}: the manifest has no saved configuration to grade with")
    keep = {k: v for k, v in saved.items() if k not in ("resume", "run_id")}
    return build_config({**keep, **{k: v for k, v in given.items() if v is not None}})


async def grade_run(
    run_dir: Path,
    *,
    judge_model: str | None = None,
    judge_repeats: int | None = None,
    allow_self_judge: bool | None = None,
    only_missing: bool = False,
    concurrency: int = 8,
) -> GradeResult:
    """Grade the run's answers; every verdict is appended as it is known (see the module docstring)."""
    run = RunDir.for_grading(run_dir)
    try:
        given = {
            "judge_model": judge_model,
            "judge_repeats": judge_repeats,
            "allow_self_judge": allow_self_judge,
        }
        cfg = _config(run, given)
        if cfg.dataset is None:
            raise ConfigError("--dataset", "the run's manifest names no dataset")
        loaded = load_cases(cfg.dataset)
        recorded = (run.manifest.get("dataset") or {}).get("sha256")
        if recorded and recorded != loaded.sha256:
            raise StorageError(
                f"{cfg.dataset}: changed since the run (sha256 differs): its expectations may not match"
            )
        cases = {c.id: c for c in loaded.cases}
        todo = _todo(run, cases, cfg, only_missing)
        result = GradeResult(skipped=todo.skipped, grading=cfg.judge_model)
        if todo.rows:
            await _grade(run, cfg, cases, todo.rows, result, concurrency)
        return result
    finally:
        run.close()


@dataclass
class _Todo:
    rows: list[dict[str, Any]]
    skipped: int


def _todo(run: RunDir, cases: dict[str, Case], cfg: RunConfig, only_missing: bool) -> _Todo:
    calls = run.load_calls().filter(pl.col("status") != "cancelled").collect()
    verdicts = run.verdicts()
    done = dict(zip(verdicts["call_id"].to_list(), verdicts["grading"].to_list(), strict=True))
    rows, skipped = [], 0
    for row in calls.iter_rows(named=True):
        case = cases.get(row["case_id"])
        if case is None or not case.expected:
            continue
        missing = row["grader"] is None or row["judge_error"] is not None
        if only_missing and not missing:
            skipped += 1
            continue
        grading = _grading(case, cfg)
        # A run judged inline by this judge is already graded this way (the prompt version is the run's).
        judged_inline = grading != "deterministic" and row["judge_model"] == cfg.judge_model and not missing
        if done.get(row["call_id"]) == grading or (judged_inline and row["call_id"] not in done):
            skipped += 1
            continue
        rows.append(row)
    return _Todo(rows, skipped)


async def _grade(
    run: RunDir,
    cfg: RunConfig,
    cases: dict[str, Case],
    rows: list[dict[str, Any]],
    result: GradeResult,
    concurrency: int,
) -> None:
    simulator = launch_simulator(cfg) if needs_simulator(cfg) else None
    target = Target.resolve(replace(cfg, posthog_enabled=False), simulator)
    try:
        client = ClaudeClient(**target.client_kwargs(cfg))
        try:
            needs_judge = any(judge_specs(cases[r["case_id"]].expected) for r in rows)
            if needs_judge:
                await preflight(client, (cfg.judge_model,))
            judge = cfg.judge
            pools = {judge.name: PoolLimits(rpm=judge.rpm, itpm=judge.itpm, otpm=judge.otpm)} if judge else {}
            limiter = Limiter(pools, {judge.name: judge.name} if judge else {})
            prices = PriceTable.resolve([cfg.judge_model] if needs_judge else [], cfg.prices)
            settings = replace(
                RunnerSettings.from_config(cfg, run.run_id),
                judge_model=cfg.judge_model if needs_judge else None,
            )
            engine = Runner(settings, client, limiter, prices, [])
            gate = asyncio.Semaphore(max(1, concurrency))

            async def one(row: dict[str, Any]) -> None:
                case = cases[row["case_id"]]
                async with gate:
                    q = await engine.verdict(
                        case,
                        row["status"] == "ok",
                        row["response_text"],
                        orjson.loads(row["tool_calls"]) if row["tool_calls"] else None,
                        row["stop_reason"],
                        f"{row['call_id']}:grade",
                    )
                _record(run, row["call_id"], _grading(case, cfg), q, result)

            await asyncio.gather(*(one(r) for r in rows))
            await limiter.aclose()
        finally:
            await client.aclose()
    finally:
        target.close()
        if simulator is not None:
            simulator.stop()


def _record(run: RunDir, call_id: str, grading: str, q: Quality, result: GradeResult) -> None:
    verdict = {k: v for k, v in asdict(q).items() if k in VERDICT_COLUMNS}
    line = orjson.dumps({"call_id": call_id, "grading": grading, **verdict}, option=orjson.OPT_APPEND_NEWLINE)
    run.append_verdicts(line)
    result.graded += 1
    result.judge_cost_usd += q.judge_cost_usd
    result.judge_errors += q.judge_error is not None
