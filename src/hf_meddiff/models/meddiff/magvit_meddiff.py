# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MAGVIT-v2 (Show-o's / MMaDA's image tokenizer, `showlab/magvitv2`) behind the `MedDiffImageTokenizer` interface.

The network follows the published definition: a taming-style convolutional encoder (`conv_in`, `down.{i}.block.{j}`
ResNet blocks with GroupNorm(32) + swish, stride-2 `downsample` after every level but the last, a `mid` block with
self-attention, `norm_out`, `conv_out`, a 1x1 `quant_conv`), a lookup-free quantizer (each of the `z_channels`
latent channels is its sign: code = sum over channels of `2**(z_channels-1-c) * [z_c > 0]`, MSB first; the code's
vector is its bits mapped to +-1) and the mirrored decoder (`post_quant_conv`, `conv_in`, `mid`, `up.{i}` with
nearest upsampling, `norm_out`, `conv_out`). Parameter names are those of the published checkpoint, so its weights
load as they are (from safetensors only; pickle files are refused).

`encode(pixel_values [B, 3, S, S] in [-1, 1]) -> LongTensor [B, g*g]` (row-major, g = S / 2**(levels-1)),
`decode(codes) -> [B, 3, S, S]` clamped to [-1, 1]; saved as `image_tokenizer_config.json` + `model.safetensors`,
and `MedDiffImageTokenizer.from_pretrained` dispatches here when the config names this class.

This file travels with saved model folders: it imports only torch, safetensors and the standard library.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_TOKENIZER_CONFIG_NAME = "image_tokenizer_config.json"
WEIGHTS_NAME = "model.safetensors"
# showlab/magvitv2 (MAGVITv2() takes no arguments: these are its built-in sizes; 13 bits = 8192 codes, 16x down).
MAGVIT_V2_CONFIG: dict[str, Any] = {
    "ch": 128,
    "encoder_ch_mult": [1, 2, 2, 4, 4],
    "encoder_num_res_blocks": [4, 3, 4, 3, 4],
    "decoder_ch_mult": [1, 1, 2, 2, 4],
    "decoder_num_res_blocks": [4, 4, 3, 4, 3],
    "z_channels": 13,
    "image_size": 256,
}
SOURCE_WEIGHT_NAMES = (
    "pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class _ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class _AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape
        q = self.q(h).reshape(b, c, -1).transpose(1, 2)
        k = self.k(h).reshape(b, c, -1)
        v = self.v(h).reshape(b, c, -1)
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, height, width)
        return x + self.proj_out(out)


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = _ResnetBlock(channels, channels), _AttnBlock(channels), _ResnetBlock(channels, channels)  # fmt: skip
    return mid


