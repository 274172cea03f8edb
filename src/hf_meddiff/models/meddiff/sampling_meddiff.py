# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Sampling primitives of the MedDiff samplers: pure tensor functions (mask schedules, top-k / nucleus filtering,
per-row noise, Gumbel-max sampling, confidence scores, classifier-free guidance) and the batch helpers of the
denoising loops.

This file is copied into saved model folders (with generation_meddiff.py), so it imports only torch, transformers and
the standard library.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers.generation import TopKLogitsWarper

from .generation_config_meddiff import NOISE_SCHEDULES, REMASKING_STRATEGIES

GeneratorType = torch.Generator | list[torch.Generator] | None


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


def text_follows(ids: torch.Tensor, mask_id: int, eos_id: int) -> torch.Tensor:
    """Boolean [B, N]: positions with decoded text (neither mask nor EOS) somewhere after them in `ids`.

    >>> text_follows(torch.tensor([[4, 7, 4, 2, 4]]), mask_id=4, eos_id=2).tolist()
    [[True, False, False, False, False]]
    """
    text = (ids != mask_id) & (ids != eos_id)
    return (text.flip(1).long().cumsum(1).flip(1) - text.long()) > 0


def eos_after_text(
    tokens: torch.Tensor, block: torch.Tensor, masked: torch.Tensor, eos_id: int
) -> torch.Tensor:
    """Boolean [B, N]: the masked positions of a block that may be committed when the end of the text must come
    after the text. Every masked position predicted to be text may; a masked position predicted to be EOS only when
    no masked position before it is predicted to be text and no position after it is text (decoded, or masked
    and predicted so). `tokens` are the predictions, `block` the block's current ids, `masked` its masked
    positions.

    >>> block = torch.tensor([[5, 4, 4, 4, 4]])  # 4 = mask, 2 = EOS: position 0 is decoded text
    >>> tokens = torch.tensor([[5, 2, 7, 2, 2]])
    >>> eos_after_text(tokens, block, block == 4, eos_id=2).tolist()  # EOS at 1 would come before the text at 2
    [[False, False, True, False, False]]
    >>> eos_after_text(torch.tensor([[5, 7, 7, 2, 2]]), block, block == 4, eos_id=2).tolist()  # text first
    [[False, True, True, False, False]]
    >>> eos_after_text(torch.tensor([[5, 2, 2, 2, 2]]), block, block == 4, eos_id=2).tolist()  # all EOS at once
    [[False, True, True, True, True]]
    """
    text = torch.where(masked, tokens, block) != eos_id
    masked_text = masked & text
    text_before = (masked_text.long().cumsum(1) - masked_text.long()) > 0
    text_after = (text.flip(1).long().cumsum(1).flip(1) - text.long()) > 0
    return masked & ~((tokens == eos_id) & (text_before | text_after))


def select_top(scores: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Boolean [B, N]: for each row the `count[b]` highest `scores` among `candidates` (ties: lower index)."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return (ranks < count[:, None]) & candidates


def ban_neighbour_tokens(
    logits: torch.Tensor, window: torch.LongTensor, mask_id: int, allowed: int | None = None
) -> torch.Tensor:
    """`logits` [B, N, V] of N consecutive positions with, at each position, the decoded tokens of its two
    neighbours set to -inf (a word never follows itself). `window` [B, N + 2] holds the positions from the one
    before the first to the one after the last (a position past the canvas as `mask_id`); masked neighbours and
    the token `allowed` (end-of-sequence, which pads) ban nothing.

    >>> logits = torch.zeros(1, 2, 6)
    >>> out = ban_neighbour_tokens(logits, torch.tensor([[3, 4, 4, 5]]), mask_id=4)
    >>> out[0].isinf().nonzero().tolist()  # position 0 (neighbours 3, masked), position 1 (masked, 5)
    [[0, 3], [1, 5]]
    """
    out = logits.clone()
    for neighbour in (window[:, :-2], window[:, 2:]):
        bans = neighbour != mask_id
        if allowed is not None:
            bans &= neighbour != allowed
        index = neighbour[..., None]
        current = out.gather(-1, index)
        out.scatter_(-1, index, torch.where(bans[..., None], float("-inf"), current))
    return out


def drop_adjacent_repeats(
    committed: torch.BoolTensor, tokens: torch.LongTensor, allowed: int | None = None
) -> torch.BoolTensor:
    """`committed` [B, N] without a position that would be committed with the same token as the position before
    it in the same pass (the first of a run stays, so a pass that commits something still does). Tokens equal to
    `allowed` may repeat.

    >>> drop_adjacent_repeats(torch.tensor([[True, True, True, False]]), torch.tensor([[7, 7, 8, 8]])).tolist()
    [[True, False, True, False]]
    """
    repeat = committed[:, 1:] & committed[:, :-1] & (tokens[:, 1:] == tokens[:, :-1])
    if allowed is not None:
        repeat &= tokens[:, 1:] != allowed
    out = committed.clone()
    out[:, 1:] &= ~repeat
    return out


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """`cond + scale * (cond - uncond)`; exactly `cond` when `scale == 0` or `uncond == cond`."""
    if scale == 0:
        return cond
    return cond + scale * (cond - uncond)


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
    "GeneratorType",
    "classifier_free_guidance",
    "confidence_scores",
    "draw_uniform",
    "filter_logits",
    "gumbel_from_uniform",
    "mask_schedule",
    "num_transfer_tokens",
    "sample_tokens",
    "select_top",
]
