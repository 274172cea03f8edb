"""A plain transformers `GenerationConfig` passed to `generate` is honoured (its shared fields mapped onto
`MedDiffGenerationConfig`) or refused with the field named; it is never dropped."""

from __future__ import annotations

import tempfile

import pytest
import torch
from transformers import GenerationConfig

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
from hf_meddiff.models.meddiff.generation_meddiff import generation_config_fields

PROMPT = torch.tensor([[1, 9, 7, 20, 21, 8]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()


def test_generate_honours_a_plain_generation_config(model):
    out = model.generate(PROMPT, generation_config=GenerationConfig(max_new_tokens=4, temperature=1.0))
    assert out.shape == (1, 4)
    config = model._prepare_generation_config(GenerationConfig(max_new_tokens=4, temperature=1.0))
    assert (config.gen_length, config.temperature) == (4, 1.0)
    assert model.generation_config.gen_length != 4, "the model's own config is left as it was"


def test_shared_fields_map_onto_the_meddiff_config():
    fields = generation_config_fields(
        GenerationConfig(max_new_tokens=8, top_k=5, top_p=0.9, eos_token_id=[2], pad_token_id=0)
    )
    assert fields == {"gen_length": 8, "top_k": 5, "top_p": 0.9, "eos_token_id": 2, "pad_token_id": 0}
    assert generation_config_fields(GenerationConfig(do_sample=False, temperature=0.7))["temperature"] == 0.0
    assert generation_config_fields(GenerationConfig(do_sample=True))["temperature"] == 1.0
    assert generation_config_fields(GenerationConfig(use_cache=False)) == {"cache_mode": "none"}
    assert generation_config_fields(GenerationConfig(num_beams=1, num_return_sequences=1)) == {}


def test_keyword_arguments_override_a_plain_generation_config(model):
    config = model._prepare_generation_config(
        GenerationConfig(max_new_tokens=8, temperature=0.5), gen_length=4
    )
    assert (config.gen_length, config.temperature) == (4, 0.5)


@pytest.mark.parametrize(
    "field, value",
    [("num_beams", 4), ("max_length", 30), ("repetition_penalty", 1.3), ("num_return_sequences", 2)],
)
def test_fields_without_meaning_for_the_sampler_are_refused_by_name(model, field, value):
    with pytest.raises(ValueError, match=field):
        model.generate(PROMPT, generation_config=GenerationConfig(max_new_tokens=4, **{field: value}))


def test_from_pretrained_with_a_plain_generation_config(model):
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = MedDiffForMaskedDiffusion.from_pretrained(
            folder, generation_config=GenerationConfig(max_new_tokens=4)
        )
    assert loaded.generation_config.gen_length == 4
    assert loaded.generation_config.mask_token_id == model.config.mask_token_id
