"""`harness grade`: re-grade a finished run with another judge; resumable after kill -9, measured columns untouched."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import polars as pl

from harness import loops
from harness.bench import execute_run
from harness.config import build_config
from harness.grade import grade_run
from harness.rundir import RunDir
from tests import reliability_matrix as rm
from tests.helpers import wait_for
from tests.simproc import SimProc

FIRST_JUDGE, SECOND_JUDGE = "claude-sonnet-4-6", "claude-opus-4-8"
MEASURED = [
    "status",
    "latency_s",
    "ttft_s",
    "input_tokens",
    "output_tokens",
    "total_cost_usd",
    "response_text",
]


def judged_run(sim: SimProc, tmp_path: Path, n: int) -> Path:
    rows = [
        {
            "id": f"j{i}",
            "prompt": f"Summarise item {i} in a sentence.",
            "max_tokens": 120,
            "expected": {
                "judge": {"rubric": "Mentions the river.", "reference": "The Ottawa River", "pass_score": 0.6}
            }
            if i % 2
            else {"contains": "Ottawa"},
        }
        for i in range(n)
    ]
    dataset = tmp_path / "j.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = build_config(
        {
            "dataset": str(dataset),
            "models": "claude-haiku-4-5",
            "results_dir": str(tmp_path / "results"),
            "base_url": sim.url,
            "target": "simulator",
            "posthog_enabled": False,
            "report": False,
            "progress": "off",
            "judge_model": FIRST_JUDGE,
        },
        env={},
    )
    return loops.run(execute_run(cfg, cli_args={k: str(v) for k, v in {
        "dataset": dataset, "models": "claude-haiku-4-5", "results_dir": tmp_path / "results",
        "base_url": sim.url, "target": "simulator", "posthog_enabled": False, "report": False,
        "progress": "off", "judge_model": FIRST_JUDGE}.items()}), "auto").run_dir  # fmt: skip


def test_regrading_with_another_judge_changes_only_the_verdicts(simulator: SimProc, tmp_path: Path) -> None:
    run_dir = judged_run(simulator, tmp_path, 12)
    before = RunDir.read(run_dir).load_calls().collect().sort("call_id")
    assert (before.filter(pl.col("grader") == "judge")["judge_model"] == FIRST_JUDGE).all()
    result = loops.run(grade_run(run_dir, judge_model=SECOND_JUDGE))
    assert result.graded == 12 and result.judge_errors == 0 and result.judge_cost_usd > 0
    after = RunDir.read(run_dir).load_calls().collect().sort("call_id")
    assert after.select(MEASURED).equals(before.select(MEASURED)), "measured columns never change"
    assert (after.filter(pl.col("grader") == "judge")["judge_model"] == SECOND_JUDGE).all()
    again = loops.run(grade_run(run_dir, judge_model=SECOND_JUDGE))
    assert (again.graded, again.skipped) == (0, 12), "graded the same way already: nothing to do"
    missing = loops.run(grade_run(run_dir, only_missing=True))
    assert missing.graded == 0


def test_grade_resumes_after_kill_9_and_records_each_verdict_once(simulator: SimProc, tmp_path: Path) -> None:
    run_dir = judged_run(simulator, tmp_path, 60)
    simulator.set_faults({}, slow_first_byte_s=0.0)
    args = rm.harness_cmd("grade", str(run_dir), "--judge-model", SECOND_JUDGE, "--concurrency", "2")
    child = subprocess.Popen(
        args, env=rm.planted_env(), cwd=rm.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    verdicts = run_dir / "verdicts.jsonl"
    assert wait_for(lambda: verdicts.is_file() and verdicts.read_bytes().count(b"\n") >= 5, 60, 0.005)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.stderr is not None
    child.stderr.close()
    done_before = verdicts.read_bytes().count(b"\n")
    assert done_before < 60, "killed mid-way"
    time.sleep(0.2)
    resumed = subprocess.run(
        args, env=rm.planted_env(), cwd=rm.ROOT, capture_output=True, text=True, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in verdicts.read_text().splitlines() if line.strip().endswith("}")]
    ids = [v["call_id"] for v in lines]
    assert len(set(ids)) == 60, "every answer graded"
    assert len(ids) == len(set(ids)), "none graded twice: the rerun skipped what the killed one recorded"
    calls = RunDir.read(run_dir).load_calls().collect()
    assert (calls.filter(pl.col("grader") == "judge")["judge_model"] == SECOND_JUDGE).all()


def test_a_torn_verdict_line_is_dropped_before_grading_appends(simulator: SimProc, tmp_path: Path) -> None:
    run_dir = judged_run(simulator, tmp_path, 4)
    loops.run(grade_run(run_dir, judge_model=SECOND_JUDGE))
    verdicts = run_dir / "verdicts.jsonl"
    whole = verdicts.read_bytes()
    verdicts.write_bytes(whole + b'{"call_id": "torn", "grad')  # a kill in mid-append
    assert RunDir.read(run_dir).verdicts().height == 4, "a reader ignores the torn tail"
    RunDir.for_grading(run_dir).close()
    assert verdicts.read_bytes() == whole, "grading cuts it before appending"
