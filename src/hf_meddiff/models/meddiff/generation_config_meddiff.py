# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MedDiff generation configuration: `MedDiffGenerationConfig` (saved as `generation_config.json`), the output of
`generate` / `generate_images`, and how a plain transformers `GenerationConfig` maps onto the MedDiff sampler.

This file is copied into saved model folders (with generation_meddiff.py), so it imports only torch, transformers and
the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation import GenerationConfig
from transformers.utils import ModelOutput

REMASKING_STRATEGIES = ("low_confidence", "margin", "entropy", "random")
CACHE_MODES = ("none", "prefix", "dual")
NOISE_SCHEDULES = ("cosine", "linear", "sqrt")


class MedDiffGenerationConfig(GenerationConfig):
    r"""
    Parameters of the MedDiff samplers, saved and loaded with the model as `generation_config.json`.

    Args:
        > Text

        gen_length (`int`, defaults to 128): number of response tokens to generate (the canvas length).
        steps (`int`, *optional*): denoising steps for the whole response; `None` means `gen_length` (one token
            per step, the vanilla LLaDA sampler). Must be a multiple of the number of blocks
            `gen_length // block_length`.
        block_length (`int`, *optional*): semi-autoregressive block size; `None` means one block of `gen_length`.
            Must divide `gen_length`.
        temperature (`float`, defaults to 0.0): sampling temperature; 0 is greedy (argmax).
        top_k (`int`, *optional*), top_p (`float`, *optional*): filtering applied before sampling when
            `temperature > 0`.
        remasking (`str`, defaults to `"low_confidence"`): which masked positions to commit at a step, by score:
            `"low_confidence"` (probability of the sampled token), `"margin"` (top-1 minus top-2 probability),
            `"entropy"` (negative entropy) or `"random"`.
        threshold (`float`, *optional*): confidence-threshold parallel decoding (Fast-dLLM). At each step every
            masked position of the block whose sampled-token probability exceeds `threshold` is committed, and
            never fewer than the step schedule asks (so at least one). Must lie in (0, 1]; `1.0` commits exactly
            the schedule.
        cache_mode (`str`, defaults to `"none"`): approximate block KV cache (Fast-dLLM). `"none"` recomputes
            the whole sequence every step; `"prefix"` caches the keys/values before the current block (refreshed
            at each block start) and recomputes the block and what follows; `"dual"` also caches what follows and
            recomputes only the block.
        cache_refresh_interval (`int`, defaults to 1): with a block cache, recompute the whole sequence at the
            start of every `cache_refresh_interval`-th block (1: every block, as Fast-dLLM). At the other block
            starts only the positions from the previous block on (dual: the previous and the current block;
            prefix: everything from the previous block) are recomputed against the cache and written into it, so
            the just-decoded block is cached with its tokens while the prompt and the masked tail keep their
            older keys/values: far fewer computed positions per block on long outputs (approximate, like the
            cache itself).
        suffix_window (`int`, *optional*): the model sees only the `suffix_window` masked positions right after
            the current block; the rest of the canvas (all masks) is left out of every pass until the blocks
            reach it. `None` shows the whole canvas. On long canvases most masked positions lie far beyond the
            text and tell the model little, while with `cache_mode="dual"` their keys/values stay frozen within a
            block; a window keeps the view of a 1024-token canvas like that of a short one, and makes each pass
            cheaper. Every block is still decoded, so the output has all `gen_length` positions.
        eos_early_stop (`bool`, defaults to `True`): stop a row once an end-of-sequence token is committed and
            every position before it is decoded (the output is the same; fewer passes).
        ordered_eos (`bool`, defaults to `False`): commit an end-of-sequence token only where every undecoded
            position before it in the block is also predicted to be end-of-sequence: the end of the text never
            comes before the text. A model trained on EOS-padded canvases is often surest of EOS at the end of the
            first block and, decoding by confidence, commits it there first, which ends the answer a few words
            in; with this rule the text is decoded first, while a block that is all EOS still commits in one
            pass with `threshold`.
        no_adjacent_repeats (`bool`, defaults to `False`): never decode a text token next to the same token (a
            word never follows itself: "in in", "the the"); end-of-sequence, which pads, may repeat. A small model
            trained on a few thousand reports often doubles its most frequent words, and a masked-diffusion
            sampler that decodes a position before its neighbours cannot see that it repeats one.

        > Images

        image_steps (`int`, defaults to 12): MaskGIT decoding steps per image (12-18 typical).
        cfg_scale (`float`, defaults to 3.0): classifier-free guidance `cond + cfg_scale * (cond - uncond)`;
            0 disables guidance and skips the unconditional pass.
        noise_schedule (`str`, defaults to `"cosine"`): fraction of image tokens still masked after a fraction
            `r` of the steps: `"cosine"` cos(pi/2 r), `"linear"` 1 - r, `"sqrt"` 1 - sqrt(r).
        image_temperature (`float`, defaults to 1.0): temperature of image-token sampling; 0 is greedy.
        image_remask_temperature (`float`, defaults to 4.5): scale of the Gumbel noise added to the log-confidence
            that picks which image tokens stay masked, annealed linearly to 0 (MaskGIT's choice temperature).

        > Special tokens (filled from the model config by `from_model_config`)

        mask_token_id, pad_token_id, eos_token_id, bos_token_id (`int`, *optional*).
        return_dict_in_generate (`bool`, defaults to `False`): return a [`MedDiffGenerationOutput`] with the
            per-token trajectory and the number of forward passes instead of a tensor.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffGenerationConfig
    >>> fast = MedDiffGenerationConfig(gen_length=256, block_length=32, threshold=0.9, cache_mode="dual")
    >>> fast.num_blocks, fast.total_steps  # steps=None: one token per step unless the threshold commits more
    (8, 256)
    >>> MedDiffGenerationConfig(gen_length=100, block_length=32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: gen_length (100) is not a multiple of block_length (32); set block_length to a divisor ...

    ```
    """

    def __init__(self, **kwargs: Any):
        # Like transformers' DiffusionGemmaGenerationConfig, we do not call `GenerationConfig.__init__`: most
        # autoregressive attributes (beams, repetition penalty, ...) mean nothing for a masked-diffusion sampler.
        self.gen_length: int = kwargs.pop("gen_length", 128)
        self.steps: int | None = kwargs.pop("steps", None)
        self.block_length: int | None = kwargs.pop("block_length", None)
        self.temperature: float = kwargs.pop("temperature", 0.0)
        self.top_k: int | None = kwargs.pop("top_k", None)
        self.top_p: float | None = kwargs.pop("top_p", None)
        self.remasking: str = kwargs.pop("remasking", "low_confidence")
        self.threshold: float | None = kwargs.pop("threshold", None)
        self.cache_mode: str = kwargs.pop("cache_mode", "none")
        self.cache_refresh_interval: int = kwargs.pop("cache_refresh_interval", 1)
        self.suffix_window: int | None = kwargs.pop("suffix_window", None)
        self.eos_early_stop: bool = kwargs.pop("eos_early_stop", True)
        self.ordered_eos: bool = kwargs.pop("ordered_eos", False)
        self.no_adjacent_repeats: bool = kwargs.pop("no_adjacent_repeats", False)

        self.image_steps: int = kwargs.pop("image_steps", 12)
        self.cfg_scale: float = kwargs.pop("cfg_scale", 3.0)
        self.noise_schedule: str = kwargs.pop("noise_schedule", "cosine")
        self.image_temperature: float = kwargs.pop("image_temperature", 1.0)
        self.image_remask_temperature: float = kwargs.pop("image_remask_temperature", 4.5)

        self.mask_token_id: int | None = kwargs.pop("mask_token_id", None)
        self.pad_token_id: int | None = kwargs.pop("pad_token_id", None)
        self.eos_token_id: int | None = kwargs.pop("eos_token_id", None)
        self.bos_token_id: int | None = kwargs.pop("bos_token_id", None)
        self.return_dict_in_generate: bool = kwargs.pop("return_dict_in_generate", False)

        # Metadata written by transformers.
        kwargs.pop("_commit_hash", None)
        self._from_model_config: bool | None = kwargs.pop("_from_model_config", None)
        self.transformers_version: str | None = kwargs.pop("transformers_version", None)

        if kwargs:
            raise ValueError(
                f"MedDiffGenerationConfig got unknown arguments {sorted(kwargs)}; valid ones are "
                f"{sorted(k for k in self.__dict__ if not k.startswith('_'))}."
            )
        self.validate()

    @property
    def total_steps(self) -> int:
        """Denoising steps for the whole response: `steps`, or `gen_length` when `steps` is None."""
        return self.gen_length if self.steps is None else self.steps

    @property
    def num_blocks(self) -> int:
        """Number of semi-autoregressive blocks, `gen_length // block_length`."""
        return self.gen_length // (self.block_length or self.gen_length)

    def validate(
        self, strict: bool = False, user_set_attributes: set[str] | None = None, **unused: Any
    ) -> None:
        """Refuses invalid values and combinations with a message that says what to change."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

        positive_int("gen_length")
        if self.steps is not None:
            positive_int("steps")
        positive_int("image_steps")
        positive_int("cache_refresh_interval")
        if self.suffix_window is not None:
            positive_int("suffix_window")
        if self.block_length is not None:
            positive_int("block_length")
            if self.gen_length % self.block_length != 0:
                divisors = [d for d in range(1, self.gen_length + 1) if self.gen_length % d == 0]
                raise ValueError(
                    f"gen_length ({self.gen_length}) is not a multiple of block_length ({self.block_length}); "
                    f"set block_length to a divisor of gen_length (one of {divisors[-6:]}) or gen_length to a "
                    f"multiple of {self.block_length}."
                )
        if self.total_steps % self.num_blocks != 0:
            raise ValueError(
                f"steps ({self.total_steps}) must be a multiple of the number of blocks gen_length // block_length = "
                f"{self.num_blocks}, so every block gets the same number of steps; set steps to a multiple of "
                f"{self.num_blocks} (e.g. {max(1, self.total_steps // self.num_blocks) * self.num_blocks})."
            )
        if self.total_steps > self.gen_length:
            raise ValueError(
                f"steps ({self.total_steps}) exceeds gen_length ({self.gen_length}); a step commits at least one token, "
                f"so use steps <= {self.gen_length}."
            )
        if self.threshold is not None and not (0.0 < float(self.threshold) <= 1.0):
            raise ValueError(
                f"threshold ({self.threshold}) must lie in (0, 1] (e.g. 0.9), or be None to commit exactly the "
                "step schedule."
            )
        if self.temperature is None or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.image_temperature is None or self.image_temperature < 0:
            raise ValueError(f"image_temperature must be >= 0 (0 is greedy), got {self.image_temperature}.")
        if self.image_remask_temperature is None or self.image_remask_temperature < 0:
            raise ValueError(f"image_remask_temperature must be >= 0, got {self.image_remask_temperature}.")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k <= 0):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k!r}.")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1] or be None, got {self.top_p}.")
        if self.remasking not in REMASKING_STRATEGIES:
            raise ValueError(f"remasking must be one of {REMASKING_STRATEGIES}, got {self.remasking!r}.")
        if self.cache_mode not in CACHE_MODES:
            raise ValueError(f"cache_mode must be one of {CACHE_MODES}, got {self.cache_mode!r}.")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}.")
        if self.cfg_scale is None or self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0 (0 disables guidance), got {self.cfg_scale}.")

    def to_diff_dict(self) -> dict[str, Any]:
        """Serialises the attributes that differ from `MedDiffGenerationConfig()` (plus the version)."""
        config_dict = self.to_dict()
        default = MedDiffGenerationConfig().to_dict()
        return {k: v for k, v in config_dict.items() if k == "transformers_version" or default.get(k) != v}

    @classmethod
    def from_model_config(cls, model_config: Any) -> MedDiffGenerationConfig:
        """A default generation config carrying the special-token ids of a `MedDiffConfig`."""
        if not isinstance(model_config, dict):
            model_config = model_config.to_dict()
        token_ids = {
            name: model_config.get(name)
            for name in ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id")
            if model_config.get(name) is not None
        }
        config = cls(**token_ids)
        config._from_model_config = True
        return config

    def get_generation_mode(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "MedDiffGenerationConfig drives the masked-diffusion samplers, not generation modes."
        )


@dataclass
class MedDiffGenerationOutput(ModelOutput):
    """
    Output of `MedDiffForMaskedDiffusion.generate` / `generate_images` with `return_dict_in_generate=True`.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, gen_length)` or `(batch_size, num_image_tokens)`):
            Generated text (end-of-sequence and after replaced by pad) or image token ids (vocabulary ids, i.e.
            VQ code + `image_token_offset`).
        trajectory (`torch.LongTensor` of the same shape): the 0-based denoising step of the row at which each
            token was committed; -1 for tokens given as fixed (infilling / inpainting).
        num_forward_passes (`int`): number of model forward calls made for the batch (a guided image step that
            runs the conditional and unconditional sequences in one call counts once).
        num_steps (`torch.LongTensor` of shape `(batch_size,)`): denoising steps each row took.
    """

    sequences: torch.LongTensor = None
    trajectory: torch.LongTensor | None = None
    num_forward_passes: int | None = None
    num_steps: torch.LongTensor | None = None


# transformers `GenerationConfig` fields and the `MedDiffGenerationConfig` field each one sets
SHARED_GENERATION_FIELDS = {
    "max_new_tokens": "gen_length",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id",
    "return_dict_in_generate": "return_dict_in_generate",
}
# transformers fields accepted at the value that asks for nothing the masked-diffusion sampler does not do
NEUTRAL_GENERATION_VALUES = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "use_cache": True,  # MedDiff's block cache is approximate: it is `cache_mode`, never switched on implicitly
}


def generation_config_fields(config: GenerationConfig) -> dict[str, Any]:
    """The `MedDiffGenerationConfig` fields a plain transformers `GenerationConfig` sets (its fields that differ
    from `GenerationConfig()`).

    `max_new_tokens` is `gen_length`; `temperature`, `top_k`, `top_p`, the special-token ids and
    `return_dict_in_generate` keep their names; `do_sample=False` is `temperature=0` (greedy) and `do_sample=True`
    samples at `temperature` (1.0 when unset); `use_cache=False` is `cache_mode="none"`. MedDiff field names set on
    the config (`GenerationConfig(block_length=8)`) pass through. Any other set field (`num_beams=4`,
    `max_length`, `repetition_penalty`, ...) means nothing to the masked-diffusion sampler: a `ValueError` names it.

    >>> generation_config_fields(GenerationConfig(max_new_tokens=4, do_sample=True, top_k=5))
    {'gen_length': 4, 'top_k': 5, 'temperature': 1.0}
    """
    defaults = GenerationConfig().to_dict()
    meddiff_fields = set(MedDiffGenerationConfig().to_dict())
    given = {
        key: value
        for key, value in config.to_dict().items()
        if not key.startswith("_") and key != "transformers_version" and value != defaults.get(key)
    }
    do_sample = given.pop("do_sample", None)
    use_cache = given.pop("use_cache", None)
    fields: dict[str, Any] = {}
    unsupported: dict[str, Any] = {}
    for key, value in given.items():
        if key in SHARED_GENERATION_FIELDS:
            fields[SHARED_GENERATION_FIELDS[key]] = value
        elif key in meddiff_fields:
            fields[key] = value
        elif key not in NEUTRAL_GENERATION_VALUES or value != NEUTRAL_GENERATION_VALUES[key]:
            unsupported[key] = value
    if unsupported:
        hint = (
            " (max_length counts the prompt: set max_new_tokens instead)"
            if "max_length" in unsupported
            else ""
        )
        raise ValueError(
            f"GenerationConfig sets {unsupported}, which the MedDiff masked-diffusion sampler has no use for{hint}; "
            "unset them. It reads max_new_tokens (as gen_length), temperature, top_k, top_p, do_sample, use_cache, "
            "the special-token ids and return_dict_in_generate; its own options (block_length, steps, threshold, "
            "cache_mode, ...) are MedDiffGenerationConfig fields."
        )
    if isinstance(fields.get("eos_token_id"), (list, tuple)):
        eos = list(fields["eos_token_id"])
        if len(eos) != 1:
            raise ValueError(f"eos_token_id={eos}: the MedDiff sampler stops at one end token; give one id.")
        fields["eos_token_id"] = eos[0]
    if do_sample is False:
        fields["temperature"] = 0.0
    elif do_sample is True:
        fields.setdefault("temperature", 1.0)
        if fields["temperature"] == 0:
            raise ValueError(
                "do_sample=True with temperature=0: set temperature > 0 to sample, or do_sample=False."
            )
    if use_cache is False:
        fields["cache_mode"] = "none"
    return fields


__all__ = [
    "CACHE_MODES",
    "NEUTRAL_GENERATION_VALUES",
    "NOISE_SCHEDULES",
    "REMASKING_STRATEGIES",
    "SHARED_GENERATION_FIELDS",
    "MedDiffGenerationConfig",
    "MedDiffGenerationOutput",
    "generation_config_fields",
]
