# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MedDiff generation: the masked-diffusion samplers (one mixin; ~650 lines because the text and image loops share
its config resolution and denoiser call, and read best top to bottom in one class).

* Text (understanding, VQA, report writing): block-wise semi-autoregressive denoising with remasking (LLaDA),
  optionally with the Fast-dLLM fast path (approximate block KV cache, prefix or dual, and confidence-threshold
  parallel decoding), early stop at end-of-sequence, left-padded batches, text infilling.
* Images (report-to-image): MaskGIT-style iterative decoding over the image grid with a cosine (or other)
  masking schedule and classifier-free guidance; image inpainting.

The configuration is in generation_config_meddiff.py and the pure tensor functions in sampling_meddiff.py (both
re-exported here). These files are copied into saved model folders (imported relatively by `modeling_meddiff.py`), so
they import only torch, transformers, the standard library and their siblings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from transformers.generation import GenerationConfig
from transformers.utils import logging

from .generation_config_meddiff import (  # noqa: F401  (the constants stay importable from here)
    CACHE_MODES,
    NEUTRAL_GENERATION_VALUES,
    NOISE_SCHEDULES,
    REMASKING_STRATEGIES,
    SHARED_GENERATION_FIELDS,
    MedDiffGenerationConfig,
    MedDiffGenerationOutput,
    generation_config_fields,
)
from .sampling_meddiff import (
    GeneratorType,
    _cropped,
    _left_pad,
    _scatter_rows,
    ban_neighbour_tokens,
    classifier_free_guidance,
    confidence_scores,
    draw_uniform,
    drop_adjacent_repeats,
    eos_after_text,
    filter_logits,
    gumbel_from_uniform,
    mask_schedule,
    num_transfer_tokens,
    sample_tokens,
    select_top,
    text_follows,
)
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

StepCallback = Callable[[int, dict[str, Any]], dict[str, Any] | None]


