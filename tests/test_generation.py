"""MedDiff samplers: config validation, determinism, batching, the fast path, images, inpainting, infilling."""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffGenerationConfig
from hf_meddiff.models.meddiff.generation_meddiff import (
    MedDiffGenerationMixin,
    classifier_free_guidance,
    num_transfer_tokens,
    select_top,
)

MASK, PAD, BOS, EOS, USER, ASSISTANT, MMU, T2I = 4, 0, 1, 2, 7, 8, 9, 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


PROMPTS = [
    [BOS, MMU, USER, 20, 21, ASSISTANT],
    [BOS, MMU, USER, 30, 31, 32, 33, 34, ASSISTANT],
    [BOS, USER, 40],
]


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gen_length": 100, "block_length": 32}, "not a multiple of block_length"),
        ({"gen_length": 64, "block_length": 16, "steps": 6}, "multiple of the number of blocks"),
        ({"gen_length": 16, "steps": 32}, "exceeds gen_length"),
        ({"threshold": 0.0}, r"threshold \(0.0\) must lie in \(0, 1\]"),
        ({"threshold": 1.5}, r"must lie in \(0, 1\]"),
        ({"remasking": "lowest"}, "remasking must be one of"),
        ({"cache_mode": "full"}, "cache_mode must be one of"),
        ({"noise_schedule": "exp"}, "noise_schedule must be one of"),
        ({"cfg_scale": -1.0}, "cfg_scale must be >= 0"),
        ({"top_p": 0.0}, "top_p must lie in"),
        ({"gen_lenght": 64}, "unknown arguments"),
    ],
)
def test_bad_config_is_refused_with_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MedDiffGenerationConfig(**kwargs)


def test_generate_refuses_bad_overrides_and_unknown_options(model):
    prompt = torch.tensor([PROMPTS[0]])
    with pytest.raises(ValueError, match="not a multiple of block_length"):
        model.generate(prompt, gen_length=12, block_length=8)
    with pytest.raises(TypeError, match="unknown arguments"):
        model.generate(prompt, num_beams=4)


def test_generation_config_saves_and_loads_with_the_model(model):
    model.generation_config = MedDiffGenerationConfig.from_model_config(model.config)
    model.generation_config.update(gen_length=64, block_length=16, threshold=0.85, cache_mode="dual")
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = MedDiffForMaskedDiffusion.from_pretrained(folder)
    config = loaded.generation_config
    assert isinstance(config, MedDiffGenerationConfig)
    assert (config.gen_length, config.block_length, config.threshold, config.cache_mode) == (
        64,
        16,
        0.85,
        "dual",
    )
    assert (config.mask_token_id, config.eos_token_id) == (MASK, EOS)
    model.generation_config = MedDiffGenerationConfig.from_model_config(model.config)


def test_schedule_helpers():
    assert num_transfer_tokens(torch.tensor([10, 3]), 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    chosen = select_top(scores, torch.tensor([[True, False, True, True]]), torch.tensor([2]))
    assert chosen.tolist() == [[False, False, True, True]]
    cond, uncond = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), cond)
    assert torch.equal(classifier_free_guidance(cond, cond.clone(), 3.0), cond)


# ------------------------------------------------------------------------------------------------ text


