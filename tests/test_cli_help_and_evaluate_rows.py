"""`hf-meddiff --help` (and each built-in subcommand's) imports no torch; `hf-meddiff evaluate` evaluates the
whole split by default and says how many rows it evaluates."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hf_meddiff import cli

# Runs the CLI as `python -m hf_meddiff.cli ARGS` would, then prints which heavy libraries got imported.
HELP_PROBE = """
import json, runpy, sys
sys.argv = ["hf-meddiff", *json.loads(sys.argv[1])]
try:
    runpy.run_module("hf_meddiff.cli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(json.dumps([m for m in ("torch", "transformers", "diffusers", "datasets") if m in sys.modules]))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [],
        ["demo", "--help"],
        ["tokenizer", "--help"],
        ["data", "--help"],
        ["data", "make", "--help"],
        ["generate", "--help"],
        ["evaluate", "--help"],
    ],
)
def test_help_imports_no_torch(argv):
    out = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, json.dumps(argv)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert "usage: hf-meddiff" in out.stdout
    assert json.loads(lines[-1]) == []


@pytest.fixture
def fake_evaluate(monkeypatch, tmp_path):
    """`evaluate_model` replaced by one that records its `EvaluationConfig` and writes an empty report."""
    import hf_meddiff.evaluation as evaluation

    calls = []

    def evaluate_model(model, dataset, config):
        calls.append({"rows": len(dataset), "max_samples": config.max_samples, "config": config})
        markdown = Path(config.output_dir) / "results.md"
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text("# results\n")
        return {"files": {"markdown": str(markdown)}}

    monkeypatch.setattr(evaluation, "evaluate_model", evaluate_model)
    return calls


def test_evaluate_defaults_to_the_whole_split_and_says_so(fake_evaluate, tmp_path, capsys):
    argv = [
        "evaluate",
        "--model",
        str(tmp_path / "model"),
        "--num-cases",
        "40",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    rows = fake_evaluate[-1]["rows"]
    assert fake_evaluate[-1]["max_samples"] is None, "no cap: the whole split"
    out = capsys.readouterr().out
    assert f"evaluating {rows} of {rows} rows of medphantom split 'test' (--max-samples to change" in out


def test_evaluate_max_samples_caps_and_is_reported(fake_evaluate, tmp_path, capsys):
    argv = [
        "evaluate",
        "--model",
        "m",
        "--num-cases",
        "40",
        "--max-samples",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    assert fake_evaluate[-1]["max_samples"] == 2
    assert f"evaluating 2 of {fake_evaluate[-1]['rows']} rows" in capsys.readouterr().out
    assert cli.main([*argv[:-4], "--max-samples", "0", "--output-dir", str(tmp_path)]) == 2
    assert "--max-samples must be positive" in capsys.readouterr().err


def test_evaluate_options_are_the_evaluation_config_from_yaml_and_flags(fake_evaluate, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: m\nnum_cases: 40\ntasks: [vqa]\nbatch_size: 3\noutput_dir: {tmp_path}\n")
    argv = ["evaluate", "--config", str(config), "--batch-size", "5", "--tasks", "vqa,report", "--fast"]
    assert cli.main(argv) == 0
    used = fake_evaluate[-1]["config"]
    assert (used.batch_size, used.tasks, used.fast, used.num_cases) == (5, ["vqa", "report"], True, 40)
    assert used.dataset_name == "medphantom" and used.output_dir == str(tmp_path)
