"""MedDiffPipeline: loading from a saved model + processor folder, report -> image, image -> text, inpainting,
infilling, callbacks and trajectories."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffPipeline
from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor
from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer
from hf_meddiff.models.meddiff.processing_meddiff import MedDiffProcessor
from hf_meddiff.text_tokenizer import train_text_tokenizer

REPORT = "Findings: CT of the head. A small nodule in the upper left. Impression: nodule."


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    torch.manual_seed(0)
    texts = [
        REPORT,
        "Which modality is this? CT MRI X-ray OCT",
        "Write the radiology report for this image.",
    ] * 8
    tokenizer = train_text_tokenizer(texts, vocab_size=300)
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    model = MedDiffForMaskedDiffusion(
        MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    ).eval()
    model.generation_config.update(gen_length=16, block_length=8, image_steps=4)
    folder = tmp_path_factory.mktemp("meddiff")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(saved_folder):
    pipe = MedDiffPipeline.from_pretrained(saved_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scan(seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8))


def test_loads_from_a_model_and_processor_folder_with_the_saved_generation_config(pipe):
    assert pipe.model.generation_config.gen_length == 16
    assert pipe.model.generation_config.image_steps == 4


def test_report_to_image_gives_pil_images_and_a_trajectory(pipe):
    out = pipe(
        prompt=[REPORT, "Normal study."], generator=torch.Generator().manual_seed(0), return_trajectory=True
    )
    assert len(out.images) == 2 and all(isinstance(im, PIL.Image.Image) for im in out.images)
    assert out.images[0].size == (32, 32)
    assert out.sequences.shape == (2, 16) and out.trajectory.shape == (2, 16)
    assert out.num_forward_passes == 4 and out.trajectory.max() == 3
    codes = pipe(
        prompt=[REPORT, "Normal study."], generator=torch.Generator().manual_seed(0), output_type="codes"
    ).images
    assert torch.equal(codes, out.sequences - pipe.model.config.image_token_offset), "seeded: same tokens"


def test_image_to_text_answers_and_reports(pipe):
    out = pipe(
        image=[scan(0), scan(1)], question="Which modality is this?", options=["CT", "MRI", "X-ray", "OCT"]
    )
    assert isinstance(out.text, list) and len(out.text) == 2 and all(isinstance(t, str) for t in out.text)
    assert out.sequences.shape == (2, 16)
    report = pipe(image=scan(0), threshold=0.5, cache_mode="dual", return_trajectory=True)
    assert len(report.text) == 1 and report.trajectory.shape == (1, 16)


def test_callback_on_step_end_sees_every_step(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        seen.append((step, kwargs["image_ids"].clone()))
        return {}

    pipe(prompt=REPORT, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["image_ids"])
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    mask_id = pipe.model.config.mask_token_id
    remaining = [int((ids == mask_id).sum()) for _, ids in seen]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0
    with pytest.raises(ValueError, match="not available"):
        pipe(prompt=REPORT, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])


def test_inpainting_keeps_the_given_codes(pipe):
    codes = pipe.processor.encode_images([scan(3)])
    keep = torch.zeros_like(codes, dtype=torch.bool)
    keep[:, :8] = True
    out = pipe(
        prompt=REPORT, image_ids=codes, image_keep_mask=keep, output_type="codes", return_trajectory=True
    )
    assert torch.equal(out.images[keep], codes[keep])
    assert (out.trajectory[keep] == -1).all() and (out.trajectory[~keep] >= 0).all()


def test_text_infilling_keeps_the_given_tokens(pipe):
    tokenizer = pipe.processor.tokenizer
    ids = tokenizer("A small nodule", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    response = torch.tensor([(ids + [tokenizer.eos_token_id] * 16)[:16]])
    keep = torch.zeros_like(response, dtype=torch.bool)
    keep[:, 0] = True
    keep[:, len(ids) - 1 :] = True
    out = pipe(image=scan(0), question="What is seen?", response_ids=response, response_keep_mask=keep)
    assert out.sequences[0, 0] == response[0, 0]
    assert out.sequences.shape == (1, 16)
    assert (out.sequences[0, len(ids) - 1 :] == tokenizer.pad_token_id).all(), "kept EOS ends the answer"


def test_bad_inputs_are_refused(pipe):
    with pytest.raises(ValueError, match="Give `prompt`"):
        pipe()
    with pytest.raises(ValueError, match="VQ codes"):
        pipe(
            prompt=REPORT,
            image_ids=torch.full((1, 16), 10_000),
            image_keep_mask=torch.ones(1, 16, dtype=torch.bool),
        )


def test_pipeline_folder_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = MedDiffPipeline.from_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").is_file()
    assert loaded.processor.image_tokenizer is not None
    assert loaded.model.generation_config.image_steps == 4
    out = loaded(prompt=REPORT, output_type="codes", generator=torch.Generator().manual_seed(1))
    ref = pipe(prompt=REPORT, output_type="codes", generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.images, ref.images)


def test_model_generate_images_accepts_the_processor_t2i_layout(pipe):
    batch = pipe.processor(text=[REPORT], task="t2i", add_response=False)
    ids = pipe.model.generate_images(
        batch["input_ids"], batch["attention_mask"], generator=torch.Generator().manual_seed(2)
    )
    ref = pipe(prompt=REPORT, output_type="codes", generator=torch.Generator().manual_seed(2)).images
    assert torch.equal(ids - pipe.model.config.image_token_offset, ref)
