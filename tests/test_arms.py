"""Arms (model + variant) end to end: config, plan → records → events → report → `compare`, and stop reasons.

The runs go over real sockets to the session simulator, which thinks 35-85 % of a thinking
budget (`harness/simulator/__init__.py`), so a larger budget must show as more output tokens.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.console import Console

from harness import loops
from harness.bench import execute_run
from harness.config import build_config
from harness.errors import ConfigError, StorageError
from harness.plan import call_id_for
from harness.records import CALL_SCHEMA, arm_expr, arm_of
from harness.report import compare_runs, write_report
from harness.report.console import print_summary_table
from harness.report.summary import STOP_COLUMNS
from tests.helpers import cli_commands
from tests.synthetic import ModelSpec, synthetic_calls, write_run

MODEL = "claude-haiku-4-5"
THINK = """
[variants.think-2k]
thinking = {type = "enabled", budget_tokens = 2048}
max_tokens = 4096

[variants.think-8k]
thinking = {type = "enabled", budget_tokens = 8192}
max_tokens = 12000
"""
ARMS = [f"{MODEL} [think-2k]", f"{MODEL} [think-8k]"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _dataset(path: Path, prompts: list[str], max_tokens: int | list[int] = 64) -> Path:
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    rows = [
        {"id": f"c{i}", "prompt": p, "max_tokens": n}
        for i, (p, n) in enumerate(zip(prompts, limits, strict=True))
    ]
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _run(tmp_path: Path, sim: Any, dataset: Path, **over: Any):
    cli = {
        "dataset": dataset,
        "models": MODEL,
        "results_dir": tmp_path / "results",
        "base_url": sim.url,
        "target": "simulator",
        "progress": "off",
        "report": False,
        "posthog_enabled": False,
        "concurrency": 8,
        **over,
    }
    cfg = build_config(cli, env={})
    return loops.run(execute_run(cfg, console=Console(file=io.StringIO())), cfg.event_loop)


# ---------------------------------------------------------------- config


def test_profile_variants_and_the_flag_file_that_replaces_them(tmp_path: Path) -> None:
    profile = _write(tmp_path / "p.toml", f'[run]\nmodels = ["{MODEL}"]\n' + THINK)
    cfg = build_config({"profile": profile}, env={})
    assert list(cfg.variants) == ["think-2k", "think-8k"]
    assert cfg.variants["think-8k"] == {
        "thinking": {"type": "enabled", "budget_tokens": 8192},
        "max_tokens": 12000,
    }
    assert cfg.variants_source == f"profile {profile}"
    flag = _write(tmp_path / "v.toml", '[variants.low]\noutput_config = {effort = "low"}\n')
    cfg = build_config({"profile": profile, "variants": flag}, env={})
    assert cfg.variants == {"low": {"output_config": {"effort": "low"}}}  # replaced, not merged
    assert cfg.variants_source == f"--variants {flag}"
    assert cfg.redacted()["variants"] == {"low": {"output_config": {"effort": "low"}}}
    assert build_config({"models": MODEL}, env={}).variants == {}


@pytest.mark.parametrize(
    ("where", "text", "words"),
    [
        ("profile", "[variants.fast]\ntemprature = 0.2\n", "[variants.fast] temprature: unknown key"),
        (
            "profile",
            "[variants.fast]\nmax_tokens = 0\n",
            "[variants.fast] max_tokens: must be a positive integer",
        ),
        ("profile", '[variants."bad name"]\ntop_k = 3\n', "[variants.bad name]: a variant name uses"),
        ("profile", "variants = 3\n", "profile [variants]: must be [variants.NAME] tables"),
        ("flag", "[variants.fast]\ntools = true\n", "[variants.fast] tools: must be false"),
        ("flag", "[variants.fast\n", "--variants: "),
        ("flag", "[run]\nseed = 1\n", "[variants.run] seed: unknown key"),
    ],
)
def test_a_bad_variant_is_refused_naming_the_file_and_the_key(tmp_path: Path, where, text, words) -> None:
    path = _write(tmp_path / "x.toml", text)
    cli = {"models": MODEL, **({"profile": path} if where == "profile" else {"variants": path})}
    with pytest.raises(ConfigError) as raised:
        build_config(cli, env={})
    message = str(raised.value)
    assert words in message
    if "variants = 3" not in text:
        assert str(path) in message  # the file it came from


def test_a_missing_variants_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--variants: .*nope\.toml: cannot read"):
        build_config({"models": MODEL, "variants": tmp_path / "nope.toml"}, env={})


def test_the_cli_takes_variants_and_refuses_a_bad_file_before_any_call(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    assert "--variants" in cli_commands()["run"]
    bad = _write(tmp_path / "v.toml", "[variants.hot]\ntemperature = 0.5\ntop_p = 2\nfoo = 1\n")
    dataset = _dataset(tmp_path / "d.jsonl", ["hi"])
    results = tmp_path / "results"
    args = ["run", "--dataset", str(dataset), "--models", MODEL, "--variants", str(bad)]
    result = CliRunner().invoke(app, [*args, "--results-dir", str(results)], env={"ANTHROPIC_API_KEY": ""})
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    assert f"--variants {bad} [variants.hot] foo: unknown key" in " ".join(output.split())
    assert not results.exists()


def test_a_variant_a_case_cannot_take_stops_the_run_before_any_call(tmp_path: Path, simulator) -> None:
    dataset = _dataset(tmp_path / "d.jsonl", ["one", "two"], max_tokens=3000)
    flag = _write(
        tmp_path / "v.toml", '[variants.big]\nthinking = {type = "enabled", budget_tokens = 4000}\n'
    )
    with pytest.raises(ConfigError) as raised:
        _run(tmp_path, simulator, dataset, variants=flag)
    assert f"--variants {flag} [variants.big]" in str(raised.value)
    assert "'c0' (line 1): thinking.budget_tokens: must be below max_tokens (3000)" in str(raised.value)
    assert simulator.requests() == []
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- the arm


def test_arm_of_and_its_polars_expression_agree() -> None:
    frame = pl.DataFrame({"model": ["m-1", "m-1", "m-2"], "variant": [None, "think-2k", "x"]})
    assert frame.select(arm_expr())["arm"].to_list() == [arm_of(m, v) for m, v in frame.iter_rows()]
    assert arm_of("m-1", None) == "m-1"
    assert arm_of("claude-sonnet-4-6", "think-4k") == "claude-sonnet-4-6 [think-4k]"


def test_the_console_and_the_report_name_arms_only_when_there_are_variants(tmp_path: Path) -> None:
    plain = write_run(tmp_path / "plain", synthetic_calls([ModelSpec("m-1")], cases=20))
    armed_frame = synthetic_calls([ModelSpec("m-1")], cases=20, repeats=2)
    armed_frame = armed_frame.with_columns(
        pl.when(pl.col("repeat") == 0).then(pl.lit("v-a")).otherwise(pl.lit("v-b")).alias("variant")
    )
    armed = write_run(tmp_path / "armed", armed_frame)
    outputs = {}
    for name, run in (("plain", plain), ("armed", armed)):
        result = write_report(run)
        buffer = io.StringIO()
        print_summary_table(result.summary, Console(file=buffer, width=200))
        outputs[name] = (buffer.getvalue(), result.report_md.read_text(), result)
    console, md, result = outputs["plain"]
    assert "Per model" in console and "Per arm" not in console
    assert "| model | n |" in md and "| arm |" not in md and "arm(s)" not in md
    assert result.summary.select("model", "variant", "arm").row(0) == ("m-1", None, "m-1")
    console, md, result = outputs["armed"]
    assert "Per arm" in console and "m-1 [v-a]" in console and "m-1 [v-b]" in console
    assert "| arm | n |" in md and "## Arm vs arm" in md and "across 2 arm(s)" in md
    assert result.summary["arm"].to_list() == ["m-1 [v-a]", "m-1 [v-b]"]
    assert result.recommended_arm in ("m-1 [v-a]", "m-1 [v-b]") and result.recommended_model == "m-1"
    comparison = pl.read_parquet(armed / "comparison.parquet")
    row = comparison.filter(pl.col("arm") == "m-1 [v-a]").row(0, named=True)
    assert (row["model"], row["variant"], row["versus_model"], row["versus_variant"]) == (
        "m-1",
        "v-a",
        "m-1",
        "v-b",
    )
    assert row["latency_p50_paired_cases"] == 20  # paired by case across the two arms


def test_the_cli_prints_arm_names_as_text_not_markup(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    frame = synthetic_calls([ModelSpec("m-1")], cases=20, repeats=2)
    frame = frame.with_columns(
        pl.when(pl.col("repeat") == 0).then(pl.lit("v-a")).otherwise(pl.lit("v-b")).alias("variant")
    )
    runs = [write_run(tmp_path / name, frame.with_columns(pl.lit(name).alias("run_id"))) for name in "ab"]
    env = {"ANTHROPIC_API_KEY": "", "COLUMNS": "250"}
    report = CliRunner().invoke(app, ["report", str(runs[0])], env=env)
    assert report.exit_code == 0, report.output
    assert "Recommended: m-1 [v-" in report.output and "Pareto set: m-1 [v-" in report.output
    compare = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[1])], env=env)
    assert compare.exit_code == 0, compare.output
    assert "| m-1 [v-a] | p50 latency |" in compare.output


# ---------------------------------------------------------------- stop reasons


def test_stop_reason_counts_cover_every_finished_call_once(tmp_path: Path) -> None:
    frame = synthetic_calls([ModelSpec("m-1", error_rate=0.2), ModelSpec("m-2")], cases=40, seed=4)
    reasons = [
        "end_turn",
        "max_tokens",
        "refusal",
        "tool_use",
        "surprise",
        None,
        "stop_sequence",
    ]  # 7: both models
    frame = frame.with_columns(
        pl.when(pl.col("status") == "error")
        .then(None)
        .otherwise(pl.Series([reasons[i % len(reasons)] for i in range(frame.height)]))
        .alias("stop_reason")
    )
    frame = frame.with_columns(  # two cancelled calls: counted in no stop-reason column
        pl.when(pl.col("call_id").is_in(["c0", "c1"]))
        .then(pl.lit("cancelled"))
        .otherwise("status")
        .alias("status")
    )
    summary = write_report(write_run(tmp_path / "run", frame)).summary
    stop_columns = [column for _, column in STOP_COLUMNS]
    for r in summary.iter_rows(named=True):
        assert sum(r[c] for c in stop_columns) == r["ok"] + r["errors"]
    expected = (
        frame.filter(pl.col("status") != "cancelled")
        .group_by("model")
        .agg(
            (pl.col("stop_reason") == "refusal").sum().alias("refusal"),
            (pl.col("stop_reason") == "surprise").sum().alias("surprise"),
            (pl.col("stop_reason").is_null() & (pl.col("status") == "ok")).sum().alias("ok_without"),
            (pl.col("status") == "error").sum().alias("errors"),
        )
    )
    for row in expected.iter_rows(named=True):
        got = summary.filter(pl.col("model") == row["model"]).row(0, named=True)
        assert got["stop_refusal"] == row["refusal"] > 0
        assert got["stop_other"] == row["surprise"] + row["ok_without"]
        assert got["stop_error_no_reason"] == row["errors"]


def test_the_report_shows_refusals_and_truncations_from_the_simulator(tmp_path: Path, simulator) -> None:
    prompts = ["Please answer [[refuse]] this.", *(f"Tell me about topic {i}." for i in range(7))]
    # max_tokens 1 always truncates (the simulator's answers are at least one token long)
    dataset = _dataset(tmp_path / "d.jsonl", prompts, max_tokens=[64, 1, 1, 1, 400, 400, 400, 400])
    result = _run(tmp_path, simulator, dataset)
    calls = pl.read_parquet(result.run_dir / "calls.parquet")
    truncated = calls.filter(pl.col("stop_reason") == "max_tokens").height
    assert calls.filter(pl.col("stop_reason") == "refusal").height == 1 and truncated >= 3
    report = write_report(result.run_dir)
    md = report.report_md.read_text()
    table = md.split("## Stop reasons", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | finished calls | end_turn | max_tokens | stop_sequence | tool_use |")
    cells = next(line for line in table.splitlines() if line.startswith(f"| {MODEL} |")).split(" | ")
    columns = header.split(" | ")
    assert cells[columns.index("refusal")] == "1 (12.5%)"
    assert cells[columns.index("max_tokens")] == f"{truncated} ({truncated / 8:.1%})"
    assert cells[columns.index("finished calls")] == "8"
    assert f"- Refusals: {MODEL} 1 (12.5%)" in md
    assert f"- Truncated (max_tokens or context window): {MODEL} {truncated} (" in md
    assert "<h2>Stop reasons</h2>" in report.report_html.read_text()
    row = report.summary.row(0, named=True)
    assert (row["stop_refusal"], row["stop_max_tokens"]) == (1, truncated)


# ---------------------------------------------------------------- two thinking budgets, end to end


@pytest.fixture(scope="module")
def two_budget_runs(tmp_path_factory, simulator_session):
    """Two runs of one model with two thinking budgets (events on), for the tests below."""
    simulator_session.reset()
    tmp = tmp_path_factory.mktemp("arms")
    dataset = _dataset(
        tmp / "d.jsonl", [f"Question {i}: how do tides work near island {i}?" for i in range(10)]
    )
    flag = _write(tmp / "variants.toml", THINK)
    first = _run(tmp, simulator_session, dataset, variants=flag, run_id="arms-1", posthog_enabled=True,
                 posthog_host=simulator_session.url)  # fmt: skip
    events = simulator_session.events()["events"]
    second = _run(tmp, simulator_session, dataset, variants=flag, run_id="arms-2", report=True)
    return first, second, events


def test_each_arm_runs_every_case_with_stable_distinct_call_ids(two_budget_runs) -> None:
    first, _second, events = two_budget_runs
    calls = pl.read_parquet(first.run_dir / "calls.parquet")
    assert dict(calls.schema) == CALL_SCHEMA
    assert calls.height == 20 and calls["status"].to_list() == ["ok"] * 20
    assert calls.group_by("variant").len().sort("variant").rows() == [("think-2k", 10), ("think-8k", 10)]
    assert calls["call_id"].n_unique() == 20
    for r in calls.iter_rows(named=True):
        assert r["call_id"] == call_id_for("arms-1", r["case_id"], MODEL, r["repeat"], r["variant"])
    assert sorted((e["properties"]["call_id"], e["properties"]["variant"]) for e in events) == sorted(
        calls.select("call_id", "variant").rows()
    )
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["variants"]["think-8k"] == {
        "thinking": {"type": "enabled", "budget_tokens": 8192},
        "max_tokens": 12000,
    }


def test_the_larger_budget_thinks_more(two_budget_runs) -> None:
    first, _second, _events = two_budget_runs
    calls = pl.read_parquet(first.run_dir / "calls.parquet")
    by_case = calls.pivot("variant", index="case_id", values="output_tokens")
    assert (by_case["think-8k"] > by_case["think-2k"]).all(), by_case
    summary = write_report(first.run_dir).summary
    means = dict(zip(summary["arm"], summary["output_tokens_mean"], strict=True))
    assert means[ARMS[1]] > 1.5 * means[ARMS[0]]


def test_the_report_summarises_and_compares_the_two_arms(two_budget_runs) -> None:
    _first, second, _events = two_budget_runs
    assert second.report is not None and second.report.recommended_arm in ARMS
    summary = pl.read_parquet(second.run_dir / "summary.parquet")
    assert summary.select("model", "variant", "arm").rows() == [
        (MODEL, "think-2k", ARMS[0]),
        (MODEL, "think-8k", ARMS[1]),
    ]
    comparison = pl.read_parquet(second.run_dir / "comparison.parquet")
    assert sorted(comparison.select("arm", "versus").rows()) == [(ARMS[0], ARMS[1]), (ARMS[1], ARMS[0])]
    assert comparison["latency_p50_paired_cases"].to_list() == [10, 10]
    eight = comparison.filter(pl.col("arm") == ARMS[1]).row(0, named=True)
    assert eight["cost_mean_diff"] > 0  # more thinking, more output tokens, more dollars
    md = second.report.report_md.read_text()
    for arm in ARMS:
        assert f"| {arm} |" in md
    assert "## Arm vs arm" in md and "- Arms: every model × variant (think-2k: thinking = " in md


def test_compare_of_two_runs_pairs_each_arm_with_itself(two_budget_runs, tmp_path: Path) -> None:
    first, second, _events = two_budget_runs
    result = compare_runs(first.run_dir, second.run_dir, out_dir=tmp_path)
    table = result.table
    assert sorted(set(table["arm"].to_list())) == ARMS and table.height == 2 * 7
    assert set(table["variant"].to_list()) == {"think-2k", "think-8k"}
    # The simulator's tokens are a function of the request: the same arm costs the same in both runs.
    costs = table.filter(pl.col("metric") == "mean cost per call")
    assert costs["change"].to_list() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert "| arm | metric |" in result.markdown and f"| {ARMS[1]} | p50 latency |" in result.markdown
    assert not result.warnings


def test_resume_refuses_changed_variants(two_budget_runs, simulator_session, tmp_path: Path) -> None:
    first, _second, _events = two_budget_runs
    other = _write(tmp_path / "v.toml", THINK.replace("8192", "4096"))
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    with pytest.raises(StorageError, match="the variants changed since the run started"):
        _run(
            first.run_dir.parent.parent,
            simulator_session,
            Path(manifest["dataset"]["path"]),
            variants=other,
            resume="arms-1",
        )
