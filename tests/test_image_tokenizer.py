import math

import numpy as np
import pytest
import torch
from diffusers import VQModel

from hf_meddiff.image_tokenizer import (
    VQ_PRESETS,
    MedDiffImageTokenizer,
    evaluate_image_tokenizer,
    images_to_tensor,
    train_image_tokenizer,
)


def _blob_images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Grey images with one bright ellipse on a darker disc, like a tiny phantom."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        body = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.16).astype(np.float32) * 0.4
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.15)
        lesion = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2).astype(np.float32) * 0.5
        images.append(np.clip(body + lesion, 0, 1).astype(np.float32))
    return images


def test_encode_decode_shapes_and_ranges():
    tok = MedDiffImageTokenizer.from_config_preset("tiny")
    assert (tok.image_size, tok.grid_size, tok.codebook_size, tok.num_image_tokens) == (32, 4, 64, 16)
    ids = tok.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert ids.dtype == torch.long and ids.shape == (2, 16)
    assert int(ids.min()) >= 0 and int(ids.max()) < 64
    images = tok.decode(ids)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0


def test_embedded_preset_geometry():
    tok = MedDiffImageTokenizer.from_config_preset("embedded")
    assert (tok.image_size, tok.grid_size, tok.codebook_size) == (64, 8, 256)


def test_image_size_mismatch_names_both_sizes():
    tok = MedDiffImageTokenizer.from_config_preset("tiny")
    with pytest.raises(ValueError, match=r"48x48.*32x32"):
        tok.encode(torch.zeros(1, 3, 48, 48))


def test_decode_rejects_vocabulary_ids_and_wrong_length():
    tok = MedDiffImageTokenizer.from_config_preset("tiny")
    with pytest.raises(ValueError, match="image_token_offset"):
        tok.decode(torch.full((1, 16), 300))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        tok.decode(torch.zeros(1, 15, dtype=torch.long))


def test_save_load_gives_bit_exact_ids(tmp_path):
    tok = MedDiffImageTokenizer.from_config_preset("tiny")
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    ids = tok.encode(pixels)
    tok.save_pretrained(tmp_path / "model" / "image_tokenizer")
    assert (tmp_path / "model" / "image_tokenizer" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = MedDiffImageTokenizer.from_pretrained(tmp_path / "model", subfolder="image_tokenizer")
    assert torch.equal(loaded.encode(pixels), ids)
    assert torch.equal(loaded.decode(ids), tok.decode(ids))
    # the folder is a plain diffusers VQModel folder
    assert isinstance(VQModel.from_pretrained(tmp_path / "model" / "image_tokenizer"), VQModel)


def test_any_vqmodel_is_accepted():
    vq = VQModel(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        num_vq_embeddings=32,
        norm_num_groups=4,
        sample_size=16,
    )
    tok = MedDiffImageTokenizer.from_vqmodel(vq)
    assert (tok.grid_size, tok.codebook_size) == (8, 32)
    ids = tok.encode(torch.zeros(2, 3, 16, 16))  # RGB input averaged for a 1-channel VQ
    assert ids.shape == (2, 64)
    assert tok.decode(ids).shape == (2, 3, 16, 16)  # grey output replicated to RGB
    with pytest.raises(TypeError, match="VQModel"):
        MedDiffImageTokenizer(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_short_fit_improves_reconstruction():
    images = _blob_images(32)
    pixels = images_to_tensor(images, 32)
    assert pixels.shape == (32, 3, 32, 32) and float(pixels.min()) >= -1
    untrained = MedDiffImageTokenizer.from_config_preset("tiny")
    before = evaluate_image_tokenizer(untrained, pixels)
    tok, stats = train_image_tokenizer(images, preset="tiny", steps=30, batch_size=8, lr=3e-3, progress=False)
    assert stats["mse"] < 0.5 * before["mse"]
    assert stats["psnr"] > before["psnr"] + 3
    assert stats["codebook_usage"] > 0.1
    assert set(stats) >= {"mse", "psnr", "codebook_usage", "codebook_perplexity"}
    # deterministic for a seed
    tok2, stats2 = train_image_tokenizer(images[:8], preset="tiny", steps=2, batch_size=4, progress=False)
    tok3, stats3 = train_image_tokenizer(images[:8], preset="tiny", steps=2, batch_size=4, progress=False)
    assert torch.equal(tok2.encode(pixels[:4]), tok3.encode(pixels[:4]))


def test_embedded16_preset_geometry():
    tok = MedDiffImageTokenizer.from_config_preset("embedded16")
    assert (tok.image_size, tok.grid_size, tok.num_image_tokens) == (64, 16, 256)
    assert tok.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 256)


def test_folder_saved_with_the_first_embedded_architecture_still_loads(tmp_path):
    # the 8x8 tokenizer the demo saved before the presets were retuned: 4 blocks [16, 32, 32, 64], 256 codes
    vq = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 64),
        layers_per_block=1,
        latent_channels=16,
        num_vq_embeddings=256,
        norm_num_groups=8,
        mid_block_add_attention=False,
        sample_size=64,
    )
    MedDiffImageTokenizer(vq).save_pretrained(tmp_path / "image_tokenizer")
    loaded = MedDiffImageTokenizer.from_pretrained(tmp_path, subfolder="image_tokenizer")
    assert (loaded.grid_size, loaded.codebook_size) == (8, 256)
    assert loaded.vq_model.config.block_out_channels == [16, 32, 32, 64]
    assert loaded.decode(loaded.encode(torch.zeros(2, 3, 64, 64))).shape == (2, 3, 64, 64)