def _token_id(model_config: Any, attribute: str, token: str) -> int:
    value = getattr(model_config, attribute, None)
    return DEFAULT_TOKEN_IDS[token] if value is None else int(value)


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
        refresh_from: int | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """Logits [B, end - start, V] of positions [start, end) of `canvas`.

        `cache is None` runs the whole sequence (and, with a cache mode, returns a fresh cache of all positions);
        with `refresh_from` (a partial refresh) it runs positions `[refresh_from, end)` (dual) or
        `[refresh_from, L)` (prefix) against the cache and writes their keys/values into it; otherwise it runs the
        block (dual) or the block and everything after it (prefix) against the cache. A prefix cache is returned
        cropped to `start`.
        """
        if cache_mode == "none":
            return self(input_ids=canvas, attention_mask=attention_mask).logits[:, start:end], None
        if cache is None:
            out = self(input_ids=canvas, attention_mask=attention_mask, use_cache=True)
            cache = out.cache
            if cache_mode == "prefix":
                cache = _cropped(cache, start)
            return out.logits[:, start:end], cache
        if refresh_from is not None:
            stop = end if cache_mode == "dual" else canvas.shape[1]
            logits = self(
                input_ids=canvas[:, refresh_from:stop],
                attention_mask=attention_mask,
                cache=cache,
                cache_start=refresh_from,
                update_cache=True,
            ).logits
            if cache_mode == "prefix":
                cache = _cropped(cache, start)
            return logits[:, start - refresh_from : end - refresh_from], cache
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
        banned = self._text_banned_ids(config).to(device)
        cached = config.cache_mode != "none"
        # with a block cache, rows whose block is decoded leave the step batch at once (their cache rows are
        # dropped); a single shared generator keeps the whole batch so that its random stream stays the same
        shrink = cached and not isinstance(generator, torch.Generator)
        cache, cache_rows, stale_from = None, None, None

        total_length, view_end = canvas.shape[1], canvas.shape[1]
        for block in range(config.num_blocks):
            start = prompt_length + block * block_length
            end = start + block_length
            rel = slice(start - prompt_length, end - prompt_length)
            # rows that finished in earlier blocks leave the batch (and the block cache)
            live = (~finished).nonzero().squeeze(1)
            if cache is not None and live.numel() != cache_rows.numel():
                cache.batch_select_indices(torch.searchsorted(cache_rows, live))
            cache_rows = live
            if block % config.cache_refresh_interval == 0:
                cache = None  # a full refresh at this block start
            if config.suffix_window is not None:
                # the view: everything up to `suffix_window` masks after the block; a dual cache built on a
                # shorter view has no keys/values for the positions the view gained, so it is rebuilt
                view = min(total_length, end + config.suffix_window)
                if view != view_end and config.cache_mode == "dual":
                    cache = None
                view_end = view
            refresh_from = stale_from if cache is not None else None
            rows, step_cache = live, cache
            attention = full_attention[live, :view_end]
            schedule = num_transfer_tokens((canvas[live, start:end] == mask_id).sum(1), steps_per_block)
            step = 0
            while True:
                block_masked = canvas[rows, start:end] == mask_id
                active = block_masked.any(1) & ~finished[rows]
                if not active.any():
                    break
                if shrink and step > 0 and not bool(active.all()):
                    keep = active.nonzero().squeeze(1)
                    rows, block_masked, active = rows[keep], block_masked[keep], active[keep]
                    schedule, attention = schedule[keep], attention[keep]
                    step_cache = copy.copy(step_cache)
                    step_cache.key_cache = [k[keep] for k in step_cache.key_cache]
                    step_cache.value_cache = [v[keep] for v in step_cache.value_cache]
                row_generator = (
                    [generator[i] for i in rows.tolist()] if isinstance(generator, list) else generator
                )
                # 1. denoise: logits for the block (full recompute, a cache refresh, or against the block cache)
                logits, new_cache = self._denoiser_logits(
                    canvas[rows, :view_end],
                    attention,
                    start,
                    end,
                    config.cache_mode,
                    step_cache,
                    refresh_from,
                )
                if step == 0 and cached:
                    cache = step_cache = new_cache
                    stale_from, refresh_from = start, None
                num_passes += 1
                logits = logits.float().masked_fill(banned, float("-inf"))
                if config.ordered_eos and eos_id is not None:  # no EOS before decoded text
                    before_text = text_follows(
                        canvas[rows, start : prompt_length + gen_length], mask_id, eos_id
                    )
                    logits[..., eos_id] = logits[..., eos_id].masked_fill(
                        before_text[:, : end - start], float("-inf")
                    )
                if config.no_adjacent_repeats:  # no token next to the same decoded token
                    window = canvas[rows, max(start - 1, 0) : end + 1]
                    missing = (start == 0, end + 1 > total_length)  # nothing before / after the canvas
                    window = torch.nn.functional.pad(
                        window, (int(missing[0]), int(missing[1])), value=mask_id
                    )
                    logits = ban_neighbour_tokens(logits, window, mask_id, eos_id)
                # 2. sample a token for every position and score it
                tokens, probs = sample_tokens(
                    logits, config.temperature, config.top_k, config.top_p, row_generator, active
                )
                scores, token_prob = confidence_scores(probs, tokens, config.remasking, row_generator, active)
                # 3. commit: the schedule's count, or every position above the threshold (never fewer)
                candidates = block_masked
                if config.ordered_eos and eos_id is not None:
                    ordered = eos_after_text(tokens, canvas[rows, start:end], block_masked, eos_id)
                    # (never empty with EOS banned before decoded text; kept as a guard) a row with no candidate
                    # decodes as usual
                    candidates = torch.where(ordered.any(1, keepdim=True), ordered, block_masked)
                count = schedule[:, min(step, steps_per_block - 1)].clamp_min(1)
                if config.threshold is not None:
                    count = torch.maximum(count, ((token_prob > config.threshold) & candidates).sum(1))
                count = torch.where(active, count, torch.zeros_like(count))
                committed = select_top(scores, candidates, count)
                if config.no_adjacent_repeats:  # nor two equal tokens side by side in one pass
                    committed = drop_adjacent_repeats(committed, tokens, eos_id)
                canvas[rows, start:end] = torch.where(committed, tokens, canvas[rows, start:end])
                trajectory[rows, rel] = torch.where(committed, row_steps[rows, None], trajectory[rows, rel])
                row_steps[rows] += active.long()
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
                            "committed": _scatter_rows(committed, rows, batch_size),
                            "tokens": _scatter_rows(tokens, rows, batch_size),
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
