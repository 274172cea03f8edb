"""The papers' claim scripts under examples/: shared helpers (seed statistics, tables, the base cache, sizes) and
one script's `--quick` smoke run end to end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def common(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("HF_MEDDIFF_CLAIMS_CACHE", str(tmp_path / "cache"))
    import _claims_common

    monkeypatch.setattr(_claims_common, "CACHE", tmp_path / "cache")
    return _claims_common


def test_mean_and_spread_over_seeds_ignore_missing_values(common):
    assert common.mean_std([0.5, None, 0.7, float("nan")]) == pytest.approx((0.6, 0.1414213, 2))
    assert common.mean_std([None]) == (None, None, 0)
    assert common.fmt([0.25, 0.35], percent=True) == "30.0 ± 7.1"
    assert common.fmt([0.25], percent=True) == "25.0"
    assert common.fmt([]) == "-"


def test_markdown_table_has_header_rule_and_rows(common):
    table = common.markdown_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]


def test_cache_builds_once_per_settings_and_rebuilds_an_interrupted_folder(common):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "model").mkdir()

    first = common.cached("thing", {"steps": 3}, build)
    again = common.cached("thing", {"steps": 3}, build)
    other = common.cached("thing", {"steps": 4}, build)
    assert first == again and other != first and len(calls) == 2
    (first / "DONE").unlink()  # as if the run stopped half-way
    assert common.cached("thing", {"steps": 3}, build) == first and len(calls) == 3


def test_recipe_content_is_part_of_the_cache_key(common, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 10\n")
    before = common.fingerprint({"a": 1}, recipe)
    recipe.write_text("max_steps: 20\n")
    assert common.fingerprint({"a": 1}, recipe) != before


def test_quick_size_is_small_and_flags_override_the_default(common):
    parser = argparse.ArgumentParser()
    common.add_common_args(parser)
    quick = common.size_from_args(parser.parse_args(["--output-dir", "x", "--quick"]))
    assert quick.sft_steps < 10 and quick.eval_samples <= 8
    args = parser.parse_args(["--output-dir", "x", "--grpo-steps", "7", "--sft-steps", "11"])
    size = common.size_from_args(args)
    assert (size.grpo_steps, size.sft_steps, args.seeds) == (7, 11, 3)
    assert size.num_cases == common.Size().num_cases


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("HF_MEDDIFF_CLAIMS_SMOKE") != "1",
    reason="about 1.5 CPU-minutes (it trains a base, a reasoner and a GRPO step, and samples 96-token answers): "
    "set HF_MEDDIFF_CLAIMS_SMOKE=1 to run it",
)
def test_answer_length_quick_run_writes_table_json_and_histograms(tmp_path):
    env = dict(os.environ, HF_MEDDIFF_CLAIMS_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "claim_answer_length.py"), "--output-dir", str(out), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| model | accuracy % |" in done.stdout and "wall time" in done.stdout
    record = json.loads((out / "claim_answer_length.json").read_text())
    assert set(record["per_seed"]) == {"base", "SFT", "RL"} and record["seeds"] == [0]
    assert 0 < len(record["lengths"]["RL"]["all"]) <= record["size"]["eval_samples"]
    png = out / "answer_length_histograms.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_given_base_replaces_the_trained_one_and_brings_its_own_data(common, tmp_path):
    demo = tmp_path / "demo"
    (demo / "model").mkdir(parents=True)
    (demo / "data").mkdir()
    (demo / "data" / "data.parquet").write_bytes(b"")
    parser = argparse.ArgumentParser()
    common.add_common_args(parser)
    size = common.size_from_args(parser.parse_args(["--output-dir", "o", "--base", str(demo / "model")]))
    assert size.base == str((demo / "model").resolve())
    assert common.cached_base(size, seed=0) == size.base  # nothing is trained
    assert common.base_data_path(size.base) == (demo / "data" / "data.parquet").resolve()
    with pytest.raises(SystemExit, match="held-out groups"):
        common.cached_base(size, seed=0, data="modality", holdout=["ct"])
    with pytest.raises(SystemExit, match="cannot find the data"):
        common.base_data_path(str(tmp_path / "elsewhere" / "model"))