def test_output_shape_vocabulary_and_trajectory(model):
    out = model.generate(
        torch.tensor([PROMPTS[0]]),
        gen_length=16,
        block_length=8,
        eos_early_stop=False,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (1, 16)
    assert not (out.sequences == MASK).any()
    assert (out.sequences < model.config.image_token_offset).all(), "text never contains image tokens"
    # vanilla: one token per step, so the trajectory is a permutation of 0..15 and blocks go left to right
    assert sorted(out.trajectory[0].tolist()) == list(range(16))
    assert out.trajectory[0, :8].max() < out.trajectory[0, 8:].min()
    assert out.num_forward_passes == 16


def test_seeded_sampling_is_deterministic(model):
    prompt = torch.tensor([PROMPTS[1]])
    kwargs = {"gen_length": 16, "block_length": 8, "temperature": 1.0, "top_k": 50, "top_p": 0.95}

    def run(seed: int) -> torch.Tensor:
        out = model.generate(
            prompt, generator=torch.Generator().manual_seed(seed), return_dict_in_generate=True, **kwargs
        )
        return torch.cat([out.sequences, out.trajectory])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"threshold": 0.05, "cache_mode": "dual"},
        {"threshold": 0.05, "cache_mode": "prefix", "remasking": "margin"},
        {"temperature": 1.0, "remasking": "random"},
    ],
    ids=["vanilla", "fast-dual", "fast-prefix-margin", "sampled-random"],
)
def test_batch_gives_the_same_outputs_as_items_one_by_one(model, options):
    kwargs = {"gen_length": 16, "block_length": 8, **options}
    ids, mask = left_pad(PROMPTS)
    seeds = [3, 4, 5]
    batched = model.generate(ids, mask, generator=[torch.Generator().manual_seed(s) for s in seeds], **kwargs)
    for row, (prompt, seed) in enumerate(zip(PROMPTS, seeds)):
        alone = model.generate(
            torch.tensor([prompt]), generator=[torch.Generator().manual_seed(seed)], **kwargs
        )
        assert torch.equal(batched[row], alone[0]), f"row {row} differs with {options}"


def test_fast_path_with_threshold_one_and_no_cache_is_the_vanilla_sampler(model):
    ids, mask = left_pad(PROMPTS)
    vanilla = model.generate(ids, mask, gen_length=32, block_length=8, return_dict_in_generate=True)
    fast = model.generate(
        ids, mask, gen_length=32, block_length=8, threshold=1.0, return_dict_in_generate=True
    )
    assert torch.equal(vanilla.sequences, fast.sequences)
    assert torch.equal(vanilla.trajectory, fast.trajectory)


def test_threshold_commits_several_tokens_per_pass(model):
    prompt = torch.tensor([PROMPTS[0]])
    out = model.generate(prompt, gen_length=32, block_length=8, threshold=1e-6, return_dict_in_generate=True)
    assert out.num_forward_passes == 4, "everything above a tiny threshold: one pass per block"
    assert not (out.sequences == MASK).any()


@pytest.mark.parametrize("cache_mode", ["prefix", "dual"])
def test_block_cache_runs_with_batches_and_saves_compute(model, cache_mode):
    ids, mask = left_pad(PROMPTS)
    calls = []
    hook = model.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        out = model.generate(
            ids, mask, gen_length=16, block_length=8, cache_mode=cache_mode, eos_early_stop=False
        )
    finally:
        hook.remove()
    assert out.shape == (3, 16) and not (out == MASK).any()
    full = ids.shape[1] + 16
    assert calls.count(full) == 2, "one full refresh per block"
    assert max(c for c in calls if c != full) <= (16 if cache_mode == "prefix" else 8)


@pytest.mark.parametrize("cache_mode", ["none", "prefix", "dual"])
def test_suffix_window_wider_than_the_canvas_changes_nothing(model, cache_mode):
    ids, mask = left_pad(PROMPTS)
    options = dict(gen_length=24, block_length=8, threshold=0.5, cache_mode=cache_mode, eos_early_stop=False)
    whole = model.generate(ids, mask, return_dict_in_generate=True, **options)
    windowed = model.generate(ids, mask, suffix_window=16, return_dict_in_generate=True, **options)
    assert torch.equal(whole.sequences, windowed.sequences)
    assert torch.equal(whole.trajectory, windowed.trajectory)


