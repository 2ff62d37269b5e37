"""The harness's exception tree: run-level problems only.

A failed *call* is never an exception that escapes the runner: it becomes a
`CallRecord` with `status="error"`. Only problems that make a whole run (or a
command) impossible are raised, and the CLI turns each into one clear line and
an exit code.

    HarnessError                      exit 2 unless stated
    ├── ConfigError(option, message)  bad option, profile or price table
    │   └── PricingError              a model with no price
    ├── DatasetError(path, line, field, message)   one problem in a dataset
    ├── DatasetInvalid(problems)      a dataset with one or more DatasetErrors
    ├── StorageError                  results directory unusable / disk full
    ├── TargetError                   the API refused the run (401/403, preflight)
    └── Interrupted(signal_name)      exit 130 (SIGINT) / 143 (SIGTERM)

Third-party exceptions are translated at one boundary each (`client.py` for the
SDK and its transport, `dataset.py` for parsers); nothing here imports them.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatasetError",
    "DatasetInvalid",
    "HarnessError",
    "Interrupted",
    "PricingError",
    "StorageError",
    "TargetError",
]


class HarnessError(Exception):
    """Base of every run-level error; `exit_code` is what the CLI exits with."""

    exit_code = 2


class ConfigError(HarnessError):
    """A configuration value is unusable; `option` names the flag or profile key."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


class PricingError(ConfigError):
    """A model in the run has no price: refused before any call."""


class DatasetError(HarnessError):
    """One problem in a dataset, located as `file:line: field: what is wrong`."""

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {field}: {message}")


class DatasetInvalid(HarnessError):
    """A dataset with problems; `problems` lists every one found."""

    def __init__(self, problems: list[DatasetError]) -> None:
        self.problems = problems
        head = "\n".join(str(p) for p in problems[:50])
        more = f"\n… and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in dataset:\n{head}{more}")


class StorageError(HarnessError):
    """The results directory cannot be written (unwritable, full disk, bad resume)."""


class TargetError(HarnessError):
    """The API refused the run as a whole: bad key (401), no permission (403), unknown model."""


class Interrupted(HarnessError):
    """The run was stopped by a signal after flushing what it had."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        self.signal_name = signal_name
        self.exit_code = 143 if signal_name == "SIGTERM" else 130
        super().__init__(f"interrupted by {signal_name}; finished calls are saved, resume with --resume")