def test_ema_codebook_follows_the_encoder_and_loss_codebook_still_trains():
    images = _blob_images(16)
    tok, stats = train_image_tokenizer(images, preset="tiny", steps=4, batch_size=8, progress=False)
    codebook = tok.vq_model.quantize.embedding.weight
    assert codebook.grad is None  # moved by moving averages, not by the optimiser
    assert stats["codebook_usage"] > 0.0 and math.isfinite(stats["psnr"])
    tok2, stats2 = train_image_tokenizer(
        images,
        preset="tiny",
        steps=4,
        batch_size=8,
        codebook_update="loss",
        kmeans_init=False,
        progress=False,
    )
    assert tok2.vq_model.quantize.embedding.weight.grad is not None
    assert math.isfinite(stats2["psnr"])


def test_kmeans_initialisation_uses_more_codes_than_random_samples():
    images = _blob_images(16)
    pixels = images_to_tensor(images, 32)
    kmeans, _ = train_image_tokenizer(images, preset="tiny", steps=1, batch_size=16, lr=1e-9, progress=False)
    random_init, _ = train_image_tokenizer(
        images, preset="tiny", steps=1, batch_size=16, lr=1e-9, kmeans_init=False, progress=False
    )
    used = evaluate_image_tokenizer(kmeans, pixels)["codebook_usage"]
    assert used >= evaluate_image_tokenizer(random_init, pixels)["codebook_usage"]


def test_preset_training_defaults_apply_when_not_given(monkeypatch):
    from hf_meddiff import image_tokenizer

    monkeypatch.setitem(image_tokenizer.TRAINING_DEFAULTS, "tiny", {"steps": 2, "batch_size": 4, "lr": 1e-3})
    _, stats = train_image_tokenizer(_blob_images(8), preset="tiny", progress=False)
    assert stats["steps"] == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [("codebook_update", "adam"), ("recon_loss", "huber"), ("ema_decay", 1.0), ("steps", 0)],
)
def test_bad_training_options_name_the_value(option, value):
    with pytest.raises(ValueError, match=str(value)):
        train_image_tokenizer(_blob_images(4), preset="tiny", progress=False, **{option: value})


def test_every_vq_preset_is_a_choice_of_the_tokenizer_command():
    import typing

    from hf_meddiff.cli import TokenizerOptions

    hints = typing.get_type_hints(TokenizerOptions)
    assert set(typing.get_args(hints["preset"])) == set(VQ_PRESETS)
