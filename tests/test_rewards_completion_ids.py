"""Model-based rewards read image completions the way TRL's GRPOTrainer passes them: an empty completion string and
the image tokens in `completion_ids` (vocabulary ids, or raw VQ codes). The codes go to the model unchanged."""

from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

pipeline_module = pytest.importorskip("hf_meddiff.generation.pipeline_meddiff")

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion  # noqa: E402
from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor  # noqa: E402
from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer  # noqa: E402
from hf_meddiff.models.meddiff.processing_meddiff import MedDiffProcessor  # noqa: E402
from hf_meddiff.rewards import CycleConsistencyReward, InpaintingReward  # noqa: E402
from hf_meddiff.text_tokenizer import train_text_tokenizer  # noqa: E402

REPORT = "Findings: a small nodule in the upper left. Impression: nodule."


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    tokenizer = train_text_tokenizer([REPORT, "Normal study.", "Write the report."] * 8, vocab_size=300)
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    model = MedDiffForMaskedDiffusion(
        MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    ).eval()
    model.generation_config.update(gen_length=8, block_length=8, image_steps=2)
    pipe = pipeline_module.MedDiffPipeline(model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def truth(pipe):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    return pipe.processor.encode_images([image])[0]


class KnowsTheImage:
    """A pipeline whose model has learnt the report's image: inpainting always draws `truth`."""

    def __init__(self, pipe, truth):
        self.model, self.processor, self.truth = pipe.model, pipe.processor, truth

    def __call__(self, prompt=None, image_ids=None, **kwargs):
        return SimpleNamespace(images=self.truth.expand(len(prompt), -1).clone())


class Spy:
    """Records the input ids `model.generate` receives."""

    def __init__(self, generate):
        self.generate, self.input_ids = generate, []

    def __call__(self, input_ids, *args, **kwargs):
        self.input_ids.append(input_ids.clone())
        return self.generate(input_ids, *args, **kwargs)


def image_tokens(input_ids, config):
    offset, codebook = config.image_token_offset, config.image_codebook_size
    return [row[(row >= offset) & (row < offset + codebook)] - offset for row in input_ids]


def test_inpainting_scores_image_completion_ids_with_empty_completions(pipe, truth):
    offset = pipe.model.config.image_token_offset
    eos = pipe.processor.tokenizer.convert_tokens_to_ids("<|eos|>")
    corrupted = (truth + 1) % pipe.model.config.image_codebook_size
    reward = InpaintingReward(KnowsTheImage(pipe, truth), modality="image", seed=0)
    completion_ids = [
        (truth + offset).tolist() + [eos],  # vocabulary ids, as TRL passes them
        (corrupted + offset).tolist() + [eos],
        truth.tolist(),  # raw VQ codes
    ]
    out = reward(
        prompts=["p"] * 3, completions=["", "", ""], completion_ids=completion_ids, report=[REPORT] * 3
    )
    assert out[0] == pytest.approx(1.0) and out[2] == pytest.approx(1.0)
    assert out[1] < out[0]


def test_inpainting_keeps_text_completions_with_their_text_ids(pipe, truth):
    # a text completion's own ids are not an image: it pairs with the row's image, as without completion_ids
    reward = InpaintingReward(KnowsTheImage(pipe, truth), modality="image", seed=0)
    text_ids = pipe.processor.tokenizer(REPORT, add_special_tokens=False)["input_ids"][:16]
    out = reward(completions=[REPORT], completion_ids=[text_ids], image_ids=[truth])
    assert out == [pytest.approx(1.0)]


def test_text_inpainting_feeds_completion_ids_to_the_model_unchanged(pipe, truth, monkeypatch):
    spy = Spy(pipe.model.generate)
    monkeypatch.setattr(pipe.model, "generate", spy)
    offset = pipe.model.config.image_token_offset
    reward = InpaintingReward(pipe, modality="text", seed=0)
    out = reward(completions=[""], completion_ids=[(truth + offset).tolist()], report=[REPORT])
    assert 0.0 <= out[0] <= 1.0
    assert len(spy.input_ids) == 1
    assert torch.equal(image_tokens(spy.input_ids[0], pipe.model.config)[0], truth)


def test_cycle_report_image_report_feeds_completion_ids_to_the_model_unchanged(pipe, truth, monkeypatch):
    spy = Spy(pipe.model.generate)
    monkeypatch.setattr(pipe.model, "generate", spy)
    offset = pipe.model.config.image_token_offset
    reward = CycleConsistencyReward(pipe, direction="report_image_report", seed=0)
    completion_ids = [(truth + offset).tolist(), truth.tolist(), [3, 4, 5]]
    out = reward(completions=["", "", ""], completion_ids=completion_ids, report=[REPORT] * 3)
    assert all(0.0 <= v <= 1.0 for v in out[:2]) and out[2] == 0.0
    sent = image_tokens(spy.input_ids[0], pipe.model.config)
    assert len(sent) == 2 and all(torch.equal(codes, truth) for codes in sent)
