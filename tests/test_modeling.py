"""MedDiffModel / MedDiffForMaskedDiffusion: forward, padding, attention backends, loss, noise and block cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffModel
from hf_meddiff.models.meddiff import MedDiffCache

TEXT_LOW = 17  # first ordinary text id after the special and tag tokens of the tiny vocabulary


def tiny_config(**overrides) -> MedDiffConfig:
    return MedDiffConfig.from_preset("tiny", **overrides)


def tiny_model(**overrides) -> MedDiffForMaskedDiffusion:
    torch.manual_seed(0)
    return MedDiffForMaskedDiffusion(tiny_config(**overrides)).eval()


def text_ids(*shape: int) -> torch.Tensor:
    return torch.randint(TEXT_LOW, 128, shape)


def image_ids(*shape: int) -> torch.Tensor:
    return torch.randint(128, 192, shape)


def pad_batch(sequences: list[torch.Tensor], side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        ids[row, span] = seq
        mask[row, span] = 1
    return ids, mask


# --- forward and outputs ------------------------------------------------------------------------------


def test_forward_returns_logits_over_the_unified_vocabulary():
    model = tiny_model()
    out = model(text_ids(2, 7))
    assert out.logits.shape == (2, 7, 192)
    assert out.loss is None and out.cache is None


def test_return_dict_false_gives_a_tuple():
    model = tiny_model()
    out = model(text_ids(1, 5), return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 5, 192)


def test_hidden_states_and_eager_attentions_have_one_entry_per_layer():
    model = tiny_model(attn_implementation="eager")
    ids, mask = pad_batch([text_ids(5), text_ids(8)], side="right")
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert all(h.shape == (2, 8, 64) for h in out.hidden_states)
    assert len(out.attentions) == model.config.num_hidden_layers
    attn = out.attentions[0]
    assert attn.shape == (2, 4, 8, 8)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 8))
    assert attn[0, :, :, 5:].max() < 1e-6  # padding keys get no attention


def test_attention_is_bidirectional():
    model = tiny_model()
    ids = text_ids(1, 8)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] - TEXT_LOW + 1) % (128 - TEXT_LOW) + TEXT_LOW
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


# --- saving, padding, backends, dtypes ----------------------------------------------------------------


def test_save_and_load_twice_gives_bit_identical_logits(tmp_path):
    model = tiny_model()
    ids = text_ids(2, 9)
    reference = model(ids).logits
    model.save_pretrained(tmp_path / "first")
    assert (tmp_path / "first" / "model.safetensors").is_file()
    assert not list((tmp_path / "first").glob("*.bin"))
    once = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "first").eval()
    once.save_pretrained(tmp_path / "second")
    twice = MedDiffForMaskedDiffusion.from_pretrained(tmp_path / "second").eval()
    assert torch.equal(once(ids).logits, reference)
    assert torch.equal(twice(ids).logits, reference)


def test_bare_model_loads_from_a_masked_diffusion_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    base = MedDiffModel.from_pretrained(tmp_path).eval()
    ids = text_ids(1, 6)
    torch.testing.assert_close(
        base(ids).last_hidden_state, model.model(ids).last_hidden_state, rtol=0, atol=0
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_single_items(side):
    model = tiny_model()
    sequences = [text_ids(6), torch.cat([text_ids(5), image_ids(4)]), text_ids(12)]
    ids, mask = pad_batch(sequences, side=side)
    batched = model(ids, attention_mask=mask).logits
    for row, seq in enumerate(sequences):
        single = model(seq[None]).logits[0]
        real = mask[row].bool()
        torch.testing.assert_close(batched[row][real], single, rtol=1e-5, atol=1e-5)


def test_eager_and_sdpa_agree_on_a_padded_batch():
    sdpa = tiny_model(attn_implementation="sdpa")
    eager = tiny_model(attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids, mask = pad_batch([text_ids(7), text_ids(10)], side="left")
    torch.testing.assert_close(
        sdpa(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5
    )


def test_bfloat16_forward_and_loss_run():
    model = tiny_model().to(torch.bfloat16)
    ids = torch.cat([text_ids(2, 6), image_ids(2, 4)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 4:] = ids[:, 4:]
    out = model(ids, labels=labels, generator=torch.Generator().manual_seed(1))
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)


def test_every_parameter_gets_a_gradient_under_gradient_checkpointing():
    plain = tiny_model().train()
    checkpointed = tiny_model().train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.layers)

    ids = torch.cat([text_ids(2, 8), image_ids(2, 4)], dim=1)
    ids[0, 0] = 0  # include the pad row of the embedding in the batch
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]
    noise_mask = labels != -100
    for model in (plain, checkpointed):
        model(ids, labels=labels, noise_mask=noise_mask, mask_ratio=torch.ones(2)).loss.backward()

    for (name, p_plain), (_, p_ckpt) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert p_ckpt.grad is not None and p_ckpt.grad.abs().sum() > 0, name
        torch.testing.assert_close(p_ckpt.grad, p_plain.grad, rtol=1e-4, atol=1e-6)


def test_resize_token_embeddings_grows_embeddings_head_and_config(tmp_path):
    model = tiny_model()
    model.resize_token_embeddings(200)
    assert model.config.vocab_size == 200
    assert model.get_input_embeddings().weight.shape == (200, 64)
    assert model.get_output_embeddings().weight.shape == (200, 64)
    ids = torch.tensor([[1, 9, 199, 150, 30]])
    assert model(ids).logits.shape == (1, 5, 200)
    model.save_pretrained(tmp_path)
    reloaded = MedDiffForMaskedDiffusion.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(ids).logits, model(ids).logits)


# --- the masked-diffusion loss ---------------------------------------------------------------------


def reference_loss(logits, labels, noise_mask, mask_ratio, task_weights, offset=128, end=192):
    """docs/internals.md written out per sample, independently of the model code."""
    per_sample, has_response = [], []
    for b in range(labels.shape[0]):
        text_sum, n_text, image_ces = 0.0, 0, []
        for i in range(labels.shape[1]):
            target = int(labels[b, i])
            if target == -100:
                continue
            is_image = offset <= target < end
            n_text += not is_image
            if noise_mask[b, i]:
                ce = F.cross_entropy(logits[b, i][None].float(), labels[b, i][None])
                if is_image:
                    image_ces.append(ce)
                else:
                    text_sum = text_sum + ce
        text_term = text_sum / float(mask_ratio[b]) / n_text if n_text else 0.0
        image_term = torch.stack(image_ces).mean() if image_ces else 0.0
        per_sample.append(task_weights[b] * (text_term + image_term))
        has_response.append(bool((labels[b] != -100).any()))
    kept = [torch.as_tensor(p) for p, keep in zip(per_sample, has_response) if keep]
    return torch.stack(kept).mean()


def test_loss_matches_a_hand_computation_on_a_fixed_noise_mask():
    config = tiny_config(task_loss_weights={"t2i": 0.5, "reasoning": 2.0})
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(config).eval()
    batch, length = 4, 14
    ids = text_ids(batch, length)
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]  # vqa: text response of 6
    ids[1, 4:] = image_ids(10)
    labels[1, 4:] = ids[1, 4:]  # t2i: image response of 10
    labels[2, 5:] = ids[2, 5:]  # reasoning: text response of 9
    # sample 3 has no response and must not count
    noise_mask = torch.zeros(batch, length, dtype=torch.bool)
    noise_mask[0, [8, 10, 13]] = True
    noise_mask[1, [4, 7, 8, 12]] = True
    noise_mask[2, [5, 6, 7, 8, 9, 11, 13]] = True
    noise_mask[3, 2] = True  # a masked prompt token: changes the input, never the loss
    mask_ratio = torch.tensor([0.4, 0.3, 0.7, 0.5])
    task_ids = torch.tensor([0, 2, 3, 1])

    out = model(ids, labels=labels, noise_mask=noise_mask, mask_ratio=mask_ratio, task_ids=task_ids)

    noised = ids.masked_fill(noise_mask, config.mask_token_id)
    logits = model(noised).logits
    expected = reference_loss(logits, labels, noise_mask, mask_ratio, task_weights=[1.0, 0.5, 2.0, 1.0])
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, logits)
    assert out.per_sample_loss.shape == (4,) and out.per_sample_loss[3] == 0
    assert torch.equal(out.noise_mask, noise_mask) and torch.equal(out.mask_ratio, mask_ratio)
    # text_loss / image_loss are the unweighted modality terms
    text_terms = out.per_sample_loss[[0, 2]] / torch.tensor([1.0, 2.0])
    torch.testing.assert_close(out.text_loss, text_terms.mean())
    torch.testing.assert_close(out.image_loss, out.per_sample_loss[1] / 0.5)


def test_uniform_loss_weighting_averages_the_masked_text_tokens():
    torch.manual_seed(0)
    model = tiny_model().eval()
    ids = text_ids(2, 10)
    labels = torch.full_like(ids, -100)
    labels[:, 4:] = ids[:, 4:]
    noise_mask = torch.zeros_like(ids, dtype=torch.bool)
    noise_mask[0, [4, 6]] = True
    noise_mask[1, [5, 7, 8, 9]] = True
    mask_ratio = torch.tensor([0.1, 0.9])
    out = model(ids, labels=labels, noise_mask=noise_mask, mask_ratio=mask_ratio, loss_weighting="uniform")
    logits = model(ids.masked_fill(noise_mask, model.config.mask_token_id)).logits
    expected = torch.stack(
        [F.cross_entropy(logits[row][noise_mask[row]], ids[row][noise_mask[row]]) for row in range(2)]
    )
    torch.testing.assert_close(out.per_sample_loss, expected)
    elbo = model(ids, labels=labels, noise_mask=noise_mask, mask_ratio=mask_ratio)
    # the bound divides the sum by t * n_text = 0.6 (row 0): far more than the mean of its two tokens
    torch.testing.assert_close(elbo.per_sample_loss[0], expected[0] * 2 / (0.1 * 6))
    with pytest.raises(ValueError, match="loss_weighting"):
        model(ids, labels=labels, noise_mask=noise_mask, mask_ratio=mask_ratio, loss_weighting="mean")


def test_head_on_masked_positions_only_gives_the_same_loss():
    model = tiny_model()
    ids = torch.cat([text_ids(3, 6), image_ids(3, 6)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 3:] = ids[:, 3:]
    full = model(ids, labels=labels, generator=torch.Generator().manual_seed(3))
    lean = model(ids, labels=labels, generator=torch.Generator().manual_seed(3), return_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, full.loss)


def test_batch_without_any_response_has_zero_loss_that_backpropagates():
    model = tiny_model()
    ids = text_ids(2, 6)
    out = model(ids, labels=torch.full_like(ids, -100), generator=torch.Generator().manual_seed(0))
    assert out.loss.item() == 0.0
    out.loss.backward()


def test_given_noise_mask_without_ratio_uses_the_observed_text_fraction():
    model = tiny_model()
    ids = text_ids(1, 10)
    labels = torch.full_like(ids, -100)
    labels[0, 2:] = ids[0, 2:]
    noise_mask = torch.zeros_like(ids, dtype=torch.bool)
    noise_mask[0, [2, 3]] = True
    out = model(ids, labels=labels, noise_mask=noise_mask)
    torch.testing.assert_close(out.mask_ratio, torch.tensor([0.25]))


# --- sampled noise -----------------------------------------------------------------------------------


def noise_batch(batch: int = 512):
    """Half understanding (prompt 6 + text response 10), half text-to-image (prompt 6 + 16 image tokens)."""
    ids = text_ids(batch, 22)
    labels = torch.full_like(ids, -100)
    labels[: batch // 2, 6:16] = ids[: batch // 2, 6:16]
    ids[batch // 2 :, 6:] = image_ids(batch // 2, 16)
    labels[batch // 2 :, 6:] = ids[batch // 2 :, 6:]
    return ids, labels


def test_sampled_noise_never_masks_the_prompt_and_is_reproducible():
    model = tiny_model()
    ids, labels = noise_batch(64)
    out = model(ids, labels=labels, generator=torch.Generator().manual_seed(7))
    assert not (out.noise_mask & (labels == -100)).any()
    again = model.sample_noise_mask(labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again[0], out.noise_mask) and torch.equal(again[1], out.mask_ratio)


def test_text_noise_ratio_is_uniform_on_eps_one_and_masks_at_that_rate():
    model = tiny_model()
    _, labels = noise_batch(1024)
    noise_mask, ratio = model.sample_noise_mask(labels, generator=torch.Generator().manual_seed(0))
    text_ratio = ratio[:512]
    assert text_ratio.min() >= model.config.text_noise_eps and text_ratio.max() <= 1.0
    assert abs(text_ratio.mean().item() - 0.5) < 0.04
    assert abs((text_ratio < 0.25).float().mean().item() - 0.25) < 0.05
    masked_fraction = noise_mask[:512, 6:16].float().mean(-1)
    assert abs(masked_fraction.mean().item() - text_ratio.mean().item()) < 0.03


def test_image_noise_follows_the_cosine_schedule_with_at_least_one_mask():
    model = tiny_model()
    _, labels = noise_batch(1024)
    noise_mask, ratio = model.sample_noise_mask(labels, generator=torch.Generator().manual_seed(0))
    image_ratio = ratio[512:]
    counts = noise_mask[512:, 6:].sum(-1)
    expected = (image_ratio * 16).ceil().clamp(min=1, max=16).long()
    assert torch.equal(counts, expected)
    assert counts.min() >= 1
    # r = cos(pi/2 * u), u ~ U(0, 1): E[r] = 2/pi and P(r <= cos(pi/4)) = 1/2
    assert abs(image_ratio.mean().item() - 2 / math.pi) < 0.03
    assert abs((image_ratio <= math.cos(math.pi / 4)).float().mean().item() - 0.5) < 0.05


# --- block KV cache -----------------------------------------------------------------------------------


def test_block_recomputed_from_the_cache_matches_the_full_forward():
    model = tiny_model()
    ids, mask = pad_batch([text_ids(9), text_ids(12)], side="left")
    full = model(ids, attention_mask=mask, use_cache=True)
    cache = full.cache
    assert isinstance(cache, MedDiffCache) and len(cache) == 2 and cache.get_seq_length() == 12
    before = [k.clone() for k in cache.key_cache]
    block = model(ids[:, 5:9], attention_mask=mask, cache=cache, cache_start=5)
    torch.testing.assert_close(block.logits, full.logits[:, 5:9], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(k, b) for k, b in zip(cache.key_cache, before))  # read-only under autograd


def test_without_autograd_a_block_is_written_in_place_and_an_inference_mode_cache_stays_usable():
    model = tiny_model()
    ids = text_ids(1, 12)
    changed = ids.clone()
    changed[0, 4:8] = text_ids(4)
    with torch.inference_mode():
        cache = model(ids, use_cache=True).cache
    with torch.no_grad():
        # a cache made in inference mode is read, not written (its tensors cannot change outside that mode)
        before = [k.clone() for k in cache.key_cache]
        model(changed[:, 4:8], cache=cache, cache_start=4)
        assert all(torch.equal(k, b) for k, b in zip(cache.key_cache, before))
        cache = model(ids, use_cache=True).cache
        before = [k.clone() for k in cache.key_cache]
        model(changed[:, 4:8], cache=cache, cache_start=4)
        fresh = model(changed, use_cache=True).cache
    # the block's keys were written in place (layer-0 keys depend only on the token and its position) ...
    torch.testing.assert_close(cache.key_cache[0], fresh.key_cache[0], rtol=1e-6, atol=1e-6)
    # ... and nothing outside the block changed
    torch.testing.assert_close(cache.key_cache[1][..., :4, :], before[1][..., :4, :])
    torch.testing.assert_close(cache.key_cache[1][..., 8:, :], before[1][..., 8:, :])


def test_prefix_mode_on_a_cropped_cache_matches_the_full_forward():
    model = tiny_model()
    ids = text_ids(2, 12)
    full = model(ids, use_cache=True)
    cache = full.cache
    cache.crop(7)
    assert cache.get_seq_length() == 7
    suffix = model(ids[:, 7:], cache=cache)  # cache_start defaults to the cache length
    torch.testing.assert_close(suffix.logits, full.logits[:, 7:], rtol=1e-5, atol=1e-5)


def test_update_cache_writes_the_new_block_keys():
    model = tiny_model()
    ids = text_ids(1, 10)
    cache = model(ids, use_cache=True).cache
    changed = ids.clone()
    changed[0, 3:6] = text_ids(3)
    model(changed[:, 3:6], cache=cache, cache_start=3, update_cache=True)
    fresh = model(changed, use_cache=True).cache
    # layer-0 keys depend only on the token and its position, so the written block is exact
    torch.testing.assert_close(cache.key_cache[0], fresh.key_cache[0], rtol=1e-6, atol=1e-6)
    assert cache.get_seq_length() == 10


def test_cache_mode_requires_a_full_length_attention_mask():
    model = tiny_model()
    ids = text_ids(1, 10)
    cache = model(ids, use_cache=True).cache
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 4\) but \(1, 10\) was expected"):
        model(ids[:, 2:6], attention_mask=torch.ones(1, 4), cache=cache, cache_start=2)
    with pytest.raises(ValueError, match="cache_start=3 needs a filled"):
        model(ids[:, 3:6], cache_start=3)