@pytest.mark.parametrize("cache_mode", ["none", "prefix", "dual"])
def test_suffix_window_hides_the_far_canvas_and_still_decodes_all_of_it(model, cache_mode):
    ids, mask = left_pad(PROMPTS)
    keys, blocks = [], []  # per pass: the positions the model attends to (cached or not), the block decoded
    hook = model.register_forward_hook(
        lambda m, args, kwargs, out: keys.append(kwargs["attention_mask"].shape[1]), with_kwargs=True
    )
    try:
        out = model.generate(
            ids, mask, gen_length=32, block_length=8, suffix_window=8, cache_mode=cache_mode,
            eos_early_stop=False, return_dict_in_generate=True,
            callback=lambda step, state: blocks.append(state["block"]),
        )  # fmt: skip
    finally:
        hook.remove()
    assert out.sequences.shape == (3, 32) and not (out.trajectory < 0).any(), "every position decoded"
    assert len(keys) == len(blocks) == out.num_forward_passes
    prompt = ids.shape[1]
    # block b spans [prompt + 8b, prompt + 8b + 8): the model sees it and at most 8 masks after it
    assert keys == [min(prompt + 8 * b + 16, prompt + 32) for b in blocks]
    with pytest.raises(ValueError, match="suffix_window must be a positive integer"):
        model.generate(ids, mask, gen_length=16, block_length=8, suffix_window=0)


class ScriptedDenoiser(MedDiffGenerationMixin, nn.Module):
    """A stand-in model whose prediction at response position i is `script[i]`, with confidence falling with i.

    With several scripts, the last prompt token `100 + k` picks script k for that row."""

    def __init__(self, script: list[int] | list[list[int]], prompt_length: int):
        super().__init__()
        self.config = MedDiffConfig.from_preset("tiny")
        scripts = torch.tensor(script)
        self.scripts = scripts[None] if scripts.ndim == 1 else scripts
        self.prompt_length, self.calls, self.batch_sizes = prompt_length, 0, []

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.calls += 1
        self.batch_sizes.append(input_ids.shape[0])
        batch, length = input_ids.shape
        rows = (input_ids[:, self.prompt_length - 1] - 100).clamp(0, len(self.scripts) - 1)
        script = self.scripts[rows]
        n = script.shape[1]
        logits = torch.zeros(batch, length, self.config.vocab_size)
        confidence = (10.0 - 0.1 * torch.arange(n)).expand(batch, n)
        logits[:, self.prompt_length :, :].scatter_(-1, script[..., None], confidence[..., None])
        return SimpleNamespace(logits=logits)


def test_early_stop_at_eos_saves_passes_and_pads_after_eos():
    script = [50, 51, 52, EOS, 60, 61, 62, 63]  # tokens after EOS would be garbage
    prompt = torch.tensor([[BOS, USER, ASSISTANT]])
    stopper = ScriptedDenoiser(script, 3)
    early = stopper.generate(prompt, gen_length=8, block_length=4, return_dict_in_generate=True)
    full = ScriptedDenoiser(script, 3).generate(prompt, gen_length=8, block_length=4, eos_early_stop=False)
    assert early.sequences.tolist() == [[50, 51, 52, PAD, PAD, PAD, PAD, PAD]]
    assert torch.equal(early.sequences, full)
    assert early.num_forward_passes == 4 == stopper.calls


def test_finished_rows_leave_the_batch_and_outputs_match_one_by_one():
    scripts = [[50, EOS, 60, 61, 62, 63, 64, 65], [50, 51, 52, 53, 54, 55, 56, EOS]]
    prompts = torch.tensor([[USER, ASSISTANT, 100], [USER, ASSISTANT, 101]])
    model = ScriptedDenoiser(scripts, 3)
    batched = model.generate(prompts, gen_length=8, block_length=4)
    assert batched.tolist() == [[50] + [PAD] * 7, [50, 51, 52, 53, 54, 55, 56, PAD]]
    assert model.batch_sizes == [2] * 4 + [1] * 4, "row 0 finished in block 0 and left the batch"
    for row in range(2):
        alone = ScriptedDenoiser(scripts, 3).generate(prompts[row : row + 1], gen_length=8, block_length=4)
        assert torch.equal(alone[0], batched[row])


