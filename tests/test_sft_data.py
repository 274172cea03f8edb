"""SFT data preparation: canonical records -> mixed-task examples, image-token caching, bad records."""

from __future__ import annotations

import json

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffSFTConfig, MedDiffSFTTrainer
from hf_meddiff.constants import EOS_TOKEN, TASKS
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.models.meddiff import MedDiffImageProcessor, MedDiffImageTokenizer, MedDiffProcessor
from hf_meddiff.text_tokenizer import train_text_tokenizer
from hf_meddiff.trainer.sft.collator import (
    REASONING_INSTRUCTIONS,
    BadRecordError,
    MedDiffDataCollator,
    prepare_sft_dataset,
)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom_dataset(8, seed=3, image_size=32)


@pytest.fixture(scope="module")
def processor(phantom):
    torch.manual_seed(0)
    tokenizer = train_text_tokenizer(phantom, vocab_size=400)
    return MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )


def sft_args(tmp_path, **overrides) -> MedDiffSFTConfig:
    kwargs = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True, max_length=256)
    return MedDiffSFTConfig(**(kwargs | overrides))


def test_every_record_yields_one_example_per_task_in_the_processor_layouts(phantom, processor, tmp_path):
    examples, report = prepare_sft_dataset(phantom, processor, sft_args(tmp_path))
    assert report["examples_per_task"] == {task: 8 for task in TASKS}
    assert report["num_skipped"] == 0 and len(examples) == 32
    offset, codes = processor.offset, processor.image_tokenizer.num_image_tokens
    tokenizer = processor.tokenizer
    for example in examples:
        task = TASKS[example["task_ids"]]
        response = [t for t in example["labels"] if t != -100]
        record = phantom[[r for r in range(8) if phantom[r]["id"] == example["record_id"]][0]]
        if task == "t2i":
            assert len(response) == codes and all(offset <= t < offset + 64 for t in response)
        else:
            text = tokenizer.decode(response[:-1])
            assert response[-1] == tokenizer.convert_tokens_to_ids(EOS_TOKEN)
            if task == "vqa":
                assert text == record["answer"]
            elif task == "report":
                assert text == record["report"]
            else:
                assert f"<answer>{record['answer']}</answer>" in text
                prompt = tokenizer.decode(
                    [t for t, y in zip(example["input_ids"], example["labels"]) if y == -100 and t < offset]
                )
                assert any(instruction in prompt for instruction in REASONING_INSTRUCTIONS.values())
    targets = [
        tokenizer.decode([t for t in e["labels"] if t != -100])
        for e in examples
        if TASKS[e["task_ids"]] == "reasoning"
    ]
    assert {t.startswith("<think>") for t in targets} == {True, False}  # think_before and the others
    assert any("</answer><think>" in t for t in targets) and any("<think>" not in t for t in targets)
    assert examples["example_id"] == list(range(len(examples)))


def test_task_mix_and_response_length(phantom, processor, tmp_path):
    args = sft_args(
        tmp_path, task_mix={"vqa": 2.0, "report": 0.0, "t2i": 0.5}, response_length_per_task={"vqa": 6}
    )
    examples, report = prepare_sft_dataset(phantom, processor, args)
    counts = report["examples_per_task"]
    assert counts["vqa"] == 16 and counts["report"] == 0 and counts["reasoning"] == 8
    assert 0 < counts["t2i"] < 8
    eos = processor.tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    for example in examples.filter(lambda t: t == 0, input_columns="task_ids"):
        response = [t for t in example["labels"] if t != -100]
        assert len(response) == 6 and response[-4:] == [eos] * 4


def test_images_are_tokenised_once_and_reused_from_the_cache(phantom, processor, tmp_path, monkeypatch):
    args = sft_args(tmp_path, dataset_cache_dir=str(tmp_path / "cache"))
    first, _ = prepare_sft_dataset(phantom, processor, args)
    assert list((tmp_path / "cache").glob("image_ids-*.arrow"))

    def fail(*args, **kwargs):
        raise AssertionError("images were encoded again")

    monkeypatch.setattr(processor, "encode_images", fail)
    second, _ = prepare_sft_dataset(phantom, processor, args)
    assert second["input_ids"] == first["input_ids"]


def _corrupt(phantom):
    rows = phantom.to_list()
    rows[2]["image"] = {"bytes": b"not a png", "path": None}
    rows[5]["answer"] = "Z"
    from datasets import Dataset

    return Dataset.from_list(rows, features=phantom.features)


def test_a_bad_record_is_named_in_the_error(phantom, processor, tmp_path):
    bad = _corrupt(phantom)
    with pytest.raises(BadRecordError, match=rf"{phantom[2]['id']}.*row 2.*field 'image'.*1 more bad record"):
        prepare_sft_dataset(bad, processor, sft_args(tmp_path))


