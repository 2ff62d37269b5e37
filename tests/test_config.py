"""`harness.config`: defaults < profile < environment < command line, and every error names the option as given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from harness.cli import app
from harness.config import OPTIONS, RunConfig, build_config
from harness.errors import ConfigError

MODEL = "claude-haiku-4-5"


def write_profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def config(cli: dict[str, Any], env: dict[str, str] | None = None) -> RunConfig:
    return build_config({"models": MODEL, **cli}, env=env or {})


def test_defaults_without_profile_or_environment() -> None:
    c = config({})
    assert (c.repeats, c.concurrency, c.max_retries, c.stream, c.target) == (1, 16, 4, True, "simulator")
    assert c.arrival == "closed" and c.rate is None
    assert c.ramp_up_s == pytest.approx(0.004 * 16), "4 ms per concurrent call by default"


def test_precedence_defaults_profile_env_cli(tmp_path: Path) -> None:
    profile = write_profile(
        tmp_path,
        f"""
[run]
models = ["{MODEL}"]
repeats = 3
concurrency = 7
timeout = 30
[posthog]
host = "http://profile-host"
""",
    )
    from_profile = build_config({"profile": str(profile)}, env={})
    assert (from_profile.repeats, from_profile.concurrency, from_profile.timeout_s) == (3, 7, 30.0)
    assert from_profile.posthog_host == "http://profile-host"
    with_env = build_config({"profile": str(profile)}, env={"POSTHOG_HOST": "http://env-host"})
    assert with_env.posthog_host == "http://env-host", "environment beats profile"
    with_cli = build_config(
        {"profile": str(profile), "repeats": 5, "posthog_host": "http://cli-host"},
        env={"POSTHOG_HOST": "http://env-host"},
    )
    assert with_cli.repeats == 5 and with_cli.posthog_host == "http://cli-host", "command line beats all"
    assert with_cli.concurrency == 7, "what the command line leaves out still comes from the profile"


def test_profile_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    profile = write_profile(tmp_path / "sub", f'[run]\nmodels = ["{MODEL}"]\ndataset = "../d.jsonl"\n')
    assert build_config({"profile": str(profile)}, env={}).dataset == tmp_path / "d.jsonl"


def test_model_limits_come_from_the_models_table(tmp_path: Path) -> None:
    profile = write_profile(
        tmp_path, f'[run]\nmodels = ["{MODEL}"]\n[models."{MODEL}"]\nrpm = 50\npool = "p"\n'
    )
    (spec,) = build_config({"profile": str(profile)}, env={}).models
    assert (spec.name, spec.rpm, spec.pool) == (MODEL, 50, "p")


def test_target_follows_keys_and_urls() -> None:
    assert config({}).target == "simulator"
    assert config({}, env={"ANTHROPIC_API_KEY": "sk-ant-" + "x" * 20}).target == "anthropic"
    assert config({"base_url": "http://127.0.0.1:9"}).target == "custom", (
        "--base-url alone is a custom target"
    )
    assert config({"base_url": "http://127.0.0.1:9", "target": "simulator"}).target == "simulator"
    assert config({}, env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}).target == "custom"


def test_a_key_is_held_as_a_secret() -> None:
    key = "sk-ant-" + "s" * 30
    c = config({}, env={"ANTHROPIC_API_KEY": key})
    assert c.api_key.get() == key
    assert key not in repr(c) and key not in str(c.redacted())


@pytest.mark.parametrize(
    ("cli", "named"),
    [
        ({"concurrency": 0}, "--concurrency"),
        ({"repeats": 1.5}, "--repeats"),
        ({"rate": -1}, "--rate"),
        ({"arrival": "poisson"}, "--arrival"),
        ({"arrival": "bursty", "rate": 2}, "--arrival"),
        ({"max_cost_usd": 0}, "--max-cost"),
        ({"duration_s": 0}, "--duration"),
        ({"timeout_s": 0}, "--timeout"),
        ({"grace_s": -1}, "--grace"),
        ({"ramp_up_s": -1}, "--ramp-up"),
        ({"max_in_flight": 0}, "--max-in-flight"),
        ({"max_calls": 0}, "--max-calls"),
        ({"sim_time_scale": -1}, "--time-scale"),
        ({"target": "moon"}, "--target"),
        ({"target": "anthropic"}, "--target"),
        ({"target": "custom"}, "--base-url"),
        ({"transport": "curl"}, "--transport"),
        ({"workers": 0}, "--workers"),
        ({"event_loop": "trio"}, "--event-loop"),
        ({"progress": "loud"}, "--progress"),
        ({"models": f"{MODEL},{MODEL}"}, "--models"),
        ({"models": ""}, "--models"),
        ({"no_such_option": 1}, "--no-such-option"),
    ],
)
def test_every_command_line_error_names_the_flag(cli: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(cli)
    assert caught.value.option == named


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[run]\nconcurrency = 0\n", "run.concurrency"),
        ("[run]\nduration = -5\n", "run.duration"),
        ("[run]\nmax_cost = 0\n", "run.max_cost"),
        ('[run]\narrival = "bursty"\nrate = 3\n', "run.arrival"),
        ("[target]\ntime_scale = -1\n", "target.time_scale"),
        ('[target]\nkind = "moon"\n', "target.kind"),
        ("[run]\nsurprise = 1\n", "run.surprise"),
        ("[posthog]\nhots = 1\n", "posthog.hots"),
        ("[nonsense]\nx = 1\n", "profile [nonsense]"),
        ('[models."m"]\nrpm = 0\n', "models.m.rpm"),
        ('[models."m"]\nburst = 3\n', "models.m.burst"),
        ("store = 3\n", "profile [store]"),
    ],
)
def test_every_profile_error_names_the_profile_key(tmp_path: Path, text: str, named: str) -> None:
    models = '[run]\nmodels = ["m"]\n'
    if not text.startswith("["):  # a top-level key goes before any table
        body = text + models
    elif text.startswith("[run]\n"):
        body = text.replace("[run]\n", models, 1)
    else:
        body = models + text
    profile = write_profile(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        build_config({"profile": str(profile)}, env={})
    assert caught.value.option == named


def test_a_flag_overriding_a_bad_profile_value_is_named_as_the_flag(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, '[run]\nmodels = ["m"]\nconcurrency = 4\n')
    with pytest.raises(ConfigError) as caught:
        build_config({"profile": str(profile), "concurrency": -2}, env={})
    assert caught.value.option == "--concurrency"


def test_an_unreadable_profile_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as caught:
        build_config({"profile": str(tmp_path / "missing.toml")}, env={})
    assert caught.value.option == "--profile"
    bad = write_profile(tmp_path, "[run\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        build_config({"profile": str(bad)}, env={})


def test_the_cli_offers_exactly_the_options_once_each() -> None:
    """One name per option: `harness run`'s parameters are RunConfig's fields with OPTIONS' flags."""
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    flags = {
        p.name: "/".join([*p.opts, *p.secondary_opts]) for p in command.params if p.name not in ("profile",)
    }
    declared = {o.field: o.flag for o in OPTIONS if o.flag}
    assert flags == declared
    every_flag = [f for p in command.params for f in (*p.opts, *p.secondary_opts)]
    assert len(every_flag) == len(set(every_flag)), "no flag is offered twice"
    assert not [f for f in every_flag if f.startswith("--no-no-")]
    fields = {f for f in RunConfig.__dataclass_fields__}
    assert {o.field for o in OPTIONS} <= fields


def test_a_developers_exported_keys_never_reach_a_test(request: pytest.FixtureRequest) -> None:
    import os

    from harness.secrets import SECRET_ENV_VARS

    assert "clean_env" in request.fixturenames, "the fixture is autouse: every test gets it"
    assert not [name for name in SECRET_ENV_VARS if name in os.environ], "conftest.clean_env removes them"