def test_text_infilling_never_changes_the_given_tokens():
    script = [50, 51, 52, 53, 54, 55, 56, 57]
    keep = torch.tensor([[True, False, False, True, False, True, False, False]])
    given = torch.tensor([[70, 0, 0, 71, 0, 72, 0, 0]])
    model = ScriptedDenoiser(script, 3)
    seen = []
    out = model.generate(
        torch.tensor([[BOS, USER, ASSISTANT]]),
        response_ids=given,
        response_keep_mask=keep,
        block_length=4,
        steps=8,
        return_dict_in_generate=True,
        callback=lambda step, state: seen.append(state["canvas"][:, 3:].clone()),
    )
    assert out.sequences.tolist() == [[70, 51, 52, 71, 54, 72, 56, 57]]
    assert all(torch.equal(c[keep], given[keep]) for c in seen)
    assert (out.trajectory[keep] == -1).all() and (out.trajectory[~keep] >= 0).all()
    assert model.calls == 5, "only the 5 free tokens are decoded, one per step"


# ------------------------------------------------------------------------------------------------ images

T2I_PROMPTS = [[BOS, T2I, USER, 20, 21, 22, ASSISTANT], [BOS, T2I, USER, 30, ASSISTANT]]


def test_image_generation_fills_the_grid_in_image_steps_passes(model):
    ids, mask = left_pad(T2I_PROMPTS)
    out = model.generate_images(ids, mask, image_steps=6, return_dict_in_generate=True)
    offset, size = model.config.image_token_offset, model.config.image_codebook_size
    assert out.sequences.shape == (2, model.config.image_grid_size**2)
    assert ((out.sequences >= offset) & (out.sequences < offset + size)).all()
    assert out.num_forward_passes == 6
    assert out.trajectory.min() == 0 and out.trajectory.max() == 5
    # the cosine schedule commits few tokens first and many last
    per_step = torch.stack([(out.trajectory == s).sum(1) for s in range(6)], 1)
    assert (per_step >= 1).all() and (per_step[:, 0] < per_step[:, -1]).all()


def test_cfg_zero_equals_the_conditional_pass(model):
    ids, mask = left_pad(T2I_PROMPTS)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    unguided = model.generate_images(ids, mask, image_steps=5, cfg_scale=0.0, generator=gen())
    other_negative = torch.tensor([[BOS, T2I, USER, 99, ASSISTANT]] * 2)
    unguided_other = model.generate_images(
        ids, mask, image_steps=5, cfg_scale=0.0, generator=gen(), negative_input_ids=other_negative
    )
    # guidance towards a "negative" prompt equal to the prompt itself reduces to the conditional logits
    guided_by_self = model.generate_images(
        ids,
        mask,
        image_steps=5,
        cfg_scale=4.0,
        generator=gen(),
        negative_input_ids=ids,
        negative_attention_mask=mask,
    )
    guided = model.generate_images(ids, mask, image_steps=5, cfg_scale=100.0, generator=gen())
    assert torch.equal(unguided, unguided_other)
    assert torch.equal(unguided, guided_by_self)
    assert not torch.equal(unguided, guided)


def test_image_inpainting_never_changes_fixed_tokens(model):
    ids, mask = left_pad(T2I_PROMPTS)
    n = model.config.image_grid_size**2
    offset = model.config.image_token_offset
    original = offset + torch.randint(0, model.config.image_codebook_size, (2, n))
    keep = torch.rand(2, n) < 0.7
    seen = []
    out = model.generate_images(
        ids,
        mask,
        image_ids=original,
        image_keep_mask=keep,
        image_steps=4,
        generator=torch.Generator().manual_seed(0),
        return_dict_in_generate=True,
        callback=lambda step, state: seen.append(state["image_ids"].clone()),
    )
    assert len(seen) == 4
    for image in seen:
        assert torch.equal(image[keep], original[keep])
    assert torch.equal(out.sequences[keep], original[keep])
    assert (out.trajectory[keep] == -1).all() and (out.trajectory[~keep] >= 0).all()
    with pytest.raises(ValueError, match="image_token_offset"):
        model.generate_images(ids, mask, image_ids=original - offset, image_keep_mask=keep)