class _Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: list[int], num_res_blocks: list[int], z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            down = nn.Module()
            down.block = nn.ModuleList()
            for _ in range(num_res_blocks[level]):
                down.block.append(_ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
            if level != len(ch_mult) - 1:
                down.downsample = _Downsample(block_in)
            self.down.append(down)
        self.mid = _mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for down in self.down:
            for block in down.block:
                h = block(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class _Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: list[int], num_res_blocks: list[int], z_channels: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        ups = []
        for level in reversed(range(len(ch_mult))):
            up = nn.Module()
            up.block = nn.ModuleList()
            for _ in range(num_res_blocks[level]):
                up.block.append(_ResnetBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
            if level != 0:
                up.upsample = _Upsample(block_in)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(z))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for up in reversed(self.up):
            for block in up.block:
                h = block(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _LookupFreeQuantizer(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        codes = torch.arange(2**bits)
        binary = (codes.unsqueeze(1) >> torch.arange(bits - 1, -1, -1, dtype=torch.long)) & 1
        self.register_buffer("embedding", binary.float() * 2 - 1)
        self.register_buffer("power_vals", 2 ** torch.arange(bits - 1, -1, -1))

    def codes(self, latents: torch.Tensor) -> torch.Tensor:
        """`[B, bits, g, g]` -> `[B, g*g]`: the bits of `latents > 0`, MSB first."""
        bits = (latents > 0).long()
        return (self.power_vals.reshape(1, -1, 1, 1) * bits).sum(1).reshape(latents.shape[0], -1)

    def vectors(self, codes: torch.Tensor, grid: int) -> torch.Tensor:
        """`[B, g*g]` -> `[B, bits, g, g]` of +-1."""
        return self.embedding[codes].reshape(codes.shape[0], grid, grid, -1).permute(0, 3, 1, 2).contiguous()


class MagvitV2ImageTokenizer(nn.Module):
    """MAGVIT-v2 with `MedDiffImageTokenizer`'s interface (`encode`, `decode`, `grid_size`, `codebook_size`,
    `image_size`, `save_pretrained` / `from_pretrained`).

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff.models.meddiff.magvit_meddiff import MagvitV2ImageTokenizer
    >>> tok = MagvitV2ImageTokenizer(ch=32, encoder_ch_mult=[1, 1, 1], encoder_num_res_blocks=[1, 1, 1],
    ...                              decoder_ch_mult=[1, 1, 1], decoder_num_res_blocks=[1, 1, 1], z_channels=6,
    ...                              image_size=16)
    >>> codes = tok.encode(torch.zeros(2, 3, 16, 16))
    >>> codes.shape, tok.grid_size, tok.codebook_size
    (torch.Size([2, 16]), 4, 64)
    >>> tok.decode(codes).shape
    torch.Size([2, 3, 16, 16])

    ```
    """

    def __init__(
        self,
        ch: int = 128,
        encoder_ch_mult: list[int] = (1, 2, 2, 4, 4),
        encoder_num_res_blocks: list[int] = (4, 3, 4, 3, 4),
        decoder_ch_mult: list[int] = (1, 1, 2, 2, 4),
        decoder_num_res_blocks: list[int] = (4, 4, 3, 4, 3),
        z_channels: int = 13,
        image_size: int = 256,
    ):
        super().__init__()
        self.config = {
            "ch": int(ch),
            "encoder_ch_mult": list(encoder_ch_mult),
            "encoder_num_res_blocks": list(encoder_num_res_blocks),
            "decoder_ch_mult": list(decoder_ch_mult),
            "decoder_num_res_blocks": list(decoder_num_res_blocks),
            "z_channels": int(z_channels),
            "image_size": int(image_size),
        }
        if len(encoder_ch_mult) != len(decoder_ch_mult):
            raise ValueError("encoder_ch_mult and decoder_ch_mult need the same number of levels.")
        self.downsample_factor = 2 ** (len(encoder_ch_mult) - 1)
        if image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {image_size} is not a multiple of the downsampling {self.downsample_factor}."
            )
        self.image_size = int(image_size)
        self.encoder = _Encoder(ch, list(encoder_ch_mult), list(encoder_num_res_blocks), z_channels)
        self.decoder = _Decoder(ch, list(decoder_ch_mult), list(decoder_num_res_blocks), z_channels)
        self.quantize = _LookupFreeQuantizer(z_channels)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample_factor

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size**2

    @property
    def codebook_size(self) -> int:
        return 2 ** self.config["z_channels"]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Images `[B, 3, S, S]` in [-1, 1] -> codes `[B, g*g]` (row-major)."""
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"MAGVIT-v2 expects pixel_values [B, 3, {self.image_size}, {self.image_size}] in [-1, 1], got "
                f"{tuple(pixel_values.shape)}; resize with MedDiffImageProcessor(size={self.image_size})."
            )
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.expand(-1, 3, -1, -1)
        latents = self.encoder(pixel_values.to(device=self.device, dtype=self.dtype))
        return self.quantize.codes(latents)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.FloatTensor:
        """Codes `[B, g*g]` -> images `[B, 3, S, S]` clamped to [-1, 1]."""
        codes = torch.as_tensor(codes, device=self.device).long()
        if codes.ndim == 1:
            codes = codes.unsqueeze(0)
        if codes.ndim != 2 or codes.shape[1] != self.num_image_tokens:
            raise ValueError(f"Expected codes [B, {self.num_image_tokens}], got {tuple(codes.shape)}.")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"Codes must lie in 0..{self.codebook_size - 1}, got {int(codes.min())}..{int(codes.max())}; "
                "subtract the model's image_token_offset from vocabulary ids first."
            )
        vectors = self.quantize.vectors(codes, self.grid_size).to(self.dtype)
        return self.decoder(vectors).clamp(-1.0, 1.0).float()

    # --- serialisation ---------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(save_directory, WEIGHTS_NAME), metadata={"format": "pt"})
        config = {"image_tokenizer_class": type(self).__name__, **self.config}
        for name in (
            IMAGE_TOKENIZER_CONFIG_NAME,
            "config.json",
        ):  # config.json: the folder's marker, as diffusers'
            with open(os.path.join(save_directory, name), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, subfolder: str | None = None, **kwargs: Any):
        """Load a tokenizer saved by `save_pretrained` (a local folder)."""
        path = Path(folder) / (subfolder or "")
        config = json.loads((path / IMAGE_TOKENIZER_CONFIG_NAME).read_text(encoding="utf-8"))
        config.pop("image_tokenizer_class", None)
        if kwargs.get("image_size"):
            config["image_size"] = int(kwargs["image_size"])
        tokenizer = cls(**config)
        tokenizer._load_safetensors(path / WEIGHTS_NAME)
        return tokenizer.eval()

    @classmethod
    def from_magvit(cls, folder: str | os.PathLike, image_size: int | None = None, **architecture: Any):
        """Load the published MAGVIT-v2 checkpoint folder (`showlab/magvitv2` layout: `config.json` +
        `pytorch_model.safetensors` / `model.safetensors`); `image_size` sets the tokenised resolution (MMaDA: 512
        for 32 x 32 codes, 256 for 16 x 16)."""
        path = Path(folder)
        weights = next((path / n for n in SOURCE_WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None:
            pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
            raise ValueError(
                f"{path} has none of {list(SOURCE_WEIGHT_NAMES)}"
                + (
                    f"; it holds {pickles}, pickle files, which hf-meddiff never opens. Re-save the state dict with "
                    "safetensors.torch.save_file where you trust the file, as pytorch_model.safetensors."
                    if pickles
                    else "."
                )
            )
        config = dict(MAGVIT_V2_CONFIG)
        if (path / "config.json").is_file():  # the published config.json names no sizes; a resized one may
            saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
            config |= {k: v for k, v in saved.items() if k in MAGVIT_V2_CONFIG}
        config |= architecture
        if image_size is not None:
            config["image_size"] = int(image_size)
        tokenizer = cls(**config)
        tokenizer._load_safetensors(weights)
        return tokenizer.eval()

    def _load_safetensors(self, file: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(file))
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unknown = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unknown or wrong:
            raise ValueError(
                f"{file} is not a MAGVIT-v2 checkpoint of this architecture: missing {missing[:5]}, unknown "
                f"{unknown[:5]}, shape mismatch {wrong[:5]}; pass the architecture fields (ch, encoder_ch_mult, ...) "
                "that match it."
            )
        self.load_state_dict(state)


__all__ = ["MAGVIT_V2_CONFIG", "MagvitV2ImageTokenizer"]
