"""Model and config guards: token ids outside the vocabulary, labels out of range, empty sequences, too-long
prompts (error, or truncation with a warning when asked), and configs with non-positive sizes or unknown keys."""

from __future__ import annotations

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", max_position_embeddings=64)).eval()


def ids(model, length=8, batch=2):
    return torch.randint(10, model.config.text_vocab_size, (batch, length))


@pytest.mark.parametrize("bad", [-1, 10_000])
def test_token_ids_outside_the_vocabulary_name_value_and_position(model, bad):
    x = ids(model)
    x[1, 3] = bad
    with pytest.raises(
        ValueError, match=rf"input_ids holds id {bad} at row 1, position 3, outside the vocabulary"
    ):
        model(input_ids=x)


def test_labels_out_of_range_are_named(model):
    x = ids(model)
    labels = torch.full_like(x, -100)
    labels[0, 5] = model.config.vocab_size + 3
    with pytest.raises(ValueError, match=r"labels holds id .* at row 0, position 5"):
        model(input_ids=x, labels=labels)
    labels[0, 5] = -7
    with pytest.raises(ValueError, match=r"labels holds id -7"):
        model(input_ids=x, labels=labels)


def test_task_ids_outside_the_task_table(model):
    x = ids(model)
    labels = x.clone()
    with pytest.raises(ValueError, match="task_ids must index the tasks"):
        model(input_ids=x, labels=labels, task_ids=torch.tensor([0, 9]))


@pytest.mark.parametrize("shape", [(2, 0), (0, 5)])
def test_empty_sequences_are_refused(model, shape):
    with pytest.raises(ValueError, match="input_ids is empty"):
        model(input_ids=torch.zeros(shape, dtype=torch.long))


def test_a_prompt_longer_than_the_positions_is_an_error_or_truncated_on_request(model, caplog):
    x = ids(model, length=80)
    with pytest.raises(ValueError, match="80 positions but max_position_embeddings is 64"):
        model(input_ids=x)
    out = model(input_ids=x, truncation=True)
    assert out.logits.shape[1] == 64
    torch.testing.assert_close(out.logits, model(input_ids=x[:, -64:]).logits)


def test_generate_checks_the_prompt_once(model):
    bad = ids(model, length=6)
    bad[0, 0] = model.config.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(bad, gen_length=4, steps=2)
    calls = []
    original = model.model.forward

    def counting(*args, **kwargs):
        calls.append(model._should_check_ids())
        return original(*args, **kwargs)

    model.model.forward = counting
    try:
        model.generate(ids(model, length=6), gen_length=4, steps=4)
    finally:
        del model.model.forward
    assert calls and not any(calls)  # no per-step checks inside generate


def test_checks_can_be_turned_off(model):
    x = ids(model)
    model.check_inputs = False
    try:
        assert model(input_ids=x).logits.shape[:2] == x.shape
    finally:
        model.check_inputs = True


@pytest.mark.parametrize(
    "field",
    [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "text_vocab_size",
        "image_codebook_size",
        "image_grid_size",
    ],
)
@pytest.mark.parametrize("value", [0, -4])
def test_config_refuses_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=rf"MedDiffConfig.{field} must be a positive integer, got {value}"):
        MedDiffConfig.from_preset("tiny", **{field: value})


def test_config_refuses_unknown_keys_and_suggests_the_field():
    with pytest.raises(ValueError, match=r"unknown field\(s\) 'hiden_size' \(did you mean 'hidden_size'\?\)"):
        MedDiffConfig.from_preset("tiny", hiden_size=64)
    with pytest.raises(ValueError, match="rms_norm_eps must be a positive number"):
        MedDiffConfig.from_preset("tiny", rms_norm_eps=0.0)


def test_saved_configs_still_load(tmp_path):
    config = MedDiffConfig.from_preset("tiny")
    config.save_pretrained(tmp_path)
    loaded = MedDiffConfig.from_pretrained(tmp_path)
    assert loaded.hidden_size == config.hidden_size and loaded.vocab_size == config.vocab_size
