"""LLaDA / MMaDA checkpoints -> MedDiff: logits equal the published LLaDA forward, tokenizer ids kept, MAGVIT-v2
image tokenizer, errors that name what does not match."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForMaskedLM

from convert_fixtures import (
    TINY_MAGVIT,
    build_llada,
    build_magvit,
    build_mmada,
    llada_reference_logits,
    save_sharded,
)
from hf_meddiff import MedDiffForMaskedDiffusion, MedDiffImageTokenizer, MedDiffProcessor
from hf_meddiff.cli import main
from hf_meddiff.models.meddiff.convert_common_meddiff import ConversionError
from hf_meddiff.models.meddiff.convert_llada_meddiff import convert_llada
from hf_meddiff.models.meddiff.magvit_meddiff import MagvitV2ImageTokenizer


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    src = tmp_path_factory.mktemp("llada") / "src"
    config, weights = build_llada(src)
    return src, config, weights


def test_converted_llada_logits_equal_the_published_forward_on_every_source_token(llada, tmp_path):
    src, config, weights = llada
    dst = tmp_path / "dst"
    converted = convert_llada(src, dst, image_codebook_size=64, image_grid_size=4)
    model = AutoModelForMaskedLM.from_pretrained(dst).eval()  # no remote code: hf_meddiff registers MedDiff
    assert isinstance(model, MedDiffForMaskedDiffusion)
    rows = config["embedding_size"]
    assert (converted.image_token_offset, converted.vocab_size) == (rows, rows + 64)
    ids = torch.randint(0, rows, (2, 14), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    reference = llada_reference_logits(config, weights, ids)
    torch.testing.assert_close(logits[..., :rows], reference, rtol=1e-5, atol=1e-5)
    # the new image rows: head rows all equal (the mean head row), so every code starts with the same score
    assert torch.allclose(logits[..., rows:], logits[..., rows : rows + 1].expand(-1, -1, 64), atol=1e-5)
    assert json.loads((dst / "conversion.json").read_text())["new_rows"] == [rows, rows + 64]


def test_tokenizer_keeps_llada_ids_under_meddiff_names_and_the_chat_template(llada, tmp_path):
    src, config, _ = llada
    dst = tmp_path / "dst"
    converted = convert_llada(src, dst, image_codebook_size=64, image_grid_size=4)
    processor = MedDiffProcessor.from_pretrained(dst)
    tok = processor.tokenizer
    assert converted.mask_token_id == config["mask_token_id"] == tok.convert_tokens_to_ids("<|mask|>")
    assert tok.convert_tokens_to_ids("<|eos|>") == config["eos_token_id"]
    base = tok.convert_tokens_to_ids("<|soi|>")  # LLaDA's <|reserved_token_0|>, MMaDA's <|soi|>
    assert [tok.convert_tokens_to_ids(t) - base for t in ("<|eoi|>", "<|t2i|>", "<|mmu|>", "<|pad|>")] == [
        1,
        4,
        5,
        9,
    ]
    assert processor.offset == converted.image_token_offset
    text = tok.apply_chat_template([{"role": "user", "content": "what is the modality"}], tokenize=False)
    assert text.startswith("<|bos|><|start_header_id|>user<|end_header_id|>")
    ids = tok("<think> yes </think>")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "<think>yes</think>"


def test_from_llada_converts_and_loads(llada, tmp_path):
    src, config, weights = llada
    model = MedDiffForMaskedDiffusion.from_llada(
        src, tmp_path / "dst", image_codebook_size=64, image_grid_size=4
    )
    ids = torch.tensor([[1, 5, 9, 30, config["mask_token_id"], 7]])
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).logits[..., : config["embedding_size"]], llada_reference_logits(config, weights, ids),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip


def test_errors_name_the_mismatch_and_what_to_pass(llada, tmp_path):
    src, config, weights = llada
    with pytest.raises(ConversionError, match="neither a local folder nor a Hub id"):
        convert_llada(tmp_path / "nowhere" / "x" / "y", tmp_path / "out")
    bad = tmp_path / "bad"
    build_llada(bad)
    (bad / "config.json").write_text(json.dumps(config | {"block_type": "sequential"}))
    with pytest.raises(ConversionError, match="block_type = 'sequential'.*needs block_type = 'llama'"):
        convert_llada(bad, tmp_path / "out1")
    (bad / "config.json").write_text(json.dumps(config | {"n_layers": 3}))
    with pytest.raises(ConversionError, match=r"missing \['model.transformer.blocks.2"):
        convert_llada(bad, tmp_path / "out2")
    (bad / "config.json").write_text(json.dumps(config | {"mlp_hidden_size": 96}))
    with pytest.raises(ConversionError, match="ff_proj.weight has shape"):
        convert_llada(bad, tmp_path / "out3")
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ConversionError, match="model-00002-of-00003.safetensors.*not there"):
        convert_llada(bad, tmp_path / "out4")
    renamed = tmp_path / "renamed"
    build_llada(renamed)
    for shard in renamed.glob("model-*.safetensors"):
        shard.unlink()
    save_sharded({k.replace("attn_out", "o_proj"): v for k, v in weights.items()}, renamed)
    with pytest.raises(ConversionError, match=r"unknown \['model.transformer.blocks.0.o_proj.weight'"):
        convert_llada(renamed, tmp_path / "out5")
    pickled = tmp_path / "pickled"
    build_llada(pickled)
    for shard in pickled.glob("model*.safetensors*"):
        shard.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(ConversionError, match="never opens"):
        convert_llada(pickled, tmp_path / "out6")


def test_cli_converts_and_reports_errors(llada, tmp_path, capsys):
    src, _, _ = llada
    assert main(["convert", "llada", str(src), str(tmp_path / "dst"), "--image-codebook-size", "64",
                 "--image-grid-size", "4", "--dtype", "bfloat16"]) == 0  # fmt: skip
    assert "peak RAM" in capsys.readouterr().out
    assert MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst").dtype == torch.bfloat16
    assert main(["convert", "llada", str(src), str(tmp_path / "dst")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_mmada_keeps_its_image_rows_and_task_tokens_and_wraps_magvit(tmp_path):
    src = tmp_path / "mmada"
    config, weights = build_mmada(src)
    magvit_state = build_magvit(tmp_path / "magvitv2")
    converted = convert_llada(src, tmp_path / "dst", mmada=True, image_tokenizer=str(tmp_path / "magvitv2"))
    processor = MedDiffProcessor.from_pretrained(tmp_path / "dst")
    tok = processor.tokenizer
    assert converted.image_token_offset == len(tok) and converted.vocab_size == config["embedding_size"]
    assert (
        tok.convert_tokens_to_ids("<|sov|>") == tok.convert_tokens_to_ids("<|soi|>") + 2
    )  # MMaDA's names too
    model = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "dst").eval()
    image = (
        torch.randint(0, 64, (1, 16)) + converted.image_token_offset
    )  # MMaDA: <|mmu|> <|soi|> img <|eoi|> text
    ids = torch.cat([torch.tensor([[converted.mmu_token_id, converted.soi_token_id]]), image,
                     torch.tensor([[converted.eoi_token_id, 3, 4, 5]])], dim=1)  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).logits, llada_reference_logits(config, weights, ids), rtol=1e-5, atol=1e-5
        )
    # the image tokenizer: saved in image_tokenizer/, loaded by the processor as MAGVIT-v2, same codes
    vq = processor.image_tokenizer
    assert isinstance(vq, MagvitV2ImageTokenizer) and (vq.grid_size, vq.codebook_size) == (4, 64)
    assert isinstance(MedDiffImageTokenizer.from_pretrained(tmp_path / "dst", subfolder="image_tokenizer"),
                      MagvitV2ImageTokenizer)  # fmt: skip
    for key, value in vq.state_dict().items():
        assert torch.equal(value, magvit_state[key]), key
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    codes = vq.encode(images)
    assert codes.shape == (3, 16) and int(codes.max()) < 64
    assert torch.equal(vq.quantize.codes(vq.quantize.vectors(codes, 4)), codes)  # codes <-> code vectors
    pictures = processor.decode_images(codes + converted.image_token_offset)
    assert len(pictures) == 3 and pictures[0].size == (32, 32)
    again = processor.encode_images(pictures)  # PIL -> pixels -> codes through the MedDiff processor
    assert again.shape == codes.shape and int(again.max()) < 64


def test_magvit_lookup_free_codes_follow_the_published_bit_order():
    vq = MagvitV2ImageTokenizer(**TINY_MAGVIT)
    latents = torch.tensor([1.0, -1.0, 1.0, -0.5, 0.0, 2.0]).reshape(1, 6, 1, 1).expand(1, 6, 4, 4)
    codes = vq.quantize.codes(latents)
    assert torch.all(codes == 0b101001)  # channel 0 is the most significant bit; 0 counts as negative
    assert torch.equal(vq.quantize.vectors(codes, 4)[0, :, 0, 0], torch.tensor([1.0, -1, 1, -1, -1, 1]))
