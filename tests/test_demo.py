"""`hf-meddiff demo --quick` end to end, then `evaluate` and `generate` on the model it trained.

One small pretraining run is shared by the tests of this module (it is the expensive part).
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from hf_meddiff import cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--quick", "--output-dir", str(out), "--num-cases", "40", "--tokenizer-steps", "3"]
    argv += ["--max-steps", "2", "--eval-samples", "4"]
    torch.set_num_threads(1)
    code = cli.main(argv)
    return code, out


@pytest.mark.slow
def test_second_demo_run_reuses_the_finished_stages(demo_run, capsys):
    code, out = demo_run
    assert code == 0
    first = json.loads((out / "summary.json").read_text())
    argv = ["demo", "--quick", "--output-dir", str(out), "--num-cases", "40", "--tokenizer-steps", "3"]
    argv += ["--max-steps", "2", "--eval-samples", "4"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("cached: finished by a previous run with the same options") == 5
    second = json.loads((out / "summary.json").read_text())
    assert second["stages"]["rl"]["model"] == first["stages"]["rl"]["model"]
    assert second["seconds"] < 30
    # other options: nothing is reused
    from hf_meddiff.demo import DemoOptions, _cached_stages

    assert _cached_stages(out, DemoOptions(output_dir=str(out), quick=True, num_cases=41)) == {}


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_the_table(demo_run, capsys):
    code, out = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary
    assert list(summary["stages"]) == ["data", "tokenizers", "pretraining", "rl", "evaluation"]
    assert [s["status"] for s in summary["stages"].values()] == ["done"] * 5
    assert (out / "data" / "data.parquet").is_file()
    report = json.loads((out / "tokenizers" / "tokenizer_report.json").read_text())
    assert 0 < report["image_tokenizer"]["heldout"]["mse"] < 1
    assert (out / "tokenizers" / "text_tokenizer" / "tokenizer.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "image_tokenizer" / "config.json").is_file()

    assert (out / "rl-model" / "model.safetensors").is_file() and (out / "reward_curves.png").is_file()
    from hf_meddiff.evaluation import trained_text_canvases

    # GRPO samples, and the evaluation asks both models, on the canvases the SFT model was trained with
    sft_canvases, rl_canvases = trained_text_canvases(out / "model"), trained_text_canvases(out / "rl-model")
    assert sft_canvases["vqa"] == rl_canvases["vqa"] and sft_canvases["report"] == rl_canvases["report"]
    table = (out / "eval" / "before_after.md").read_text()
    assert "| Metric | SFT | SFT + GRPO | Change | |" in table and "| VQA accuracy |" in table
    assert "gains" in table and "losses" in table
    card = (out / "rl-model" / "README.md").read_text()
    assert "model-index" in card and "Not for clinical decisions" in card and "SFT + GRPO" in card
    rl_results = json.loads((out / "eval" / "rl" / "results.json").read_text())
    assert (
        rl_results["dataset"]["num_samples"]
        == json.loads((out / "eval" / "sft" / "results.json").read_text())["dataset"]["num_samples"]
    )

    results = json.loads((out / "eval" / "sft" / "results.json").read_text())
    assert results["dataset"]["split"] == "test"
    assert 0 <= results["vqa"]["accuracy"] <= 1 and results["vqa"]["chance"] == pytest.approx(0.25)
    assert set(results["vqa"]["per_modality"]) <= {
        "ct",
        "mri",
        "xray",
        "ultrasound",
        "dermoscopy",
        "fundus",
        "oct",
        "microscopy",
    }
    assert {"bleu_1", "rouge_l", "cider", "clinical_efficacy"} <= set(results["report"])
    ranked = results["vqa_ranked"]  # every quick-demo question is multiple choice
    assert ranked["n"] == results["vqa"]["n"] and 0 <= ranked["accuracy"] <= 1
    markdown = (out / "eval" / "sft" / "results.md").read_text()
    assert (
        "| Visual question answering | Accuracy |" in markdown
        and "| Visual question answering (option ranking) | Accuracy |" in markdown
        and "BLEU-1" in markdown
        and "ROUGE-L" in markdown
    )
    for name in ("t2i_grid.png", "vqa_examples.png", "training_curves.png"):
        with Image.open(out / "eval" / "sft" / name) as image:
            assert image.size[0] > 200
    lines = (out / "eval" / "sft" / "predictions.jsonl").read_text().splitlines()
    assert {json.loads(line)["task"] for line in lines} == {"vqa", "vqa_ranked", "report"}


@pytest.mark.slow
def test_evaluate_command_on_the_trained_model(demo_run, tmp_path, capsys):
    _, out = demo_run
    target = tmp_path / "eval"
    argv = ["evaluate", "--model", str(out / "model"), "--data", str(out / "data"), "--split", "test"]
    argv += ["--max-samples", "2", "--tasks", "vqa,reasoning,report,t2i", "--output-dir", str(target)]
    argv += [
        "--reasoning-gen-length",
        "16",
        "--steps",
        "8",
        "--image-steps",
        "4",
        "--batch-size",
        "2",
        "--image-metrics",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Visual question answering | Accuracy |" in printed
    results = json.loads((target / "results.json").read_text())
    assert {"vqa", "reasoning", "report", "image"} <= set(results)
    assert results["dataset"]["num_samples"] == 2
    assert (target / "training_curves.png").is_file()  # found the model folder's trainer_state.json
    assert (target / "t2i_grid.png").is_file()
    assert (
        results["image"]["n"] == 2
        and results["image"]["fid_vq"] >= 0
        and 0 <= results["image"]["pixel_mse"] <= 1
    )


@pytest.mark.slow
def test_generate_command_answers_reports_and_draws(demo_run, tmp_path, capsys):
    _, out = demo_run
    image = tmp_path / "scan.png"
    Image.new("L", (32, 32), 80).save(image)
    model = str(out / "model")
    assert (
        cli.main(
            [
                "generate",
                "--model",
                model,
                "--image",
                str(image),
                "--question",
                "Which modality?",
                "--options",
                "CT",
                "MRI",
                "--gen-length",
                "8",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.endswith("\n")
    assert (
        cli.main(
            ["generate", "--model", model, "--image", str(image), "--task", "report", "--gen-length", "8"]
        )
        == 0
    )
    capsys.readouterr()
    picture = tmp_path / "drawn.png"
    assert (
        cli.main(
            [
                "generate",
                "--model",
                model,
                "--prompt",
                "Findings: round lesion.",
                "--output",
                str(picture),
                "--steps",
                "4",
            ]
        )
        == 0
    )
    assert f"saved {picture}" in capsys.readouterr().out
    with Image.open(picture) as drawn:
        assert drawn.size == (32, 32)


def test_demo_says_plainly_which_stage_is_not_available(tmp_path, monkeypatch, capsys):
    import importlib

    from hf_meddiff.demo import DemoOptions, run_demo

    real_import = importlib.import_module

    def without_sft_script(name, *args, **kwargs):
        if name == "hf_meddiff.trainer.sft.script":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_sft_script)
    options = DemoOptions(
        output_dir=str(tmp_path), quick=True, num_cases=8, stages=("data", "pretraining", "evaluation")
    )
    summary = run_demo(options)
    stages = summary["stages"]
    assert stages["data"]["status"] == "done" and stages["tokenizers"]["status"] == "skipped"
    assert stages["pretraining"] == {
        "status": "not available",
        "needs": "hf_meddiff.trainer.sft.script (the SFT recipe runner)",
    }
    assert stages["evaluation"]["status"] == "skipped"
    assert summary["ok"] is False
    printed = capsys.readouterr().out
    assert (
        "not available yet in this installation of hf-meddiff: needs hf_meddiff.trainer.sft.script" in printed
    )
    assert (
        json.loads((tmp_path / "summary.json").read_text())["stages"]["pretraining"]["status"]
        == "not available"
    )


def test_generate_answers_vqa_on_the_canvas_the_model_was_trained_with(
    demo_run, tmp_path, monkeypatch, capsys
):
    from hf_meddiff import evaluation

    _, out = demo_run
    image = tmp_path / "scan.png"
    Image.new("L", (32, 32), 80).save(image)
    model = str(out / "model")
    seen = []
    from hf_meddiff.evaluation import inference

    real = inference.text_generation_overrides

    def spy(model_, gen_length, steps, **extra):
        seen.append(gen_length)
        return real(model_, gen_length, steps, **extra)

    monkeypatch.setattr(inference, "text_generation_overrides", spy)
    argv = ["generate", "--model", model, "--image", str(image), "--question", "Which modality?"]
    assert cli.main([*argv, "--options", "CT", "MRI"]) == 0
    assert seen == [evaluation.trained_vqa_length(model)] and seen[0] == 4  # the recipe's VQA canvas
    assert capsys.readouterr().out.endswith("\n")