class EosTrapDenoiser(MedDiffGenerationMixin, nn.Module):
    """A stand-in model that is sure of EOS from response position 6 on, unsure of the text 50 + i before it,
    and at position 2 prefers EOS (p ~ 0.3) to its text 52 (the trap that ends an answer two tokens in)."""

    def __init__(self, prompt_length: int):
        super().__init__()
        self.config = MedDiffConfig.from_preset("tiny")
        self.prompt_length, self.calls = prompt_length, 0

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.calls += 1
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.config.vocab_size)
        for i in range(length - self.prompt_length):
            at = self.prompt_length + i
            if i < 6:
                logits[:, at, 50 + i], logits[:, at, EOS] = (4.0, 5.0) if i == 2 else (3.0, 1.0)
            else:
                logits[:, at, EOS] = 9.0
        return SimpleNamespace(logits=logits)


def test_ordered_eos_decodes_the_text_before_its_end():
    prompt = torch.tensor([[BOS, USER, ASSISTANT]])
    plain = EosTrapDenoiser(3).generate(prompt, gen_length=8)
    assert plain.tolist() == [[50, 51] + [PAD] * 6], "by confidence alone EOS lands at position 2"
    ordered = EosTrapDenoiser(3).generate(prompt, gen_length=8, ordered_eos=True)
    assert ordered.tolist() == [[50, 51, 52, 53, 54, 55, PAD, PAD]]


def test_ordered_eos_still_commits_a_block_of_eos_in_one_pass():
    prompt = torch.tensor([[BOS, USER, ASSISTANT]])
    model = EosTrapDenoiser(3)
    out = model.generate(
        prompt, gen_length=16, block_length=8, threshold=0.9, ordered_eos=True, eos_early_stop=False,
        return_dict_in_generate=True,
    )  # fmt: skip
    assert out.sequences.tolist() == [[50, 51, 52, 53, 54, 55] + [PAD] * 10]
    # block 0: five text passes, then 52 once the text after it is decoded, then both EOS at once; block 1: one
    assert out.num_forward_passes == 8 == model.calls


class RepeatingDenoiser(MedDiffGenerationMixin, nn.Module):
    """A stand-in model that predicts token 50 everywhere (surest at the first position), 51 second, and EOS
    from response position 6 on."""

    def __init__(self, prompt_length: int):
        super().__init__()
        self.config = MedDiffConfig.from_preset("tiny")
        self.prompt_length = prompt_length

    def forward(self, input_ids, attention_mask=None, **kwargs):
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.config.vocab_size)
        for i in range(length - self.prompt_length):
            at = self.prompt_length + i
            if i < 6:
                logits[:, at, 50], logits[:, at, 51] = 5.0 - 0.1 * i, 4.0
            else:
                logits[:, at, EOS] = 9.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("threshold", [None, 0.01])
def test_no_adjacent_repeats_never_writes_a_word_twice_in_a_row(threshold):
    prompt = torch.tensor([[BOS, USER, ASSISTANT]])
    model = RepeatingDenoiser(3)
    plain = model.generate(prompt, gen_length=8, threshold=threshold, ordered_eos=True)
    assert plain.tolist() == [[50] * 6 + [PAD] * 2]
    out = model.generate(
        prompt, gen_length=8, threshold=threshold, ordered_eos=True, no_adjacent_repeats=True
    )
    assert out.tolist() == [[50, 51, 50, 51, 50, 51, PAD, PAD]], "EOS (written as pad) still repeats"
    response = out[0, :6]
    assert not (response[1:] == response[:-1]).any()
