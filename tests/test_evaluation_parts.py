"""Pieces of the evaluation runner that need no model: data loading, scoring tables, plots, Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_meddiff.evaluation import (
    _vqa_section,
    chance_accuracy,
    finding_labeler_for,
    load_data_arg,
    plot_image_grid,
    plot_training_curves,
    rank_options,
    read_log_history,
    results_to_markdown,
    save_canonical,
)
from hf_meddiff.formatting import format_question


def _rows():
    return datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c", "d"],
            "modality": ["ct", "ct", "mri", "mri"],
            "question_type": ["diagnosis", "location", "diagnosis", "open"],
            "options": [["cyst", "nodule"], ["left", "right", "up", "down"], ["x", "y", "z", "w"], []],
            "answer": ["B", "A", "C", "yes"],
            "split": ["test"] * 4,
            "boxes": [[{"label": "nodule", "bbox": [10, 10, 200, 200]}], [], [], []],
            "source": ["medphantom"] * 4,
        }
    )


def test_chance_accuracy_by_question_kind():
    assert chance_accuracy(["a", "b", "c", "d"], "A") == 0.25
    assert chance_accuracy([], "Yes") == 0.5
    assert chance_accuracy([], "left lobe") == 0.0


def test_vqa_section_breaks_down_by_modality_and_type_with_chance():
    section, scores = _vqa_section(_rows(), ["<answer>B</answer>", "D", "C. z", "no"])
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert section["accuracy"] == 0.5
    assert section["chance"] == pytest.approx((0.5 + 0.25 + 0.25 + 0.5) / 4)
    assert section["per_modality"]["ct"] == {"accuracy": 0.5, "chance": 0.375, "n": 2}
    assert section["per_question_type"]["diagnosis"]["accuracy"] == 1.0
    assert section["per_question_type"]["open"]["n"] == 1


def test_finding_labeler_uses_dataset_findings():
    labeler = finding_labeler_for(_rows())
    assert [f.name for f in labeler.findings] == ["nodule"]
    assert labeler("A small nodule in the upper left.")["nodule"] == 1


def test_load_data_arg_selects_split_and_names_available_ones(tmp_path):
    ds = _rows().cast_column("options", datasets.List(datasets.Value("string")))
    path = save_canonical(ds, tmp_path / "d")
    assert len(load_data_arg(str(path), split="test")) == 4
    with pytest.raises(ValueError, match=r"available splits: \['test'\]"):
        load_data_arg(str(tmp_path / "d"), split="train")


def test_training_curves_from_trainer_state(tmp_path):
    history = [{"step": s, "loss": 5.0 / s, "loss_vqa": 4.0 / s, "learning_rate": 1e-3} for s in range(1, 6)]
    history += [
        {"step": 5, "eval_loss": 1.2},
        {"step": 5, "reward": 0.4, "rewards/accuracy_reward/mean": 0.3},
    ]
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text(
        json.dumps({"global_step": 5, "log_history": history})
    )
    read = read_log_history(tmp_path)  # finds the checkpoint's state
    assert read == history
    png = plot_training_curves(read, tmp_path / "curves.png")
    assert png is not None and Image.open(png).size[0] > 500
    assert plot_training_curves([{"step": 1, "learning_rate": 0.1}], tmp_path / "none.png") is None
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        read_log_history(tmp_path / "checkpoint-5" / "missing")


def test_image_grid_draws_reference_and_predicted_boxes(tmp_path):
    image = Image.fromarray(np.zeros((64, 64), dtype=np.uint8))
    path = plot_image_grid(
        [image, image],
        tmp_path / "g.png",
        titles=["a", "b"],
        boxes=[[[0, 0, 500, 500]], []],
        pred_boxes=[[], [[500, 500, 999, 999]]],
    )
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 100) & (pixels[..., 2] < 100)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert green.sum() > 50 and red.sum() > 20


def test_results_markdown_has_overall_and_breakdown_tables():
    section, _ = _vqa_section(_rows(), ["B", "A", "C", "yes"])
    summary = {
        "model": "m",
        "dataset": {"name": "MedPhantom", "split": "test", "num_samples": 4},
        "vqa": section,
        "report": {"bleu_1": 0.5, "rouge_l": 0.25, "clinical_efficacy": {"f1": 0.1}, "n": 2},
        "files": {"t2i_grid": "/x/t2i_grid.png"},
    }
    text = results_to_markdown(summary)
    assert "| Visual question answering | Accuracy | 1.0000 |" in text
    assert "| Report generation | BLEU-1 | 0.5000 |" in text
    assert "| ct | 1.000 | 0.375 | 2 |" in text
    assert "![t2i_grid](t2i_grid.png)" in text


def test_explicit_steps_round_up_to_a_multiple_of_the_blocks():
    from types import SimpleNamespace

    from hf_meddiff.evaluation import text_generation_overrides

    model = SimpleNamespace(generation_config=SimpleNamespace(gen_length=80, block_length=8))
    assert text_generation_overrides(model, None, 16) == {"steps": 20}
    assert text_generation_overrides(model, 80, 10) == {"gen_length": 80, "steps": 10}
    assert text_generation_overrides(model, 12, 5) == {"gen_length": 12, "block_length": None, "steps": 5}


@pytest.fixture(scope="module")
def tiny_processor():
    from hf_meddiff import MedDiffImageProcessor, MedDiffImageTokenizer, MedDiffProcessor
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    torch.manual_seed(0)
    tokenizer = train_text_tokenizer(["Which? alpha beta gamma delta A. B. C. D."] * 8, vocab_size=300)
    image_tokenizer = MedDiffImageTokenizer.from_config_preset("tiny")
    return MedDiffProcessor(MedDiffImageProcessor(size=32), tokenizer, image_tokenizer=image_tokenizer)


class _FixedLogits(torch.nn.Module):
    """A stand-in model whose logits favour a fixed set of token ids at every position."""

    def __init__(self, favoured: list[int], vocab_size: int, mask_token_id: int):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=mask_token_id)
        self.bias = torch.nn.Parameter(torch.full((vocab_size,), -5.0))
        with torch.no_grad():
            self.bias[favoured] = 5.0

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def test_rank_options_picks_the_option_the_model_finds_likely(tiny_processor):
    processor = tiny_processor
    tokenizer = processor.tokenizer
    from hf_meddiff import MedDiffConfig

    config = MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    favoured = tokenizer("beta", add_special_tokens=False)["input_ids"] + [config.eos_token_id]
    model = _FixedLogits(favoured, config.vocab_size, config.mask_token_id)
    image = Image.fromarray(np.full((32, 32), 128, dtype=np.uint8))
    options = [["alpha", "gamma", "beta", "delta"], ["beta", "alpha"], []]
    questions = [format_question("Which?", o) for o in options]
    letters = rank_options(model, processor, [image] * 3, questions, options, response_length=6)
    assert letters == ["C", "A", ""]
    with pytest.raises(ValueError, match="one question and one option list per image"):
        rank_options(model, processor, [image], questions, options)


def test_rank_options_picks_the_option_with_the_lowest_cross_entropy_of_its_masked_canvas(tiny_processor):
    from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion

    processor = tiny_processor
    torch.manual_seed(1)
    model = MedDiffForMaskedDiffusion(
        MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    ).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)) for _ in range(4)]
    options = [["alpha", "beta", "gamma", "delta"], ["delta", "gamma"], ["beta", "alpha", "delta"], ["gamma"]]
    questions = [format_question("Which?", o) for o in options]
    letters = rank_options(model, processor, images, questions, options, response_length=6, batch_size=3)

    expected = []
    for image, question, opts in zip(images, questions, options):
        codes = processor.encode_images([image]).tolist() * len(opts)
        batch = processor(text=[question] * len(opts), image_ids=codes, responses=opts, task="vqa",
                          response_length=6, truncation=True, return_tensors="pt")  # fmt: skip
        response = batch["labels"] != -100
        masked = batch["input_ids"].masked_fill(response, model.config.mask_token_id)
        with torch.no_grad():
            logits = model(input_ids=masked, attention_mask=batch["attention_mask"]).logits
        ce = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), batch["labels"].clamp(min=0), reduction="none"
        )
        expected.append("ABCD"[int((ce * response).sum(-1).argmin())])
    assert letters == expected


def test_evaluation_config_parses_like_the_training_commands():
    from trl import TrlParser

    from hf_meddiff.evaluation import EVAL_TASKS, EvaluationConfig

    argv = [
        "--model",
        "out/model",
        "--tasks",
        "vqa",
        "reasoning",
        "--fast",
        "--generation_kwargs",
        '{"steps": 4}',
    ]
    (config,) = TrlParser(EvaluationConfig).parse_args_and_config(argv)
    assert config.tasks == ["vqa", "reasoning"] and config.resolved_output_dir() == str(
        Path("out/model/eval")
    )
    assert config.resolved_generation_kwargs() == {"threshold": 0.9, "cache_mode": "dual", "steps": 4}
    assert set(EVAL_TASKS) == {"vqa", "report", "t2i", "reasoning"}
    with pytest.raises(ValueError, match="Unknown evaluation task"):
        EvaluationConfig(tasks=["vqa", "segmentation"])
    with pytest.raises(ValueError, match="vqa_scoring"):
        EvaluationConfig(vqa_scoring="vote")
    with pytest.raises(ValueError, match="output_dir"):
        EvaluationConfig().resolved_output_dir()


def test_evaluate_model_keywords_override_the_config():
    from hf_meddiff.evaluation import EvaluationConfig, resolve_config

    base = EvaluationConfig(tasks=["vqa"], batch_size=2)
    config = resolve_config(
        base, output_dir=Path("x"), tasks=("report", "t2i"), generation_kwargs={"steps": 2}
    )
    assert (config.output_dir, config.tasks, config.batch_size) == ("x", ["report", "t2i"], 2)
    assert config.generation_kwargs == {"steps": 2} and base.tasks == ["vqa"]
    with pytest.raises(TypeError, match="Unknown evaluation option"):
        resolve_config(base, temperature=0.5)
