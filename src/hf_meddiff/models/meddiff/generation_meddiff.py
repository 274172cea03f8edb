# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MedDiff generation: the generation config and the masked-diffusion samplers.

* Text (understanding, VQA, report writing): block-wise semi-autoregressive denoising with remasking (LLaDA),
  optionally with the Fast-dLLM fast path (approximate block KV cache, prefix or dual, and confidence-threshold
  parallel decoding), early stop at end-of-sequence, left-padded batches, text infilling.
* Images (report-to-image): MaskGIT-style iterative decoding over the image grid with a cosine (or other)
  masking schedule and classifier-free guidance; image inpainting.

This file is copied into saved model folders (it is imported relatively by `modeling_meddiff.py`), so it imports
only torch, transformers, the standard library and its siblings.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.generation import GenerationConfig, TopKLogitsWarper
from transformers.utils import ModelOutput, logging

from .tokens_meddiff import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    DEFAULT_TOKEN_IDS,
    EOI_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    SPECIAL_TOKENS,
    TASK_TOKENS,
    USER_TOKEN,
)

logger = logging.get_logger(__name__)

REMASKING_STRATEGIES = ("low_confidence", "margin", "entropy", "random")
CACHE_MODES = ("none", "prefix", "dual")
NOISE_SCHEDULES = ("cosine", "linear", "sqrt")

GeneratorType = torch.Generator | list[torch.Generator] | None
StepCallback = Callable[[int, dict[str, Any]], dict[str, Any] | None]


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
        eos_early_stop (`bool`, defaults to `True`): stop a row once an end-of-sequence token is committed and
            every position before it is decoded (the output is the same; fewer passes).

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
        self.eos_early_stop: bool = kwargs.pop("eos_early_stop", True)

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


# ----------------------------------------------------------------------------------------------------------
# Sampling primitives (pure tensor functions)
# ----------------------------------------------------------------------------------------------------------


def mask_schedule(progress: float, schedule: str = "cosine") -> float:
    """Fraction of tokens still masked after a fraction `progress` in [0, 1] of the steps."""
    if schedule == "cosine":
        return math.cos(math.pi / 2 * progress)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "sqrt":
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {schedule!r}.")


def num_transfer_tokens(num_masked: torch.Tensor, steps: int) -> torch.LongTensor:
    """Spreads `num_masked` [B] commits evenly over `steps` (earlier steps take the remainder) -> [B, steps]."""
    base = num_masked.div(steps, rounding_mode="floor")
    remainder = num_masked % steps
    schedule = base[:, None].expand(-1, steps).clone()
    schedule += (torch.arange(steps, device=num_masked.device)[None, :] < remainder[:, None]).long()
    return schedule


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Top-k then nucleus filtering over the last dimension (filtered entries become -inf).

    Top-k is transformers' `TopKLogitsWarper`. The nucleus is kept here: `TopPLogitsWarper` keeps the tokens whose
    ascending cumulative probability exceeds `1 - top_p`, which drops different tokens among equal logits and near
    the threshold than this (descending) rule does, so sampled tokens would change."""
    if top_k is not None and top_k < logits.shape[-1]:
        logits = TopKLogitsWarper(top_k)(None, logits)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def draw_uniform(
    shape: tuple[int, ...],
    generator: GeneratorType,
    device: torch.device,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """Uniform(0, 1) noise of `shape` = (B, ...).

    With a list of generators (one per row, as diffusers pipelines accept), row b draws from `generator[b]`
    only while `active[b]`, so a row's samples do not depend on what else is in the batch.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"Got {len(generator)} generators for a batch of {shape[0]}; pass one per row.")
        rows = []
        for b, gen in enumerate(generator):
            if active is not None and not bool(active[b]):
                rows.append(torch.full(shape[1:], 0.5, device=device))
            else:
                rows.append(torch.rand(shape[1:], generator=gen, device=gen.device).to(device))
        return torch.stack(rows)
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def gumbel_from_uniform(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise `-log(-log(u))` from uniform noise (clamped away from 0 and 1)."""
    return -torch.log((-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7))).clamp_min(1e-20))


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: GeneratorType = None,
    active: torch.Tensor | None = None,
) -> tuple[torch.LongTensor, torch.Tensor]:
    """Samples one token per position from `logits` [B, N, V] -> `(tokens [B, N], probs [B, N, V])`.

    `probs` is the softmax of the unscaled logits (the model's belief, used for confidence and thresholds, as
    LLaDA does); sampling uses temperature, top-k and top-p, and Gumbel-max with the given generator(s).
    """
    logits = logits.float()
    probs = logits.softmax(-1)
    if temperature == 0:
        return logits.argmax(-1), probs
    scaled = filter_logits(logits / temperature, top_k, top_p)
    uniform = draw_uniform(tuple(logits.shape), generator, logits.device, active)
    gumbel = gumbel_from_uniform(uniform)
    return (scaled + gumbel).argmax(-1), probs


def confidence_scores(
    probs: torch.Tensor,
    tokens: torch.LongTensor,
    strategy: str,
    generator: GeneratorType = None,
    active: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranking score for committing each position and the probability of its sampled token.

    Args:
        probs (`torch.Tensor` [B, N, V]), tokens (`torch.LongTensor` [B, N]).
        strategy: one of `REMASKING_STRATEGIES`.

    Returns:
        `(score [B, N], token_prob [B, N])`; higher score = commit first.
    """
    token_prob = probs.gather(-1, tokens[..., None]).squeeze(-1)
    if strategy == "low_confidence":
        return token_prob, token_prob
    if strategy == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1], token_prob
    if strategy == "entropy":
        return (probs * probs.clamp_min(1e-12).log()).sum(-1), token_prob
    if strategy == "random":
        return draw_uniform(tuple(tokens.shape), generator, tokens.device, active), token_prob
    raise ValueError(f"remasking must be one of {REMASKING_STRATEGIES}, got {strategy!r}.")