def test_skipped_bad_records_are_counted_and_training_goes_on(phantom, processor, tmp_path):
    args = sft_args(
        tmp_path, skip_bad_records=True, max_steps=2, per_device_train_batch_size=4, save_strategy="no"
    )
    config = MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    trainer = MedDiffSFTTrainer(
        model=MedDiffForMaskedDiffusion(config),
        args=args,
        train_dataset=_corrupt(phantom),
        processing_class=processor,
    )
    report = trainer.data_report["train"]
    assert report["num_skipped"] == 2 and report["skipped_by_reason"] == {"image": 1, "answer": 1}
    assert report["num_examples"] == 6 * 4
    trainer.train()
    assert trainer.state.global_step == 2
    written = json.loads((tmp_path / "data_report.json").read_text())
    assert written["train"]["num_skipped"] == 2


def test_collator_pads_right_and_keeps_example_ids():
    batch = MedDiffDataCollator(pad_token_id=0, pad_to_multiple_of=8)(
        [
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "task_ids": 2, "example_id": 11},
            {"input_ids": [1, 2], "labels": [-100, 2], "task_ids": 0, "example_id": 4},
        ]
    )
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].sum(1).tolist() == [3, 2]
    assert batch["labels"][1, 2:].eq(-100).all()
    assert batch["example_ids"].tolist() == [11, 4] and batch["task_ids"].tolist() == [2, 0]
    with pytest.raises(KeyError, match="lacks"):
        MedDiffDataCollator()([{"input_ids": [1]}])


def test_shuffle_options_moves_the_answer_letter_with_its_option(tmp_path):
    from hf_meddiff.trainer.sft.collator import format_question, record_task_specs

    record = {
        "id": "case-1",
        "question": "Which modality?",
        "options": ["CT", "MRI", "X-ray", "Ultrasound"],
        "answer": "B",
        "report": "",
    }
    plain = record_task_specs(record, 0, sft_args(tmp_path, tasks=["vqa"], task_mix={"vqa": 6.0}))
    assert len(plain) == 6 and all(s["prompt"] == plain[0]["prompt"] and s["target"] == "B" for s in plain)
    args = sft_args(tmp_path, tasks=["vqa"], task_mix={"vqa": 6.0}, shuffle_options=True)
    specs = record_task_specs(record, 0, args)
    assert (
        specs[0]["prompt"] == format_question("Which modality?", record["options"])
        and specs[0]["target"] == "B"
    )
    assert len({s["prompt"] for s in specs}) > 1  # later copies are reordered
    for spec in specs:
        lines = spec["prompt"].splitlines()[1:]
        chosen = next(line for line in lines if line.startswith(spec["target"] + "."))
        assert chosen.endswith("MRI") and sorted(line[3:] for line in lines) == sorted(record["options"])
    assert record_task_specs(record, 0, args) == specs  # seeded


def test_vqa_target_option_answers_with_the_option_text_that_the_scorer_accepts(tmp_path):
    from hf_meddiff.metrics.vqa import score_answer
    from hf_meddiff.trainer.sft.collator import record_task_specs

    record = {"id": "c", "question": "Which modality?", "options": ["CT", "MRI", "X-ray"], "answer": "C"}
    args = sft_args(tmp_path, tasks=["vqa"], task_mix={"vqa": 4.0}, shuffle_options=True, vqa_target="option")
    specs = record_task_specs(record, 0, args)
    assert [s["target"] for s in specs] == ["X-ray"] * 4
    assert (
        specs[0]["target"] != record["answer"]
        and score_answer(specs[0]["target"], "C", record["options"]) == 1.0
    )
    with pytest.raises(ValueError, match="vqa_target"):
        sft_args(tmp_path, vqa_target="word")
    with pytest.raises(ValueError, match="loss_weighting"):
        sft_args(tmp_path, loss_weighting="mean")


def test_t2i_condition_dropout_trains_the_unconditional_prompt_guidance_uses(phantom, processor, tmp_path):
    from hf_meddiff.constants import ASSISTANT_TOKEN, BOS_TOKEN, SOI_TOKEN, TASK_TOKENS, USER_TOKEN

    args = sft_args(tmp_path, tasks=["t2i"], t2i_condition_dropout=0.999)
    examples, _ = prepare_sft_dataset(phantom, processor, args)
    unconditional = processor.tokenizer.convert_tokens_to_ids(
        [BOS_TOKEN, TASK_TOKENS["t2i"], USER_TOKEN, ASSISTANT_TOKEN, SOI_TOKEN]
    )
    assert all(example["input_ids"][:5] == unconditional for example in examples)
    kept, _ = prepare_sft_dataset(
        phantom, processor, sft_args(tmp_path, tasks=["t2i"], t2i_condition_dropout=0.0)
    )
    assert all(example["input_ids"][:5] != unconditional for example in kept)
    with pytest.raises(ValueError, match="t2i_condition_dropout"):
        sft_args(tmp_path, t2i_condition_dropout=1.0)
