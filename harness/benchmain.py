"""`make bench`: the main job on the simulator (or, with BENCH_TARGET=anthropic, on the real API).

Offline it replays `datasets/mixed.jsonl` against one haiku, one sonnet and one
opus model on the project's simulator, time-scaled to finish in well under two
minutes, with events going to the simulator's PostHog capture endpoint. With
`BENCH_TARGET=anthropic` and an Anthropic API key set it runs the smoke dataset
against the real API under a small budget (`BENCH_MAX_COST`, default $0.50).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.cli import app
from harness.secrets import ANTHROPIC_KEY_ENV

# Relative to the working directory when possible, so manifests and reports show short paths.
PROFILE = Path(os.path.relpath(Path(__file__).parent / "profiles" / "bench.toml"))
SMOKE = Path(os.path.relpath(Path(__file__).parent.parent / "datasets" / "smoke.jsonl"))


def main() -> None:
    target = os.environ.get("BENCH_TARGET", "simulator")
    args = ["run", "--profile", str(PROFILE), "--progress", os.environ.get("BENCH_PROGRESS", "auto")]
    if os.environ.get("RESULTS_DIR"):
        args += ["--results-dir", os.environ["RESULTS_DIR"]]
    if target == "anthropic":
        if not os.environ.get(ANTHROPIC_KEY_ENV):
            print(f"BENCH_TARGET=anthropic needs {ANTHROPIC_KEY_ENV}", file=sys.stderr)
            sys.exit(2)
        args += ["--target", "anthropic", "--dataset", str(SMOKE)]
        args += ["--max-cost", os.environ.get("BENCH_MAX_COST", "0.50"), "--concurrency", "4"]
    elif target != "simulator":
        print(f"BENCH_TARGET must be simulator or anthropic, got {target!r}", file=sys.stderr)
        sys.exit(2)
    app(args)


if __name__ == "__main__":
    main()
