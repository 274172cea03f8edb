"""Llama / Qwen2 / Qwen3 causal LMs -> MedDiff: with causal attention the hidden states before the head equal the
source model's; the next-token shift can be kept (Dream); MedDiff tokens are added with sensible rows."""

from __future__ import annotations

import json

import pytest
import torch

from convert_fixtures import build_causal_lm
from hf_meddiff import MedDiffForMaskedDiffusion, MedDiffProcessor
from hf_meddiff.models.meddiff.convert_causal_lm_meddiff import convert_causal_lm
from hf_meddiff.models.meddiff.convert_common_meddiff import ConversionError


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_hidden_states_equal_the_source_causal_lm_when_attention_is_causal(tmp_path, model_type):
    source, _ = build_causal_lm(tmp_path / "src", model_type)
    assert len(list((tmp_path / "src").glob("model-*.safetensors"))) > 3  # sharded source
    config = convert_causal_lm(tmp_path / "src", tmp_path / "dst", image_codebook_size=64, image_grid_size=4)
    assert config.qk_norm == (model_type == "qwen3") and config.attention_bias == (model_type == "qwen2")
    ids = torch.randint(0, 60, (2, 11), generator=torch.Generator().manual_seed(0))
    causal = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst", causal_attention=True).eval()
    with torch.no_grad():
        expected = source.model(ids).last_hidden_state
        torch.testing.assert_close(causal.model(ids).last_hidden_state, expected, rtol=1e-5, atol=1e-5)
        # the source head survives on the source rows
        rows = source.lm_head.weight.shape[0]
        torch.testing.assert_close(
            causal(ids).logits[..., :60], source(ids).logits[..., :60], rtol=1e-5, atol=1e-5
        )
        bidirectional = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst").eval()
        assert not torch.allclose(bidirectional.model(ids).last_hidden_state, expected, atol=1e-3)
    assert config.image_token_offset >= rows


def test_meddiff_tokens_are_added_and_bos_eos_copy_the_source_rows(tmp_path):
    source, tok = build_causal_lm(tmp_path / "src", "llama")
    config = convert_causal_lm(tmp_path / "src", tmp_path / "dst", image_codebook_size=64, image_grid_size=4)
    processor = MedDiffProcessor.from_pretrained(tmp_path / "dst")
    model = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst")
    embed = model.get_input_embeddings().weight
    assert torch.equal(embed[config.bos_token_id], source.get_input_embeddings().weight[tok.bos_token_id])
    assert torch.equal(embed[config.eos_token_id], source.get_input_embeddings().weight[tok.eos_token_id])
    assert processor.tokenizer.convert_tokens_to_ids("<|mask|>") == config.mask_token_id >= len(tok)
    added = json.loads((tmp_path / "dst" / "conversion.json").read_text())["added_tokens"]
    assert "<|mmu|>" in added and "<think>" in added
    assert processor.offset == config.image_token_offset


def test_keep_shift_reads_position_i_from_the_state_at_i_minus_1(tmp_path):
    source, _ = build_causal_lm(tmp_path / "src", "qwen2")
    convert_causal_lm(
        tmp_path / "src", tmp_path / "dst", keep_shift=True, image_codebook_size=64, image_grid_size=4
    )
    model = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst", causal_attention=True).eval()
    ids = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        shifted = model(ids).logits[..., :60]
        expected = source(ids).logits[..., :60]
    torch.testing.assert_close(shifted[:, 1:], expected[:, :-1], rtol=1e-5, atol=1e-5)
    bidirectional = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst").eval()
    cache = bidirectional(
        ids, use_cache=True
    ).cache  # a full forward fills the cache; a block cannot be shifted
    with pytest.raises(ValueError, match="logits_shift"):
        bidirectional(ids[:, 3:5], cache=cache, cache_start=3)


def test_unsupported_sources_are_refused_with_the_reason(tmp_path):
    build_causal_lm(tmp_path / "src", "llama")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(ConversionError, match="model_type 'gpt2' is not one of"):
        convert_causal_lm(tmp_path / "src", tmp_path / "dst")
    (tmp_path / "src" / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(ConversionError, match=r"missing \['model.layers.2"):
        convert_causal_lm(tmp_path / "src", tmp_path / "dst")
