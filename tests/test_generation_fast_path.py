"""The fast text sampler's block-cache refresh policy and the step batch that drops rows whose block is decoded."""

from __future__ import annotations

import pytest
import torch

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffGenerationConfig

MASK, PAD, BOS, USER, ASSISTANT, MMU = 4, 0, 1, 7, 8, 9
PROMPTS = [[BOS, MMU, USER, 20, 21, ASSISTANT], [PAD, PAD, BOS, USER, 30, ASSISTANT]]
ATTENTION = [[1] * 6, [0, 0, 1, 1, 1, 1]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()


def forward_lengths(model, **kwargs) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Output and the (batch, input length) of every forward pass of one `generate` call."""
    calls = []
    hook = model.register_forward_hook(
        lambda m, args, kw, out: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        out = model.generate(torch.tensor(PROMPTS), torch.tensor(ATTENTION), **kwargs)
    finally:
        hook.remove()
    return out, calls


def test_cache_refresh_interval_must_be_positive():
    with pytest.raises(ValueError, match="cache_refresh_interval must be a positive integer"):
        MedDiffGenerationConfig(cache_refresh_interval=0)


@pytest.mark.parametrize("cache_mode", ["dual", "prefix"])
def test_refresh_interval_recomputes_the_whole_sequence_only_every_kth_block(model, cache_mode):
    kwargs = {"gen_length": 32, "block_length": 8, "cache_mode": cache_mode, "eos_early_stop": False}
    full_length = len(PROMPTS[0]) + 32
    every, every_calls = forward_lengths(model, **kwargs)
    sparse, sparse_calls = forward_lengths(model, cache_refresh_interval=2, **kwargs)
    assert [n for _, n in every_calls].count(full_length) == 4, "one full refresh per block by default"
    assert [n for _, n in sparse_calls].count(full_length) == 2, "blocks 0 and 2 only"
    if cache_mode == "dual":
        # blocks 1 and 3 start by recomputing the previous and the current block (16 positions), then the block
        assert [n for _, n in sparse_calls].count(16) == 2
        assert max(n for _, n in sparse_calls if n != full_length) == 16
    assert len(every_calls) == len(sparse_calls) == 32, "same steps: one token per step"
    assert not (sparse == MASK).any() and sparse.shape == every.shape


def test_refresh_interval_one_is_the_default_sampler(model):
    kwargs = {"gen_length": 16, "block_length": 8, "threshold": 0.3, "cache_mode": "dual"}
    default, _ = forward_lengths(model, **kwargs)
    explicit, _ = forward_lengths(model, cache_refresh_interval=1, **kwargs)
    assert torch.equal(default, explicit)


def test_rows_whose_block_is_decoded_leave_the_step_batch(model):
    # row 0 keeps all but one position of each block fixed, so its block is done after one step; row 1 needs eight
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0] = True
    keep[0, [3, 11]] = False
    given = torch.where(keep, torch.full((2, 16), 50), torch.full((2, 16), MASK))
    calls = []
    hook = model.register_forward_hook(
        lambda m, args, kw, out: calls.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        out = model.generate(
            torch.tensor(PROMPTS), torch.tensor(ATTENTION), response_ids=given, response_keep_mask=keep,
            block_length=8, cache_mode="dual", eos_early_stop=False,
        )  # fmt: skip
    finally:
        hook.remove()
    assert calls == [2] + [1] * 7 + [2] + [1] * 7, "row 0 leaves after its one step in each block"
    assert torch.equal(out[0][keep[0]], given[0][keep[0]])
    for row in range(2):
        alone = model.generate(
            torch.tensor(PROMPTS[row : row + 1]), torch.tensor(ATTENTION[row : row + 1]),
            response_ids=given[row : row + 1], response_keep_mask=keep[row : row + 1],
            block_length=8, cache_mode="dual", eos_early_stop=False,
        )  # fmt: skip
        assert torch.equal(alone[0], out[row]), f"row {row} differs from its one-by-one output"


def test_a_shared_generator_keeps_the_whole_batch(model):
    calls = []
    hook = model.register_forward_hook(
        lambda m, args, kw, out: calls.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        model.generate(
            torch.tensor(PROMPTS), torch.tensor(ATTENTION), gen_length=16, block_length=8, cache_mode="dual",
            temperature=1.0, threshold=0.2, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
    finally:
        hook.remove()
    assert set(calls) == {2}, "a single generator draws for the whole batch, so its stream stays the same"
