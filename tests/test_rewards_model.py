"""Model-based rewards (cycle consistency, multimodal inpainting) on a tiny MedDiff model, and their arithmetic on
an oracle pipeline that reconstructs perfectly."""

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


def scan(seed=0):
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8))


class OraclePipeline:
    """Reconstructs perfectly: returns the given image codes / response ids, so the reward must be 1.0."""

    def __init__(self, pipe):
        self.model, self.processor, self.calls = pipe.model, pipe.processor, []

    def __call__(
        self, prompt=None, image=None, image_ids=None, image_keep_mask=None, response_ids=None, **kwargs
    ):
        self.calls.append(dict(prompt=prompt, image_keep_mask=image_keep_mask, response_ids=response_ids))
        if image_ids is not None:
            return SimpleNamespace(images=image_ids.clone())
        return SimpleNamespace(sequences=response_ids.clone())


def test_cycle_image_report_image_on_a_tiny_model(pipe):
    reward = CycleConsistencyReward(pipe, direction="image_report_image", seed=0)
    columns = dict(image=[scan(0), scan(1), None, scan(3)], report=[REPORT] * 4)
    completions = [[{"role": "assistant", "content": REPORT}], "<answer>Normal study.</answer>", REPORT, ""]
    out = reward(prompts=["p"] * 4, completions=completions, **columns)
    assert out[2] is None and out[3] == 0.0  # no original image: not applicable; empty report: 0
    assert all(0.0 <= v <= 1.0 for v in out[:2])
    again = CycleConsistencyReward(pipe, direction="image_report_image", seed=0)(
        completions=completions, **columns
    )
    assert again == out, "seeded: reproducible"
    assert reward.__name__ == "cycle_image_report_image_reward"


def test_cycle_image_similarity_hand_computed(pipe):
    reward = CycleConsistencyReward(pipe, token_weight=1.0, feature_weight=0.0)
    codes = pipe.processor.encode_images([scan(0)])
    assert reward.image_similarity(codes, codes) == [1.0]
    other = codes.clone()
    other[0, :4] = (codes[0, :4] + 1) % pipe.model.config.image_codebook_size
    # 4 of 16 codes differ -> agreement 12/16
    assert reward.image_similarity(other, codes) == [pytest.approx(0.75)]
    both = CycleConsistencyReward(pipe, token_weight=1.0, feature_weight=1.0)
    assert both.image_similarity(codes, codes) == [pytest.approx(1.0)]


def test_cycle_report_image_report_reads_every_image_completion_form(pipe):
    reward = CycleConsistencyReward(pipe, direction="report_image_report", seed=1)
    codes = pipe.processor.encode_images([scan(0)])[0]
    offset = pipe.model.config.image_token_offset
    completions = [
        scan(0),
        codes,
        (codes + offset).tolist(),
        [{"role": "assistant", "content": [{"type": "image", "image": scan(2)}]}],
        "not an image",
        scan(0),
    ]
    out = reward(completions=completions, report=[REPORT] * 5 + [""])
    assert out[4] == 0.0 and out[5] is None
    assert all(0.0 <= v <= 1.0 for v in out[:4])


def test_inpainting_masks_15_to_30_percent_and_keeps_the_rest(pipe):
    reward = InpaintingReward(pipe, modality="image", seed=0)
    counts = {int(reward.random_mask(100).sum()) for _ in range(50)}
    assert min(counts) >= 15 and max(counts) <= 30 and len(counts) > 3
    assert int(reward.random_mask(3).sum()) == 1
    out = reward(completions=[REPORT, REPORT, ""], image=[scan(0), None, scan(2)])
    assert out[1] is None and out[2] == 0.0 and 0.0 <= out[0] <= 1.0


def test_inpainting_rewards_a_perfect_reconstruction_with_one(pipe):
    oracle = OraclePipeline(pipe)
    image_reward = InpaintingReward(oracle, modality="image")
    assert image_reward(completions=[REPORT, "Normal study."], image=[scan(0), scan(1)]) == [1.0, 1.0]
    keep = oracle.calls[-1]["image_keep_mask"]
    masked = (~keep).sum(1)
    assert oracle.calls[-1]["prompt"] == [REPORT, "Normal study."]
    assert all(2 <= int(m) <= 5 for m in masked), "15-30% of 16 image tokens"
    text_reward = InpaintingReward(oracle, modality="text")
    codes = pipe.processor.encode_images([scan(0)])[0]
    # an image completion is paired with the row's report
    assert text_reward(completions=[codes, REPORT], report=[REPORT, None], image=[None, scan(1)]) == [
        1.0,
        1.0,
    ]


def test_inpainting_text_on_a_tiny_model(pipe):
    reward = InpaintingReward(pipe, modality="text", seed=0)
    out = reward(completions=["Normal study.", REPORT], image=[scan(0), scan(1)])
    assert all(0.0 <= v <= 1.0 for v in out)


def test_model_rewards_validate_their_arguments(pipe):
    with pytest.raises(ValueError, match="direction"):
        CycleConsistencyReward(pipe, direction="sideways")
    with pytest.raises(ValueError, match="mask_ratio"):
        InpaintingReward(pipe, mask_ratio=(0.5, 0.2))
    with pytest.raises(ValueError, match="pipeline"):
        InpaintingReward()


def test_text_inpainting_uses_the_row_question_for_vqa(pipe):
    oracle = OraclePipeline(pipe)
    calls = []
    original_call = oracle.__call__

    class Recording(OraclePipeline):
        def __call__(self, *args, question=None, **kwargs):
            calls.append(question)
            return original_call(*args, **kwargs)

    recording = Recording(pipe)
    reward = InpaintingReward(recording, modality="text")
    out = reward(
        completions=["<answer>B</answer>", REPORT], image=[scan(0), scan(1)], question=["Which modality?", ""]
    )
    assert out == [1.0, 1.0] and calls == [["Which modality?", None]]
