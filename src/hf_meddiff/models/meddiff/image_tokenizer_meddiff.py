"""MedDiffImageTokenizer: a diffusers `VQModel` seen as an image <-> discrete-token codec.

An image of `image_size` x `image_size` pixels becomes `grid_size * grid_size` codebook indices in
row-major order (0 .. `codebook_size` - 1); the MedDiff model adds `image_token_offset` to place them
in the unified vocabulary. Any pretrained diffusers `VQModel` can be wrapped with `from_vqmodel`.

This file is copied into saved model folders (remote code): it imports only torch, diffusers,
transformers and the standard library.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch
from diffusers import VQModel
from torch import nn

IMAGE_TOKENIZER_CONFIG_NAME = "image_tokenizer_config.json"

# Small VQ architectures that train on a CPU in minutes. `image_size` / 2**(len(block_out_channels)-1)
# is the token grid: embedded 64 px -> 8 x 8 tokens (codebook 256), embedded16 64 px -> 16 x 16 tokens (512 codes,
# 4x the sequence length, about 2 dB more held-out PSNR on MedPhantom), tiny 32 px -> 4 x 4 tokens (64 codes).
# benchmarks/bench_image_tokenizer.py measures them.
VQ_PRESETS: dict[str, dict[str, Any]] = {
    "embedded": {
        "image_size": 64,
        "vq_config": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [16, 32, 32, 64],
            "layers_per_block": 1,
            "latent_channels": 16,
            "num_vq_embeddings": 256,
            "norm_num_groups": 8,
            "mid_block_add_attention": False,
            "sample_size": 64,
        },
    },
    "embedded16": {
        "image_size": 64,
        "vq_config": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3,
            "block_out_channels": [16, 32, 64],
            "layers_per_block": 1,
            "latent_channels": 16,
            "num_vq_embeddings": 512,
            "norm_num_groups": 8,
            "mid_block_add_attention": False,
            "sample_size": 64,
        },
    },
    "tiny": {
        "image_size": 32,
        "vq_config": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [8, 16, 16, 32],
            "layers_per_block": 1,
            "latent_channels": 8,
            "num_vq_embeddings": 64,
            "norm_num_groups": 8,
            "mid_block_add_attention": False,
            "sample_size": 32,
        },
    },
}


class MedDiffImageTokenizer(nn.Module):
    """Encode images to VQ codebook indices and decode indices back to images.

    Args:
        vq_model (`diffusers.VQModel`): the vector-quantised autoencoder.
        image_size (`int`, *optional*): side of the square images it tokenises; defaults to
            `vq_model.config.sample_size`.

    Shapes: `encode(pixel_values [B, 3, S, S] in [-1, 1]) -> LongTensor [B, g*g]` with
    `g = grid_size = S / downsample_factor`; `decode(ids [B, g*g]) -> FloatTensor [B, 3, S, S]` in [-1, 1].

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff import MedDiffImageTokenizer
    >>> tok = MedDiffImageTokenizer.from_config_preset("tiny")
    >>> ids = tok.encode(torch.zeros(2, 3, 32, 32))
    >>> ids.shape, tok.grid_size, tok.codebook_size
    (torch.Size([2, 16]), 4, 64)
    >>> tok.decode(ids).shape
    torch.Size([2, 3, 32, 32])

    ```
    """

    def __init__(self, vq_model: VQModel, image_size: int | None = None):
        super().__init__()
        if not isinstance(vq_model, VQModel):
            raise TypeError(
                f"MedDiffImageTokenizer wraps a diffusers VQModel, got {type(vq_model).__name__}. "
                "Load one with `diffusers.VQModel.from_pretrained(...)`."
            )
        self.vq_model = vq_model
        config = vq_model.config
        self.downsample_factor = 2 ** (len(config.block_out_channels) - 1)
        self.image_size = int(image_size if image_size is not None else config.sample_size)
        if self.image_size % self.downsample_factor != 0:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the VQ downsample factor "
                f"{self.downsample_factor}; pick an image_size divisible by {self.downsample_factor}."
            )

    # --- geometry --------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Tokens per side: one image is `grid_size * grid_size` tokens."""
        return self.image_size // self.downsample_factor

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def codebook_size(self) -> int:
        return int(self.vq_model.config.num_vq_embeddings)

    @property
    def embed_dim(self) -> int:
        return int(self.vq_model.quantize.vq_embed_dim)

    @property
    def device(self) -> torch.device:
        return next(self.vq_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vq_model.parameters()).dtype

    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = (
                tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
            )
            raise ValueError(
                f"MedDiffImageTokenizer.encode expects pixel_values of shape [B, C, H, W] in [-1, 1], got {shape}. "
                "Prepare images with MedDiffImageProcessor."
            )
        height, width = pixel_values.shape[-2:]
        if height != self.image_size or width != self.image_size:
            raise ValueError(
                f"Image size {height}x{width} px does not match the image tokenizer's {self.image_size}x"
                f"{self.image_size} px (grid {self.grid_size}x{self.grid_size} tokens). Resize the images to "
                f"{self.image_size} px, e.g. MedDiffImageProcessor(size={self.image_size})."
            )
        channels = pixel_values.shape[1]
        in_channels = self.vq_model.config.in_channels
        if channels != in_channels:
            if in_channels == 1 and channels == 3:
                pixel_values = pixel_values.mean(dim=1, keepdim=True)
            elif in_channels == 3 and channels == 1:
                pixel_values = pixel_values.expand(-1, 3, -1, -1)
            else:
                raise ValueError(
                    f"pixel_values have {channels} channels but the VQ model expects {in_channels}."
                )
        return pixel_values.to(device=self.device, dtype=self.dtype)

    # --- codec -------------------------------------------------------------------------------------
    def encode_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents [B, D, g, g] (the VQ encoder followed by `quant_conv`)."""
        return self.vq_model.encode(self._check_pixels(pixel_values)).latents

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`latents [B, D, g, g]` -> (`z_q` [B, D, g, g] with straight-through gradient, VQ loss, ids [B, g*g])."""
        z_q, vq_loss, (_, _, indices) = self.vq_model.quantize(latents)
        return z_q, vq_loss, indices.reshape(latents.shape[0], -1)

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, D, g, g] -> images [B, 3, S, S] (not clamped)."""
        vq = self.vq_model
        hidden = vq.post_quant_conv(z_q)
        images = vq.decoder(hidden, z_q if vq.config.norm_type == "spatial" else None)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Images [B, 3, S, S] in [-1, 1] -> codebook indices LongTensor [B, g*g] (row-major)."""
        latents = self.encode_latents(pixel_values)
        return self.quantize(latents)[2].long()

    def ids_to_latents(self, ids: torch.Tensor) -> torch.Tensor:
        """Codebook indices [B, g*g] -> quantised latents [B, D, g, g]."""
        ids = torch.as_tensor(ids)
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        if ids.ndim != 2 or ids.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"Expected image token ids of shape [B, {self.num_image_tokens}] ({self.grid_size}x{self.grid_size} "
                f"grid), got {tuple(ids.shape)}."
            )
        ids = ids.to(self.device).long()
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"Image codes must lie in 0..{self.codebook_size - 1}, got values in {low}..{high}. "
                "If these are vocabulary ids, subtract the model's image_token_offset first."
            )
        shape = (ids.shape[0], self.grid_size, self.grid_size, self.embed_dim)
        return self.vq_model.quantize.get_codebook_entry(ids.reshape(-1), shape).to(self.dtype)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.FloatTensor:
        """Codebook indices [B, g*g] -> images FloatTensor [B, 3, S, S] clamped to [-1, 1]."""
        return self.decode_latents(self.ids_to_latents(ids)).clamp(-1.0, 1.0).float()

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Autoencode with gradients: returns `reconstruction`, `vq_loss`, `ids` and `latents`."""
        latents = self.encode_latents(pixel_values)
        z_q, vq_loss, ids = self.quantize(latents)
        return {
            "reconstruction": self.decode_latents(z_q),
            "vq_loss": vq_loss,
            "ids": ids,
            "latents": latents,
        }

    # --- construction and serialisation ----------------------------------------------------------
    @classmethod
    def from_vqmodel(cls, vq_model: VQModel, image_size: int | None = None) -> MedDiffImageTokenizer:
        """Wrap any diffusers `VQModel` (pretrained or fresh)."""
        return cls(vq_model, image_size=image_size)

    @classmethod
    def from_config_preset(cls, preset: str = "embedded", **vq_overrides: Any) -> MedDiffImageTokenizer:
        """A freshly initialised tokenizer from a preset (`"tiny"`, `"embedded"`); overrides go to `VQModel`."""
        if preset not in VQ_PRESETS:
            raise ValueError(f"Unknown image tokenizer preset {preset!r}; use one of {sorted(VQ_PRESETS)}.")
        spec = copy.deepcopy(VQ_PRESETS[preset])
        image_size = vq_overrides.pop("image_size", spec["image_size"])
        config = {**spec["vq_config"], **vq_overrides, "sample_size": image_size}
        return cls(VQModel(**config), image_size=image_size)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Write `config.json` + `diffusion_pytorch_model.safetensors` (a plain diffusers VQModel folder)
        and `image_tokenizer_config.json`."""
        os.makedirs(save_directory, exist_ok=True)
        self.vq_model.save_pretrained(save_directory, safe_serialization=True, **kwargs)
        config = {"image_tokenizer_class": type(self).__name__, "image_size": self.image_size}
        with open(os.path.join(save_directory, IMAGE_TOKENIZER_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> MedDiffImageTokenizer:
        """Load from a folder or Hub id holding a diffusers VQModel (e.g. `subfolder="image_tokenizer"`); a local
        folder saved by another tokenizer class of this package (MAGVIT-v2, `magvit_meddiff`) loads as that class."""
        local = os.path.join(str(pretrained_model_name_or_path), subfolder or "", IMAGE_TOKENIZER_CONFIG_NAME)
        if os.path.isfile(local):
            with open(local, encoding="utf-8") as f:
                if json.load(f).get("image_tokenizer_class") == "MagvitV2ImageTokenizer":
                    from .magvit_meddiff import MagvitV2ImageTokenizer

                    return MagvitV2ImageTokenizer.from_pretrained(
                        pretrained_model_name_or_path, subfolder=subfolder, image_size=image_size
                    )
        vq_model = VQModel.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        if image_size is None:
            image_size = _read_image_size(pretrained_model_name_or_path, subfolder, kwargs)
        return cls(vq_model.eval(), image_size=image_size)


def _read_image_size(path: str | os.PathLike, subfolder: str | None, kwargs: dict[str, Any]) -> int | None:
    folder = os.path.join(str(path), subfolder or "")
    if os.path.isdir(str(path)):
        config_file = os.path.join(folder, IMAGE_TOKENIZER_CONFIG_NAME)
        if not os.path.isfile(config_file):
            return None
    else:
        from transformers.utils import cached_file

        hub_kwargs = {
            k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs
        }
        config_file = cached_file(
            str(path),
            IMAGE_TOKENIZER_CONFIG_NAME,
            subfolder=subfolder or "",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if config_file is None:
            return None
    with open(config_file, encoding="utf-8") as f:
        return json.load(f).get("image_size")