def select_top(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Boolean [B, N]: for each row the `count[b]` highest `scores` among `candidates` (ties: lower index)."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return (ranks < count[:, None]) & candidates


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """`cond + scale * (cond - uncond)`; exactly `cond` when `scale == 0` or `uncond == cond`."""
    if scale == 0:
        return cond
    return cond + scale * (cond - uncond)


def _token_id(model_config: Any, attribute: str, token: str) -> int:
    value = getattr(model_config, attribute, None)
    return DEFAULT_TOKEN_IDS[token] if value is None else int(value)


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


# ----------------------------------------------------------------------------------------------------------
# The mixin
# ----------------------------------------------------------------------------------------------------------


class MedDiffGenerationMixin:
    """Adds the masked-diffusion samplers to `MedDiffForMaskedDiffusion`: `generate` (text, with infilling) and
    `generate_images` (report-to-image, with inpainting)."""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        # transformers builds `model.generation_config` from `generation_config_class`; PreTrainedModel's default
        # (GenerationConfig) would otherwise win in the MRO of the model class.
        if "generation_config_class" not in cls.__dict__:
            cls.generation_config_class = MedDiffGenerationConfig

    # -- configuration ---------------------------------------------------------------------------------------

    def adjust_generation_fn(
        self,
        generation_config: Any,
        from_auto_class: bool,
        from_pipeline: bool,
        pretrained_model_name_or_path: Any,
        cache_dir: Any = None,
        force_download: bool = False,
        proxies: Any = None,
        local_files_only: bool = False,
        token: Any = None,
        revision: Any = None,
        subfolder: str = "",
        trust_remote_code: Any = None,
        **kwargs: Any,
    ) -> None:
        """Called by `from_pretrained`: loads `generation_config.json` of the folder as a MedDiffGenerationConfig."""
        if isinstance(generation_config, MedDiffGenerationConfig):
            self.generation_config = MedDiffGenerationConfig.from_dict(generation_config.to_dict())
            return
        if generation_config is not None:
            self.generation_config = MedDiffGenerationConfig.from_model_config(self.config)
            self.generation_config.update(**generation_config_fields(generation_config))
            self.generation_config.validate()
            return
        if pretrained_model_name_or_path is None:
            return
        try:
            self.generation_config = MedDiffGenerationConfig.from_pretrained(
                pretrained_model_name_or_path,
                cache_dir=cache_dir,
                force_download=force_download,
                proxies=proxies,
                local_files_only=local_files_only,
                token=token,
                revision=revision,
                subfolder=subfolder,
                _from_auto=from_auto_class,
                _from_pipeline=from_pipeline,
            )
        except (OSError, ValueError):
            logger.info(
                "No generation_config.json found; using the defaults with the model's special tokens."
            )

    def _prepare_generation_config(
        self, generation_config: GenerationConfig | None, **kwargs: Any
    ) -> MedDiffGenerationConfig:
        """Priority: `**kwargs` > `generation_config` > `self.generation_config` > defaults + model token ids.

        A plain transformers `GenerationConfig` (passed, or as `self.generation_config`) overrides the fields it
        sets, read by `generation_config_fields` (`max_new_tokens` -> `gen_length`, ...); a field the sampler has no
        use for raises.
        """
        own = getattr(self, "generation_config", None)
        base = own if isinstance(own, MedDiffGenerationConfig) else None
        overrides: dict[str, Any] = {}
        if own is not None and base is None and isinstance(own, GenerationConfig):
            overrides = generation_config_fields(own)
        if isinstance(generation_config, MedDiffGenerationConfig):
            base, overrides = generation_config, {}
        elif isinstance(generation_config, GenerationConfig):
            overrides = {**overrides, **generation_config_fields(generation_config)}
        elif generation_config is not None:
            raise TypeError(
                f"generation_config must be a MedDiffGenerationConfig or a transformers GenerationConfig, got "
                f"{type(generation_config).__name__}."
            )
        if base is None:
            base = MedDiffGenerationConfig.from_model_config(self.config)
        config = copy.deepcopy(base)
        kwargs = {**overrides, **kwargs}
        for name in ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
            if getattr(config, name) is None:
                setattr(config, name, getattr(self.config, name, None))
        unknown = sorted(k for k in kwargs if not hasattr(config, k) or k.startswith("_"))
        if unknown:
            raise TypeError(
                f"generate() got unknown arguments {unknown}; generation options are the fields of "
                "MedDiffGenerationConfig (gen_length, steps, block_length, temperature, top_k, top_p, remasking, "
                "threshold, cache_mode, eos_early_stop, image_steps, cfg_scale, noise_schedule, ...)."
            )
        for key, value in kwargs.items():
            setattr(config, key, value)
        config.validate()
        if config.mask_token_id is None:
            raise ValueError(
                "No mask_token_id: set it in the model config or pass mask_token_id=... to generate."
            )
        return config

    # -- forward helpers ---------------------------------------------------------------------------------------

    def _denoiser_logits(
        self,
        canvas: torch.LongTensor,
        attention_mask: torch.LongTensor,
        start: int,
        end: int,
        cache_mode: str,
        cache: Any,
    ) -> tuple[torch.Tensor, Any]:
        """Logits [B, end - start, V] of positions [start, end) of `canvas`.

        `cache is None` runs the whole sequence (and, with a cache mode, returns a fresh cache of all positions);
        otherwise runs the block (dual) or the block and everything after it (prefix) against the cache.
        """
        if cache_mode == "none":
            return self(input_ids=canvas, attention_mask=attention_mask).logits[:, start:end], None
        if cache is None:
            out = self(input_ids=canvas, attention_mask=attention_mask, use_cache=True)
            cache = out.cache
            if cache_mode == "prefix":
                cache = _cropped(cache, start)
            return out.logits[:, start:end], cache
        if cache_mode == "prefix":
            logits = self(
                input_ids=canvas[:, start:],
                attention_mask=attention_mask,
                cache=cache,
                cache_start=start,
            ).logits
            return logits[:, : end - start], cache
        logits = self(
            input_ids=canvas[:, start:end],
            attention_mask=attention_mask,
            cache=cache,
            cache_start=start,
        ).logits
        return logits, cache

    # -- text ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        *,
        response_ids: torch.LongTensor | None = None,
        response_keep_mask: torch.BoolTensor | None = None,
        generator: GeneratorType = None,
        callback: StepCallback | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MedDiffGenerationOutput:
        r"""
        Generates text responses by block-wise masked-diffusion denoising (LLaDA), with the Fast-dLLM fast path
        when `threshold` and/or `cache_mode` are set.

        The response canvas of `gen_length` masks is appended to the (left-padded) prompts and split into
        blocks of `block_length`, decoded left to right; within a block, each step runs the model, samples a
        token for every masked position and commits the best-scored ones (by `remasking`): the step schedule's
        count, or with `threshold` every position whose probability exceeds it (never fewer than the schedule).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`): left-padded prompts, e.g. from
                `processor(..., padding_side="left", add_response=False)`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, prompt_length)`, *optional*): 1 real, 0 pad.
            generation_config ([`MedDiffGenerationConfig`], *optional*): defaults to `self.generation_config`;
                keyword arguments override its fields (`gen_length=64, threshold=0.9, ...`). A plain transformers
                `GenerationConfig` overrides the fields it sets (see `generation_config_fields`).
            response_ids (`torch.LongTensor` of shape `(batch_size, gen_length)`, *optional*): text infilling: a
                response whose positions with `response_keep_mask` True are fixed; the others are generated.
                Sets `gen_length` to `response_ids.shape[1]`.
            response_keep_mask (`torch.BoolTensor` of shape `(batch_size, gen_length)`, *optional*).
            generator (`torch.Generator` or list of them, *optional*): randomness for `temperature > 0` and
                `remasking="random"`. One generator per row makes each row independent of the batch.
            callback (`Callable[[int, dict], dict | None]`, *optional*): called after every step with the global
                step index and `{"canvas", "committed", "tokens", "block", "trajectory"}`; may return
                `{"canvas": ...}` to replace the canvas.

        Returns:
            `torch.LongTensor` of shape `(batch_size, gen_length)` (end-of-sequence and after replaced by pad), or a
            [`MedDiffGenerationOutput`] when `return_dict_in_generate=True`.

        Example:

        ```python
        >>> import torch
        >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
        >>> model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
        >>> prompt = torch.tensor([[1, 9, 7, 20, 21, 8]])
        >>> out = model.generate(prompt, gen_length=16, block_length=8, threshold=0.9, cache_mode="dual")
        >>> out.shape
        torch.Size([1, 16])

        ```
        """
        if response_ids is not None:
            kwargs.setdefault("gen_length", response_ids.shape[1])
            if kwargs["gen_length"] != response_ids.shape[1]:
                raise ValueError(
                    f"gen_length ({kwargs['gen_length']}) differs from response_ids.shape[1] "
                    f"({response_ids.shape[1]}); leave gen_length unset when infilling."
                )
        config = self._prepare_generation_config(generation_config, **kwargs)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, prompt_length], got shape {tuple(input_ids.shape)}.")
        device = input_ids.device
        batch_size, prompt_length = input_ids.shape
        gen_length, block_length = config.gen_length, config.block_length or config.gen_length
        steps_per_block = config.total_steps // config.num_blocks
        mask_id, eos_id = config.mask_token_id, config.eos_token_id
        pad_id = config.pad_token_id if config.pad_token_id is not None else eos_id

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        response = torch.full((batch_size, gen_length), mask_id, dtype=torch.long, device=device)
        fixed = torch.zeros((batch_size, gen_length), dtype=torch.bool, device=device)
        if response_ids is not None:
            if response_keep_mask is None:
                response_keep_mask = response_ids != mask_id
            if response_keep_mask.shape != response_ids.shape or response_ids.shape[0] != batch_size:
                raise ValueError(
                    f"response_ids {tuple(response_ids.shape)} and response_keep_mask "
                    f"{tuple(response_keep_mask.shape)} must both be [batch={batch_size}, gen_length]."
                )
            fixed = response_keep_mask.to(device=device, dtype=torch.bool)
            response = torch.where(fixed, response_ids.to(device), response)
        canvas = torch.cat([input_ids, response], dim=1)
        full_attention = torch.cat([attention_mask.to(device).long(), torch.ones_like(response)], dim=1)
        trajectory = torch.full((batch_size, gen_length), -1, dtype=torch.long, device=device)
        row_steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        num_passes, global_step = 0, 0
        banned = self._text_banned_ids(config)

        for block in range(config.num_blocks):
            start = prompt_length + block * block_length
            end = start + block_length
            rel = slice(start - prompt_length, end - prompt_length)
            # rows that finished in earlier blocks leave the batch (the block cache is rebuilt here anyway)
            live = (~finished).nonzero().squeeze(1)
            live_generator = (
                [generator[i] for i in live.tolist()] if isinstance(generator, list) else generator
            )
            live_attention = full_attention[live]
            schedule = num_transfer_tokens((canvas[live, start:end] == mask_id).sum(1), steps_per_block)
            cache, step = None, 0
            while True:
                block_masked = canvas[live, start:end] == mask_id
                active = block_masked.any(1) & ~finished[live]
                if not active.any():
                    break
                # 1. denoise: logits for the block (full recompute, or against the block cache)
                logits, cache = self._denoiser_logits(
                    canvas[live], live_attention, start, end, config.cache_mode, cache
                )
                num_passes += 1
                logits = logits.float().masked_fill(banned.to(logits.device), float("-inf"))
                # 2. sample a token for every position and score it
                tokens, probs = sample_tokens(
                    logits, config.temperature, config.top_k, config.top_p, live_generator, active
                )
                scores, token_prob = confidence_scores(
                    probs, tokens, config.remasking, live_generator, active
                )
                # 3. commit: the schedule's count, or every position above the threshold (never fewer)
                count = schedule[:, min(step, steps_per_block - 1)].clamp_min(1)
                if config.threshold is not None:
                    count = torch.maximum(count, ((token_prob > config.threshold) & block_masked).sum(1))
                count = torch.where(active, count, torch.zeros_like(count))
                committed = select_top(scores, block_masked, count)
                canvas[live, start:end] = torch.where(committed, tokens, canvas[live, start:end])
                trajectory[live, rel] = torch.where(committed, row_steps[live, None], trajectory[live, rel])
                row_steps[live] += active.long()
                # 4. early stop: EOS committed with everything before it decoded
                if config.eos_early_stop and eos_id is not None:
                    finished = self._finish_rows(
                        canvas, prompt_length, trajectory, row_steps, finished, mask_id, eos_id
                    )
                if callback is not None:
                    update = callback(
                        global_step,
                        {
                            "canvas": canvas,
                            "committed": _scatter_rows(committed, live, batch_size),
                            "tokens": _scatter_rows(tokens, live, batch_size),
                            "block": block,
                            "trajectory": trajectory,
                        },
                    )
                    if update and "canvas" in update:
                        canvas = update["canvas"]
                step += 1
                global_step += 1
            if finished.all():
                break

        sequences = canvas[:, prompt_length:].clone()
        if eos_id is not None:
            after_eos = (sequences == eos_id).long().cumsum(1) > 0
            sequences = sequences.masked_fill(after_eos, pad_id)
        if config.return_dict_in_generate:
            return MedDiffGenerationOutput(
                sequences=sequences, trajectory=trajectory, num_forward_passes=num_passes, num_steps=row_steps
            )
        return sequences

    def _text_banned_ids(self, config: MedDiffGenerationConfig) -> torch.BoolTensor:
        """Vocabulary ids a text response never contains: the image codebook and every special token of the
        unified vocabulary but `<|eos|>` ([MASK], pad, bos, unk, image and task markers, chat roles). The text tags
        (`<think>`, `<answer>`, `<box>`, ...) stay allowed."""
        banned = torch.zeros(int(self.config.vocab_size), dtype=torch.bool)
        offset = int(self.config.image_token_offset)
        banned[offset : offset + int(self.config.image_codebook_size)] = True
        banned[config.mask_token_id] = True
        special = set()
        for name in (
            "pad_token_id",
            "bos_token_id",
            "soi_token_id",
            "eoi_token_id",
            "mmu_token_id",
            "t2i_token_id",
        ):
            if getattr(self.config, name, None) is not None:
                special.add(int(getattr(self.config, name)))
        if (
            config.mask_token_id == DEFAULT_TOKEN_IDS[MASK_TOKEN]
            and config.eos_token_id == DEFAULT_TOKEN_IDS[EOS_TOKEN]
        ):
            # the hf-meddiff layout (specials at ids 0..): also unk and the chat roles
            special |= {DEFAULT_TOKEN_IDS[token] for token in SPECIAL_TOKENS}
        special.discard(config.eos_token_id)
        banned[sorted(i for i in special if 0 <= i < banned.numel())] = True
        return banned

    @staticmethod
    def _finish_rows(
        canvas: torch.LongTensor,
        prompt_length: int,
        trajectory: torch.LongTensor,
        row_steps: torch.LongTensor,
        finished: torch.BoolTensor,
        mask_id: int,
        eos_id: int,
    ) -> torch.BoolTensor:
        """Marks rows whose first EOS has no mask before it; fills their remaining masks with EOS (in place)."""
        response = canvas[:, prompt_length:]
        is_eos = response == eos_id
        positions = torch.arange(response.shape[1], device=canvas.device)
        first_eos = torch.where(is_eos.any(1), is_eos.long().argmax(1), response.shape[1])
        masked = response == mask_id
        done = is_eos.any(1) & ~(masked & (positions[None] < first_eos[:, None])).any(1) & ~finished
        if done.any():
            fill = masked & done[:, None]
            canvas[:, prompt_length:] = response.masked_fill(fill, eos_id)
            trajectory.copy_(torch.where(fill, (row_steps - 1)[:, None], trajectory))
        return finished | done

    # -- images ----------------------------------------------------------------------------------------------

    def _unconditional_prompt(self, batch_size: int, device: torch.device) -> torch.LongTensor:
        """`<|bos|> <|t2i|> <|user|> <|assistant|> <|soi|>`: the text-to-image layout with the report dropped."""
        ids = [
            _token_id(self.config, "bos_token_id", BOS_TOKEN),
            _token_id(self.config, "t2i_token_id", TASK_TOKENS["t2i"]),
            DEFAULT_TOKEN_IDS[USER_TOKEN],
            DEFAULT_TOKEN_IDS[ASSISTANT_TOKEN],
            _token_id(self.config, "soi_token_id", SOI_TOKEN),
        ]
        return torch.tensor([ids], dtype=torch.long, device=device).expand(batch_size, -1)

    @torch.no_grad()
    def generate_images(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        *,
        negative_input_ids: torch.LongTensor | None = None,
        negative_attention_mask: torch.LongTensor | None = None,
        image_ids: torch.LongTensor | None = None,
        image_keep_mask: torch.BoolTensor | None = None,
        generator: GeneratorType = None,
        callback: StepCallback | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | MedDiffGenerationOutput:
        r"""
        Generates image tokens for text-to-image prompts by MaskGIT decoding with classifier-free guidance.

        The canvas is `prompt <|soi|> [g*g masks] <|eoi|>` (`<|soi|>` is added unless every prompt already ends
        with it). Each of the `image_steps` steps runs the model once (conditional and unconditional sequences
        stacked in one batch when `cfg_scale > 0`), guides the image logits (restricted to the codebook),
        samples every masked token, and re-masks the least confident ones so that a fraction
        `noise_schedule((step + 1) / image_steps)` of the initially masked tokens stays masked.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`): left-padded text-to-image
                prompts `<|bos|> <|t2i|> <|user|> report <|assistant|>` (optionally ending in `<|soi|>`), or the
                processor's whole layout ending `<|soi|> [g*g masks] <|eoi|>` (non-mask image tokens there are
                kept, as in inpainting).
            attention_mask (`torch.LongTensor`, *optional*): 1 real, 0 pad.
            negative_input_ids (`torch.LongTensor`, *optional*): unconditional prompts (same layout); defaults to
                the dropped-report prompt `<|bos|> <|t2i|> <|user|> <|assistant|>`.
            negative_attention_mask (`torch.LongTensor`, *optional*).
            image_ids (`torch.LongTensor` of shape `(batch_size, g*g)`, *optional*): inpainting: image token
                ids (vocabulary ids, code + `image_token_offset`) whose positions with `image_keep_mask` True are
                kept; the rest is generated. Kept tokens are never changed.
            image_keep_mask (`torch.BoolTensor` of shape `(batch_size, g*g)`, *optional*).
            generator (`torch.Generator` or list of them, *optional*).
            callback (`Callable[[int, dict], dict | None]`, *optional*): called after every step with
                `{"canvas", "image_ids", "committed", "trajectory"}`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, g*g)` with vocabulary ids (code + `image_token_offset`), or
            a [`MedDiffGenerationOutput`] when `return_dict_in_generate=True`.

        Example:

        ```python
        >>> import torch
        >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
        >>> model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
        >>> ids = model.generate_images(torch.tensor([[1, 10, 7, 30, 31, 8]]), image_steps=8)
        >>> ids.shape  # a 4 x 4 grid
        torch.Size([1, 16])

        ```
        """
        config = self._prepare_generation_config(generation_config, **kwargs)
        device = input_ids.device
        batch_size = input_ids.shape[0]
        offset, codebook = int(self.config.image_token_offset), int(self.config.image_codebook_size)
        num_tokens = int(self.config.image_grid_size) ** 2
        mask_id = config.mask_token_id
        soi_id = _token_id(self.config, "soi_token_id", SOI_TOKEN)
        eoi_id = _token_id(self.config, "eoi_token_id", EOI_TOKEN)
        pad_id = config.pad_token_id if config.pad_token_id is not None else DEFAULT_TOKEN_IDS[PAD_TOKEN]

        def with_soi(
            ids: torch.LongTensor, mask: torch.LongTensor | None
        ) -> tuple[torch.LongTensor, torch.Tensor]:
            mask = torch.ones_like(ids) if mask is None else mask.to(device).long()
            if not bool((ids[:, -1] == soi_id).all()):
                ids = torch.cat([ids, torch.full_like(ids[:, :1], soi_id)], dim=1)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            return ids, mask

        if input_ids.shape[1] > num_tokens + 1:
            # the processor's full text-to-image layout `... <|soi|> [g*g ids or masks] <|eoi|>`: keep the prompt
            # up to <|soi|>; given image tokens (not [MASK]) become tokens to keep, as in inpainting
            tail_ids = input_ids[:, -(num_tokens + 2) :]
            if bool((tail_ids[:, 0] == soi_id).all() and (tail_ids[:, -1] == eoi_id).all()):
                body = tail_ids[:, 1:-1]
                if image_ids is None and bool((body != mask_id).any()):
                    image_ids, image_keep_mask = body, body != mask_id
                input_ids = input_ids[:, : -(num_tokens + 1)]
                if attention_mask is not None:
                    attention_mask = attention_mask[:, : -(num_tokens + 1)]
        cond_ids, cond_mask = with_soi(input_ids, attention_mask)
        guided = config.cfg_scale > 0
        if guided:
            if negative_input_ids is None:
                negative_input_ids = self._unconditional_prompt(batch_size, device)
            uncond_ids, uncond_mask = with_soi(negative_input_ids.to(device), negative_attention_mask)
            width = max(cond_ids.shape[1], uncond_ids.shape[1])
            cond_ids, cond_mask = _left_pad(cond_ids, cond_mask, width, pad_id)
            uncond_ids, uncond_mask = _left_pad(uncond_ids, uncond_mask, width, pad_id)
            prompt_ids = torch.cat([cond_ids, uncond_ids])
            prompt_mask = torch.cat([cond_mask, uncond_mask])
        else:
            prompt_ids, prompt_mask = cond_ids, cond_mask
        prompt_length = prompt_ids.shape[1]

        image = torch.full((batch_size, num_tokens), mask_id, dtype=torch.long, device=device)
        if image_ids is not None:
            if image_ids.shape != (batch_size, num_tokens):
                raise ValueError(
                    f"image_ids has shape {tuple(image_ids.shape)}; expected [batch={batch_size}, "
                    f"image_grid_size**2={num_tokens}] vocabulary ids (code + image_token_offset={offset})."
                )
            keep = torch.ones_like(image, dtype=torch.bool) if image_keep_mask is None else image_keep_mask
            keep = keep.to(device=device, dtype=torch.bool)
            kept = image_ids.to(device)[keep]
            if kept.numel() and (kept.min() < offset or kept.max() >= offset + codebook):
                raise ValueError(
                    f"Kept image_ids must be vocabulary ids in [{offset}, {offset + codebook}) (VQ code + "
                    f"image_token_offset); got values in [{int(kept.min())}, {int(kept.max())}]. Add "
                    "image_token_offset to codes from the image tokenizer."
                )
            image = torch.where(keep, image_ids.to(device), image)
        trajectory = torch.full((batch_size, num_tokens), -1, dtype=torch.long, device=device)
        initially_masked = (image == mask_id).sum(1)
        num_passes = 0
        row_steps = torch.zeros(batch_size, dtype=torch.long, device=device)
        tail = torch.full((batch_size, 1), eoi_id, dtype=torch.long, device=device)
        ones = torch.ones((prompt_ids.shape[0], num_tokens + 1), dtype=torch.long, device=device)
        full_mask = torch.cat([prompt_mask, ones], dim=1)
        image_slice = slice(prompt_length, prompt_length + num_tokens)

        for step in range(config.image_steps):
            unknown = image == mask_id
            if not unknown.any():
                break
            active = unknown.any(1)
            # 1. denoise: one pass over conditional (and unconditional) sequences
            body = torch.cat([image, tail], dim=1)
            canvas = torch.cat([prompt_ids, body.repeat(2, 1) if guided else body], dim=1)
            logits = self(input_ids=canvas, attention_mask=full_mask).logits[
                :, image_slice, offset : offset + codebook
            ]
            num_passes += 1
            logits = logits.float()
            if guided:
                logits = classifier_free_guidance(logits[:batch_size], logits[batch_size:], config.cfg_scale)
            # 2. sample every masked token
            codes, probs = sample_tokens(logits, config.image_temperature, None, None, generator, active)
            sampled = torch.where(unknown, codes + offset, image)
            log_conf = probs.gather(-1, codes[..., None]).squeeze(-1).clamp_min(1e-20).log()
            # 3. keep the most confident; re-mask the rest down to the schedule (at least one commit per step)
            progress = (step + 1) / config.image_steps
            num_masked_next = (
                initially_masked.float() * mask_schedule(progress, config.noise_schedule)
            ).floor()
            num_masked_next = torch.minimum(num_masked_next.long(), unknown.sum(1) - 1).clamp_min(0)
            if step == config.image_steps - 1:
                num_masked_next = torch.zeros_like(num_masked_next)
            noise_scale = config.image_remask_temperature * (1.0 - progress)
            if noise_scale > 0:
                uniform = draw_uniform(tuple(log_conf.shape), generator, device, active)
                log_conf = log_conf + noise_scale * gumbel_from_uniform(uniform)
            remask = select_top(-log_conf, unknown, num_masked_next)
            committed = unknown & ~remask
            image = torch.where(remask, torch.full_like(image, mask_id), sampled)
            trajectory = torch.where(committed, row_steps[:, None], trajectory)
            row_steps += active.long()
            if callback is not None:
                update = callback(
                    step,
                    {"canvas": canvas, "image_ids": image, "committed": committed, "trajectory": trajectory},
                )
                if update and "image_ids" in update:
                    image = update["image_ids"]

        if config.return_dict_in_generate:
            return MedDiffGenerationOutput(
                sequences=image, trajectory=trajectory, num_forward_passes=num_passes, num_steps=row_steps
            )
        return image


def _left_pad(
    ids: torch.LongTensor, mask: torch.LongTensor, width: int, pad_id: int
) -> tuple[torch.LongTensor, torch.LongTensor]:
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return F.pad(ids, (extra, 0), value=pad_id), F.pad(mask, (extra, 0), value=0)


def _scatter_rows(values: torch.Tensor, rows: torch.LongTensor, batch_size: int) -> torch.Tensor:
    """Rows of a live sub-batch placed back into a full batch (zeros / False for rows that left)."""
    if rows.numel() == batch_size:
        return values
    full = values.new_zeros((batch_size, *values.shape[1:]))
    full[rows] = values
    return full


def _cropped(cache: Any, length: int) -> Any:
    """The cache truncated to its first `length` positions (`crop` may work in place or return a new cache)."""
    result = cache.crop(length)
    return cache if result is None else result


__all__ = [
    "MedDiffGenerationConfig",
    "MedDiffGenerationMixin",
    "MedDiffGenerationOutput",
    "classifier_free_guidance",
    "confidence_scores",
    "filter_logits",
    "generation_config_fields",
    "mask_schedule",
    "num_transfer_tokens",
    "sample_tokens",
    "select_top",
]
