"""MedDiffConfig: vocabulary layout, presets and refusals of overlapping layouts."""

import pytest
from huggingface_hub.errors import StrictDataclassError

from hf_meddiff import MedDiffConfig
from hf_meddiff.constants import DEFAULT_TOKEN_IDS, MASK_TOKEN, SOI_TOKEN, TASK_TOKENS, TASKS
from hf_meddiff.models.meddiff.configuration_meddiff import MEDDIFF_PRESETS, MEDDIFF_TASKS


def test_task_order_matches_the_shared_constants():
    assert MEDDIFF_TASKS == TASKS


def test_vocabulary_layout_is_derived_from_text_and_codebook_sizes():
    config = MedDiffConfig.from_preset("tiny", text_vocab_size=300, image_codebook_size=512)
    assert config.image_token_offset == 300
    assert config.vocab_size == 812
    assert config.image_token_end == 812
    assert config.num_image_tokens == config.image_grid_size**2


def test_special_token_ids_default_to_the_shared_table():
    config = MedDiffConfig.from_preset("tiny")
    assert config.mask_token_id == DEFAULT_TOKEN_IDS[MASK_TOKEN]
    assert config.soi_token_id == DEFAULT_TOKEN_IDS[SOI_TOKEN]
    assert config.t2i_token_id == DEFAULT_TOKEN_IDS[TASK_TOKENS["t2i"]]
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)


def test_presets_have_the_documented_sizes_and_accept_overrides():
    tiny = MedDiffConfig.from_preset("tiny")
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads, tiny.num_key_value_heads) == (
        64,
        2,
        4,
        2,
    )
    embedded = MedDiffConfig.from_preset("embedded", num_hidden_layers=5)
    assert embedded.num_hidden_layers == 5
    assert 192 <= embedded.hidden_size <= 256
    assert embedded.num_key_value_heads < embedded.num_attention_heads  # GQA
    assert set(MEDDIFF_PRESETS) == {"tiny", "embedded"}


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown MedDiff preset 'huge'.*\['embedded', 'tiny'\]"):
        MedDiffConfig.from_preset("huge")


def test_task_loss_weights_fill_missing_tasks_with_one():
    config = MedDiffConfig.from_preset("tiny", task_loss_weights={"t2i": 0.5})
    assert config.task_loss_weights == {"vqa": 1.0, "report": 1.0, "t2i": 0.5, "reasoning": 1.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"image_token_offset": 100},
            r"image_token_offset \(100\) lies inside the text vocabulary \[0, 128\)",
        ),
        ({"mask_token_id": 150}, r"mask_token_id \(150\) lies inside the image codebook range \[128, 192\)"),
        ({"soi_token_id": 500}, r"soi_token_id \(500\) is outside the vocabulary \[0, 192\)"),
        ({"eos_token_id": -1}, r"eos_token_id \(-1\) is outside the vocabulary"),
        ({"mask_token_id": 2}, r"mask_token_id \(2\) equals eos_token_id"),
        (
            {"vocab_size": 150},
            r"vocab_size \(150\) is smaller than image_token_offset \+ image_codebook_size",
        ),
        ({"hidden_size": 66}, r"hidden size \(66\) is not a multiple of the number of attention heads \(4\)"),
        (
            {"num_key_value_heads": 3},
            r"attention heads \(4\) is not a multiple of the number of key/value heads \(3\)",
        ),
        ({"image_grid_size": 32}, r"image_grid_size\*\*2 = 1024 tokens.*max_position_embeddings \(512\)"),
        ({"task_loss_weights": {"segmentation": 1.0}}, r"unknown tasks \['segmentation'\]"),
        ({"task_loss_weights": {"vqa": -1.0}}, r"finite and >= 0"),
        ({"text_noise_eps": 0.0}, r"text_noise_eps \(0.0\) must lie in \(0, 1\)"),
    ],
)
def test_overlapping_or_inconsistent_layouts_are_refused_with_the_numbers(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        MedDiffConfig.from_preset("tiny", **overrides)


def test_a_larger_vocab_size_is_kept_for_resized_embeddings():
    config = MedDiffConfig.from_preset("tiny", vocab_size=200)
    assert config.vocab_size == 200
    assert config.image_token_end == 192


def test_config_round_trips_through_save_and_load(tmp_path):
    config = MedDiffConfig.from_preset("tiny", task_loss_weights={"report": 2.0}, rope_theta=5000.0)
    config.save_pretrained(tmp_path)
    loaded = MedDiffConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.rope_parameters["rope_theta"] == 5000.0
    assert loaded.task_loss_weights["report"] == 2.0
    assert (tmp_path / "configuration_meddiff.py").is_file()  # remote code travels with the config
