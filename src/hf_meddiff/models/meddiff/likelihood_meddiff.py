# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Log-likelihood of a response under a masked-diffusion model: the one module that option ranking, the GRPO
log-prob estimators and the estimator benchmark share.

A masked-diffusion model gives no exact `log p(response | prompt)`; it gives the evidence lower bound (ELBO)

    ELBO(x) = E_{k ~ U{1..L}} E_{M uniform, |M| = k} [ (L / k) * sum_{i in M} log p(x_i | x with M masked) ]

over the `L` response positions (LLaDA's discrete form). Each estimator below draws one or two masks per row
(`MaskPass`: which positions are replaced by `[MASK]`, and the weight of each scored position's log-probability)
so that `sum_i weight_i * log p(x_i | masked input)` estimates the ELBO:

- `mean_field` (d1): the whole response masked, weight 1 on every response token, optionally the prompt masked
  at rate `prompt_mask_rate`; one pass. Biased (it is the `k = L` term only), lowest variance.
- `coupled` (DiffuCoder coupled-GRPO / ESPO): a mask of `k` positions and its complement, two passes, every
  response token scored exactly once; `k` is uniform over the range `mask_range` of `L`. Unbiased for the ELBO
  when `mask_range=(0.0, 1.0)`; with the default `(0.2, 0.8)` it averages the middle noise levels (lower
  variance, a small bias).
- `random` (UniGRPO-like): `k ~ U{1..L}` positions masked, weight `L / k` on them, 0 elsewhere; one pass,
  unbiased, highest variance.

Every draw comes from a per-row seed, so the old, reference and current policies of one completion see the same
masks. `exact_elbo` enumerates every mask of a short response (for tests and the estimator benchmark).

Example:

```python
>>> import torch
>>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
>>> from hf_meddiff.models.meddiff.likelihood_meddiff import estimate_elbo
>>> model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
>>> ids = torch.tensor([[1, 9, 7, 20, 21, 8, 30, 31, 2]])
>>> response = torch.zeros_like(ids, dtype=torch.bool)
>>> response[:, 6:] = True
>>> estimate_elbo(model, ids, response, estimator="coupled", seeds=[0]).shape
torch.Size([1])

```
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

ESTIMATORS = ("mean_field", "coupled", "random")
IGNORE_INDEX = -100


@dataclass
class MaskPass:
    """One forward pass of an estimator: `noise_mask` `[B, L]` (positions replaced by `[MASK]`) and `weight`
    `[B, L]` (ELBO weight of the log-probability at each position; 0 where the position is not scored)."""

    noise_mask: torch.BoolTensor
    weight: torch.FloatTensor


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One `torch.Generator` per row, seeded with `seeds[b]` (on the CPU, so draws match on every device)."""
    return [torch.Generator().manual_seed(int(seed) % (2**63)) for seed in seeds]


def _random_subset(positions: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    order = torch.randperm(positions.numel(), generator=generator)
    return positions[order[:count]]


def mean_field_passes(
    response_mask: torch.BoolTensor,
    generators: Sequence[torch.Generator],
    *,
    prompt_mask: torch.BoolTensor | None = None,
    prompt_mask_rate: float = 0.0,
) -> list[MaskPass]:
    """d1's estimator: every response position masked and scored with weight 1; each position of `prompt_mask`
    (maskable prompt tokens, `[B, L]`) is also masked with probability `prompt_mask_rate`. One pass."""
    noise = response_mask.clone()
    if prompt_mask is not None and prompt_mask_rate > 0:
        for row, generator in enumerate(generators):
            draw = torch.rand(response_mask.shape[1], generator=generator).to(response_mask.device)
            noise[row] |= prompt_mask[row] & (draw < prompt_mask_rate)
    return [MaskPass(noise, response_mask.float())]


def coupled_mask_counts(length: int, mask_range: tuple[float, float]) -> list[int]:
    """The mask sizes `k` the coupled estimator draws from (uniformly) for a response of `length` positions:
    `{k : max(lo, 1) <= k <= length - lo}` with `lo = round(mask_range[0] * length)`, symmetric under
    `k -> length - k` except that `(0.0, 1.0)` gives all of `1..length`."""
    low, high = mask_range
    if not (0.0 <= low <= 0.5 and math.isclose(low + high, 1.0, abs_tol=1e-6)):
        raise ValueError(
            f"coupled mask_range must be symmetric, (a, 1 - a) with 0 <= a <= 0.5, so that a mask and its "
            f"complement are drawn alike; got {mask_range}."
        )
    lo = min(round(low * length), length // 2)
    return list(range(max(lo, 1), length - lo + 1))


def coupled_passes(
    response_mask: torch.BoolTensor,
    generators: Sequence[torch.Generator],
    *,
    mask_range: tuple[float, float] = (0.2, 0.8),
) -> list[MaskPass]:
    """Complementary masks: pass 1 masks `k` response positions, pass 2 the other `L - k`; every response token is
    scored exactly once, with weight `L / (2k)` in pass 1 and `L / (2(L - k))` in pass 2 (weight 1 when `k = L`
    and pass 2 is empty). With `mask_range=(0.0, 1.0)` (`k ~ U{1..L}`) the weighted sum is an unbiased ELBO
    estimate: pass 1 covers `k = 1..L`, pass 2 `L - k = 0..L-1`, and the doubled weight at `k = L` restores the
    term pass 2 never sees. With `(a, 1 - a)`, `a > 0`, it averages the ELBO's terms over `k` in that range."""
    first = torch.zeros_like(response_mask)
    weight_first = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    weight_second = torch.zeros_like(weight_first)
    for row, generator in enumerate(generators):
        positions = response_mask[row].nonzero().squeeze(1).cpu()
        length = positions.numel()
        if length == 0:
            continue
        counts = coupled_mask_counts(length, mask_range)
        k = counts[int(torch.randint(len(counts), (1,), generator=generator))]
        chosen = _random_subset(positions, k, generator).to(response_mask.device)
        first[row, chosen] = True
        if k == length:
            weight_first[row, chosen] = 1.0
            continue
        weight_first[row, chosen] = length / (2 * k)
        weight_second[row, response_mask[row] & ~first[row]] = length / (2 * (length - k))
    second = response_mask & ~first
    return [MaskPass(first, weight_first), MaskPass(second, weight_second)]


def random_passes(response_mask: torch.BoolTensor, generators: Sequence[torch.Generator]) -> list[MaskPass]:
    """`k ~ U{1..L}` response positions masked and scored with weight `L / k`; one pass (LLaDA's ELBO sample)."""
    noise = torch.zeros_like(response_mask)
    weight = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    for row, generator in enumerate(generators):
        positions = response_mask[row].nonzero().squeeze(1).cpu()
        length = positions.numel()
        if length == 0:
            continue
        k = int(torch.randint(1, length + 1, (1,), generator=generator))
        chosen = _random_subset(positions, k, generator).to(response_mask.device)
        noise[row, chosen] = True
        weight[row, chosen] = length / k
    return [MaskPass(noise, weight)]


def estimator_passes(
    estimator: str,
    response_mask: torch.BoolTensor,
    seeds: Sequence[int],
    *,
    prompt_mask: torch.BoolTensor | None = None,
    prompt_mask_rate: float = 0.15,
    mask_range: tuple[float, float] = (0.2, 0.8),
) -> list[MaskPass]:
    """The mask passes of `estimator` (one of `ESTIMATORS`) for a batch, drawn from one seed per row."""
    if len(seeds) != response_mask.shape[0]:
        raise ValueError(f"Got {len(seeds)} mask seeds for {response_mask.shape[0]} rows; give one per row.")
    generators = row_generators(seeds)
    if estimator == "mean_field":
        return mean_field_passes(
            response_mask, generators, prompt_mask=prompt_mask, prompt_mask_rate=prompt_mask_rate
        )
    if estimator == "coupled":
        return coupled_passes(response_mask, generators, mask_range=mask_range)
    if estimator == "random":
        return random_passes(response_mask, generators)
    raise ValueError(f"Unknown log-prob estimator {estimator!r}; use one of {ESTIMATORS}.")


def masked_token_logps(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    noise_mask: torch.BoolTensor,
    score_mask: torch.BoolTensor,
    *,
    mask_token_id: int,
    temperature: float = 1.0,
    fused_lm_head: bool = False,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-position `log p(x_i | input with noise_mask replaced by [MASK])` at `score_mask`, 0 elsewhere.

    Args:
        model: a `MedDiffForMaskedDiffusion` (possibly wrapped by DDP / PEFT).
        input_ids (`[B, L]`): the clean sequence; attention_mask (`[B, L]`): 1 real, 0 padding.
        noise_mask, score_mask (`[B, L]` bool): positions replaced by `[MASK]`; positions scored.
        temperature: logits are divided by it (as when the tokens were sampled).
        fused_lm_head: use TRL's fused LM head (`model(..., shift_labels=..., fused_lm_head=True)`, set up by
            `trl.trainer.utils.add_fused_lm_head`): the head runs only on the scored positions and never
            materialises `[B, L, vocab]` logits. `shift_labels` is passed so that nothing is shifted: a masked
            diffusion model predicts the token at its own position.

    Returns:
        `(logps [B, L] float32, entropy [B, L] or None)`.
    """
    masked = input_ids.masked_fill(noise_mask, mask_token_id)
    targets = input_ids.masked_fill(~score_mask, IGNORE_INDEX)
    if fused_lm_head:
        out = model(input_ids=masked, attention_mask=attention_mask, shift_labels=targets, fused_lm_head=True)
        entropy = out.entropy if compute_entropy else None
        return out.log_probs.float(), (entropy.float() if entropy is not None else None)
    logits = model(input_ids=masked, attention_mask=attention_mask).logits.float() / temperature
    log_probs = logits.log_softmax(-1)
    logps = log_probs.gather(-1, input_ids.clamp(min=0).unsqueeze(-1)).squeeze(-1) * score_mask
    entropy = None
    if compute_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1) * score_mask
    return logps, entropy


def weighted_token_logps(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    passes: Sequence[MaskPass],
    *,
    mask_token_id: int,
    temperature: float = 1.0,
    fused_lm_head: bool = False,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`sum over passes of weight * log p` per position, `[B, L]` (a position is scored in at most one pass of the
    built-in estimators), and the entropy at the scored positions. Summing over the response gives the ELBO
    estimate; per position it is the token's share of it (what the GRPO loss uses as a per-token log-prob)."""
    total = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    entropy_total = torch.zeros_like(total) if compute_entropy else None
    for mask_pass in passes:
        score = mask_pass.weight > 0
        if not score.any():
            continue
        logps, entropy = masked_token_logps(
            model,
            input_ids,
            attention_mask,
            mask_pass.noise_mask,
            score,
            mask_token_id=mask_token_id,
            temperature=temperature,
            fused_lm_head=fused_lm_head,
            compute_entropy=compute_entropy,
        )
        total = total + mask_pass.weight.to(logps.device) * logps
        if compute_entropy and entropy is not None:
            entropy_total = entropy_total + entropy * score
    return total, entropy_total


@torch.no_grad()
def estimate_elbo(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    response_mask: torch.BoolTensor,
    *,
    attention_mask: torch.Tensor | None = None,
    estimator: str = "random",
    seeds: Sequence[int] | None = None,
    num_samples: int = 1,
    prompt_mask_rate: float = 0.0,
    mask_range: tuple[float, float] = (0.2, 0.8),
) -> torch.Tensor:
    """Mean over `num_samples` draws of `estimator`'s ELBO estimate of the response, `[B]` (float32).

    Draw `s` of row `b` uses seed `seeds[b] + s` (default seeds `0..B-1`)."""
    config = getattr(model, "config", None)
    mask_token_id = int(config.mask_token_id)
    seeds = list(range(input_ids.shape[0])) if seeds is None else list(seeds)
    prompt_mask = (~response_mask) if attention_mask is None else (~response_mask & attention_mask.bool())
    total = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    for sample in range(num_samples):
        passes = estimator_passes(
            estimator,
            response_mask,
            [seed + sample for seed in seeds],
            prompt_mask=prompt_mask,
            prompt_mask_rate=prompt_mask_rate,
            mask_range=mask_range,
        )
        logps, _ = weighted_token_logps(model, input_ids, attention_mask, passes, mask_token_id=mask_token_id)
        total += logps.sum(-1)
    return total / num_samples


@torch.no_grad()
def exact_elbo(model: torch.nn.Module, input_ids: torch.LongTensor, response_mask: torch.BoolTensor) -> float:
    """The ELBO of one row (`input_ids` `[1, L]`) by enumerating every non-empty mask of its response positions
    (`2^n - 1` forwards for `n` response positions: keep `n` small, e.g. <= 8)."""
    if input_ids.shape[0] != 1:
        raise ValueError("exact_elbo enumerates one row at a time; pass input_ids of shape [1, L].")
    positions = response_mask[0].nonzero().squeeze(1).tolist()
    length = len(positions)
    if length > 12:
        raise ValueError(f"exact_elbo would run 2^{length} forwards; keep the response to <= 12 positions.")
    mask_token_id = int(model.config.mask_token_id)
    total = 0.0
    for k in range(1, length + 1):
        subsets = list(itertools.combinations(positions, k))
        ids = input_ids.repeat(len(subsets), 1)
        noise = torch.zeros_like(ids, dtype=torch.bool)
        for row, subset in enumerate(subsets):
            noise[row, list(subset)] = True
        logps, _ = masked_token_logps(model, ids, None, noise, noise, mask_token_id=mask_token_id)
        # E_{|M|=k}[(L/k) sum_M log p], averaged over k = 1..L
        total += (length / k) * logps.sum(-1).mean().item() / length
    return total


__all__ = [
    "ESTIMATORS",
    "MaskPass",
    "coupled_mask_counts",
    "coupled_passes",
    "estimate_elbo",
    "estimator_passes",
    "exact_elbo",
    "masked_token_logps",
    "mean_field_passes",
    "random_passes",
    "row_generators",
    "weighted_token_logps",
]
