"""Image rewards for DDPO: attribute classifier, CLIP / open_clip alignment, region crops, description cycle."""

from __future__ import annotations

import pytest
import torch

from hf_meddiff.rewards.image_rewards import (
    AttributeClassifierReward,
    CLIPScoreReward,
    DescriptionCycleReward,
    OpenCLIPScoreReward,
    RegionReward,
    find_attributes,
    token_f1,
)
from hf_meddiff.trainer.ddpo.tiny import (
    build_attribute_classifier,
    build_tiny_clip_model,
    record_attributes,
    record_caption,
    train_attribute_classifier,
)


class ChannelClassifier(torch.nn.Module):
    """Logit k = 20 * (mean of channel k - 0.5): attribute k is "seen" when channel k is bright."""

    def forward(self, pixel_values):
        return 20 * (((pixel_values + 1) / 2).mean(dim=(2, 3)) - 0.5)


def test_find_attributes_matches_whole_words_only():
    assert find_attributes("Dermoscopy image: melanoma, severe", ["severe", "melanoma", "nevus"]) == [
        "melanoma",
        "severe",
    ]
    assert find_attributes("non-melanoma lesion", ["melanoma"]) == []
    assert find_attributes("cotton wool spot and spot", ["spot", "cotton wool spot"]) == [
        "cotton wool spot",
        "spot",
    ]


def test_attribute_reward_is_the_fraction_of_prompt_attributes_recognised():
    reward = AttributeClassifierReward(
        ChannelClassifier(), attributes=["red", "green", "blue"], mode="fraction"
    )
    images = torch.zeros(3, 3, 4, 4)
    images[0, 0] = 1.0  # red only
    images[1, :2] = 1.0  # red and green
    prompts = ["red and blue", "red and green", "nothing known"]
    assert reward(images, prompts) == [0.5, 1.0, 0.0]
    # Attributes passed as metadata take precedence over the prompt text.
    assert reward(images, prompts, attributes=[["red"], ["blue"], ["green"]]) == [1.0, 0.0, 0.0]


def test_attribute_reward_probability_mode_and_exclusive_groups():
    reward = AttributeClassifierReward(ChannelClassifier(), attributes=["red", "green", "blue"])
    both = torch.zeros(1, 3, 4, 4)
    both[0, :2] = 1.0
    (plain,) = reward(both, ["red"])
    assert plain == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
    exclusive = AttributeClassifierReward(
        ChannelClassifier(), attributes=["red", "green", "blue"], exclusive_groups=[["red", "green"]]
    )
    # red is seen, but so is green, which excludes it: the reward drops to ~0.
    assert exclusive(both, ["red"])[0] < 1e-3
    with pytest.raises(ValueError, match="unknown attributes"):
        AttributeClassifierReward(
            ChannelClassifier(), attributes=["red"], exclusive_groups=[["red", "purple"]]
        )


def test_region_reward_scores_the_crops_named_in_the_prompt():
    reward = RegionReward(
        AttributeClassifierReward(ChannelClassifier(), attributes=["red", "green", "blue"], mode="fraction")
    )
    images = torch.zeros(2, 3, 10, 10)
    images[:, 0, :5, :5] = 1.0  # red square top-left
    images[:, 2, 5:, 5:] = 1.0  # blue square bottom-right
    prompts = [
        "red <box>[0,0,499,499]</box>; blue <box>[500,500,999,999]</box>",
        "red <box>[500,500,999,999]</box>",
    ]
    assert reward(images, prompts) == [1.0, 0.0]
    # Canonical `boxes` metadata is used when given; no box -> the whole image with the full prompt.
    boxes = [[{"label": "blue", "bbox": [500, 500, 999, 999]}], []]
    assert reward(images, ["x", "red"], boxes=boxes) == [1.0, 0.0]


