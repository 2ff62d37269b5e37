"""`make perf` machinery, smoke-tested: a quick cheap section runs, prints verdicts, and saves its JSON.

No timing is asserted here (figures belong to `make perf`, not to `make test`); the
test checks that the section produced every figure, that each verdict is judged,
and that the run is compared with the previous file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import perf


def test_quick_stream_cost_section_saves_figures_and_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "perf"
    out.mkdir()
    label = "harness CPU/delta ÷ bare aiohttp line reader"
    previous = {"verdicts": [["T2a", label, 0.5, "<=", 1.5, "x"]]}
    (out / "20000101T000000Z.json").write_text(json.dumps(previous))
    code = perf.main(["--quick", "--only", "stream_cost", "--out-dir", str(out)])
    printed = capsys.readouterr().out
    files = sorted(out.glob("*.json"))
    assert len(files) == 2
    data = json.loads(files[-1].read_text())
    assert data["sections"] == ["stream_cost"]
    figures = data["figures"]["stream_cost"]
    assert set(figures["us_per_delta"]) == {"aiohttp-lines", "harness-client", "sdk-stream"}
    assert all(v > 0 for v in figures["us_per_delta"].values())
    assert {v[0] for v in data["verdicts"]} == {"T2a", "T2b", "T2c", "T2d"}
    for shape in ("text", "thinking", "tools"):
        assert figures["by_shape"][shape]["vs_lines"] > 0, shape
    assert code == (1 if data["missed"] else 0)
    assert "[PASS] T2a" in printed or "[MISS] T2a" in printed
    # The previous file is compared figure by figure.
    assert "compared with 20000101T000000Z.json" in printed
    assert f"{label}" in printed.split("compared with", 1)[1]


def test_unknown_section_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        perf.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "unknown section" in capsys.readouterr().err