def test_clip_reward_is_the_cosine_of_clip_embeddings():
    model, processor = build_tiny_clip_model(seed=0)
    reward = CLIPScoreReward(model, processor, scale=2.0)
    images = torch.rand(2, 3, 32, 32)
    scores = reward(images, ["melanoma", "nevus"])
    inputs = processor(
        text=["melanoma", "nevus"],
        images=[(x * 255).round().byte().permute(1, 2, 0).numpy() for x in images],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        out = model(**inputs)
    expected = 2.0 * torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    torch.testing.assert_close(torch.tensor(scores), expected, rtol=1e-4, atol=1e-5)


def test_open_clip_reward_with_a_built_model_and_a_clear_error_without_open_clip():
    class FakeOpenCLIP(torch.nn.Module):
        def encode_image(self, x):
            return x.mean(dim=(2, 3))

        def encode_text(self, tokens):
            return tokens.float()

    def preprocess(pil):
        import numpy as np

        return torch.from_numpy(np.asarray(pil, dtype="float32") / 255.0).permute(2, 0, 1)

    def tokenizer(texts):
        return torch.tensor([[1.0, 0.0, 0.0] if t == "red" else [0.0, 0.0, 1.0] for t in texts])

    reward = OpenCLIPScoreReward(model=FakeOpenCLIP(), preprocess=preprocess, tokenizer=tokenizer)
    images = torch.zeros(2, 3, 4, 4)
    images[:, 0] = 1.0
    assert reward(images, ["red", "blue"]) == pytest.approx([1.0, 0.0], abs=1e-6)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="open_clip_torch"):
            OpenCLIPScoreReward("ViT-B-32")


def test_description_cycle_reward_compares_the_description_with_the_prompt():
    class Describer:
        def __call__(self, image, question):
            images = image if isinstance(image, list) else [image]
            texts = [
                "melanoma on the trunk" if img.getpixel((0, 0))[0] > 128 else "normal skin" for img in images
            ]
            return type("Out", (), {"text": texts if isinstance(image, list) else texts[0]})()

    images = torch.zeros(2, 3, 4, 4)
    images[0, 0] = 1.0
    prompts = ["dermoscopy image: melanoma", "dermoscopy image: melanoma"]
    for batched in (True, False):
        reward = DescriptionCycleReward(Describer(), batched=batched)
        assert reward(images, prompts) == pytest.approx([token_f1("melanoma on the trunk", prompts[0]), 0.0])
        assert reward(images, prompts, attributes=[["melanoma"], ["melanoma"]]) == [1.0, 0.0]


def test_description_cycle_reward_with_a_meddiff_pipeline():
    pipeline_module = pytest.importorskip("hf_meddiff.generation.pipeline_meddiff")
    from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    from hf_meddiff.models.meddiff.image_processing_meddiff import MedDiffImageProcessor
    from hf_meddiff.models.meddiff.image_tokenizer_meddiff import MedDiffImageTokenizer
    from hf_meddiff.models.meddiff.processing_meddiff import MedDiffProcessor
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    texts = ["Findings: melanoma on the trunk.", "Findings: nevus.", "Describe the findings in this image."]
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        train_text_tokenizer(texts * 8, vocab_size=300),
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    model = MedDiffForMaskedDiffusion(
        MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())
    ).eval()
    model.generation_config.update(gen_length=8, block_length=8)
    pipe = pipeline_module.MedDiffPipeline(model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    reward = DescriptionCycleReward(pipe)
    prompts = ["dermoscopy image: melanoma", "dermoscopy image: nevus"]
    descriptions = reward.describe(torch.rand(2, 3, 32, 32))
    assert len(descriptions) == 2 and all(isinstance(d, str) for d in descriptions)
    scores = reward(torch.rand(2, 3, 32, 32), prompts)
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


@pytest.mark.slow
def test_embedded_attribute_classifier_learns_phantom_attributes():
    data = pytest.importorskip("hf_meddiff.data")
    from hf_meddiff.trainer.ddpo.tiny import images_to_tensor

    ds = data.make_phantom_dataset(96, seed=0, image_size=32, modalities=("dermoscopy",))
    records = [ds[i] for i in range(len(ds))]
    attributes = [record_attributes(r) for r in records]
    assert record_caption(records[0], attributes[0]).startswith("dermoscopy image: ")
    images = images_to_tensor([r["image"] for r in records], 32)
    names = sorted({a for attrs in attributes for a in attrs})
    model = build_attribute_classifier(names, image_size=32)
    losses = train_attribute_classifier(model, images, attributes, num_steps=40, batch_size=32)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    reward = AttributeClassifierReward(model, mode="fraction")
    captions = [record_caption(r, a) for r, a in zip(records, attributes)]
    scores = reward(images, captions, attributes=attributes)
    assert len(scores) == len(records) and all(0.0 <= s <= 1.0 for s in scores)
