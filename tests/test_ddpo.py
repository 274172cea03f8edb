"""MedDDPO: DDIM log-probabilities, the clipped objective, LoRA-only updates, the per-prompt tracker, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from hf_meddiff import MedDDPOConfig, MedDDPOTrainer
from hf_meddiff.trainer.ddpo.pipeline import (
    ddim_step_with_logprob,
    encode_prompts,
    predict_noise,
    sample_with_logprob,
)
from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion
from hf_meddiff.trainer.ddpo.trainer import PerPromptStatTracker

PROMPTS = ["dermoscopy image: melanoma, severe", "dermoscopy image: nevus, mild"]


def brightness(images, prompts, **kwargs):
    return images.mean(dim=(1, 2, 3)).tolist()


def tiny_config(tmp_path, **overrides) -> MedDDPOConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        num_epochs=1,
        sample_num_steps=4,
        sample_batch_size=4,
        sample_num_batches_per_epoch=1,
        train_batch_size=2,
        sample_guidance_scale=3.0,
        train_learning_rate=1e-2,
        per_prompt_stat_tracking_min_count=2,
    )
    values.update(overrides)
    return MedDDPOConfig(**values)


def scheduler(steps: int = 5, **kwargs) -> DDIMScheduler:
    s = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, **kwargs
    )
    s.set_timesteps(steps)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_logprob_equals_direct_gaussian_density(prediction_type):
    sched = scheduler(prediction_type=prediction_type, set_alpha_to_one=False)
    t = int(sched.timesteps[1])
    sample, model_output, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    eta = 0.7
    out = ddim_step_with_logprob(sched, model_output, t, sample, eta=eta, variance_noise=noise)
    # Independent reference: diffusers' own DDIM step gives the mean (zero noise) and the drawn sample.
    mean = sched.step(model_output, t, sample, eta=eta, variance_noise=torch.zeros_like(noise)).prev_sample
    drawn = sched.step(model_output, t, sample, eta=eta, variance_noise=noise).prev_sample
    prev_t = t - sched.config.num_train_timesteps // sched.num_inference_steps
    std = eta * sched._get_variance(t, prev_t).sqrt()
    expected = torch.distributions.Normal(mean, std).log_prob(drawn).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.prev_sample, drawn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.log_prob, expected, rtol=1e-5, atol=1e-5)


def test_ddim_step_scores_a_recorded_prev_sample_exactly():
    sched = scheduler()
    t = int(sched.timesteps[2])
    sample, model_output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    drawn = ddim_step_with_logprob(
        sched, model_output, t, sample, eta=1.0, generator=torch.Generator().manual_seed(1)
    )
    replay = ddim_step_with_logprob(sched, model_output, t, sample, eta=1.0, prev_sample=drawn.prev_sample)
    assert torch.equal(replay.prev_sample, drawn.prev_sample)
    assert torch.equal(replay.log_prob, drawn.log_prob)
    # Moving x_{t-1} away from the recorded draw lowers its density.
    other = ddim_step_with_logprob(
        sched, model_output, t, sample, eta=1.0, prev_sample=drawn.prev_sample + 0.5
    )
    assert (other.log_prob < drawn.log_prob).all()


def test_ddim_step_accepts_one_timestep_per_sample():
    sched = scheduler()
    ts = sched.timesteps[[0, 3]]
    sample, model_output, prev = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    batched = ddim_step_with_logprob(sched, model_output, ts, sample, eta=1.0, prev_sample=prev).log_prob
    single = [
        ddim_step_with_logprob(
            sched, model_output[i : i + 1], int(ts[i]), sample[i : i + 1], prev_sample=prev[i : i + 1]
        ).log_prob
        for i in range(2)
    ]
    torch.testing.assert_close(batched, torch.cat(single))


def test_ddim_step_rejects_deterministic_eta():
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_with_logprob(scheduler(), torch.randn(1, 4, 8, 8), 1, torch.randn(1, 4, 8, 8), eta=0.0)


def test_batched_guidance_equals_two_unet_passes():
    pipe = build_tiny_stable_diffusion(seed=0)
    cond, uncond = encode_prompts(pipe, PROMPTS), encode_prompts(pipe, [""])
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([901, 401])
    with torch.no_grad():
        guided = predict_noise(pipe.unet, x, t, cond, uncond, guidance_scale=4.0)
        c = pipe.unet(x, t, encoder_hidden_states=cond).sample
        u = pipe.unet(x, t, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
    torch.testing.assert_close(guided, u + 4.0 * (c - u), rtol=1e-4, atol=1e-5)


def test_sampled_trajectory_log_probs_are_reproduced_by_replay():
    pipe = build_tiny_stable_diffusion(seed=0)
    cond, uncond = encode_prompts(pipe, PROMPTS), encode_prompts(pipe, [""])
    out = sample_with_logprob(
        pipe,
        cond,
        uncond,
        num_inference_steps=4,
        guidance_scale=3.0,
        eta=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.latents.shape == (2, 5, 4, 16, 16) and out.log_probs.shape == (2, 4)
    assert out.images.shape == (2, 3, 32, 32) and out.images.min() >= 0 and out.images.max() <= 1
    with torch.no_grad():
        for j, t in enumerate(out.timesteps):
            eps = predict_noise(pipe.unet, out.latents[:, j], t, cond, uncond, 3.0)
            step = ddim_step_with_logprob(
                pipe.scheduler, eps, t, out.latents[:, j], eta=1.0, prev_sample=out.latents[:, j + 1]
            )
            torch.testing.assert_close(step.log_prob, out.log_probs[:, j], rtol=1e-5, atol=1e-5)


def test_per_prompt_tracker_statistics_and_batch_fallback():
    tracker = PerPromptStatTracker(buffer_size=3, min_count=2)
    rewards = np.array([1.0, 2.0, 10.0])
    adv = tracker.update(["a", "b", "a"], rewards)
    # "a" has 2 rewards (>= min_count): its own statistics; "b" has 1: the batch's.
    np.testing.assert_allclose(adv[[0, 2]], (rewards[[0, 2]] - 5.5) / (4.5 + 1e-6))
    np.testing.assert_allclose(adv[1], (2.0 - rewards.mean()) / (rewards.std() + 1e-6))
    tracker.update(["a", "a"], np.array([4.0, 7.0]))
    stats = tracker.get_stats()
    assert stats["a"] == {
        "mean": 7.0,
        "std": pytest.approx(np.std([10.0, 4.0, 7.0])),
        "count": 3,
    }  # buffer keeps last 3
    assert stats["b"]["count"] == 1
    restored = PerPromptStatTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.get_stats() == stats


def test_config_validation_names_the_fields():
    with pytest.raises(ValueError, match="sample_eta"):
        MedDDPOConfig(sample_eta=0.0)
    with pytest.raises(ValueError, match="multiple of train_batch_size"):
        MedDDPOConfig(sample_batch_size=3, sample_num_batches_per_epoch=1, train_batch_size=2)
    with pytest.raises(ValueError, match="lora_rnk"):
        MedDDPOConfig.from_dict({"lora_rnk": 4})


@pytest.mark.parametrize("merge", [False, True])
def test_first_update_has_ratio_one_and_only_lora_weights_change(tmp_path, merge):
    pipe = build_tiny_stable_diffusion(seed=0)
    config = tiny_config(tmp_path, train_batch_size=4, sample_merge_lora=merge)
    trainer = MedDDPOTrainer(config, pipe, brightness, prompts=PROMPTS)
    before = {
        f"{m}.{n}": p.detach().clone()
        for m in ("unet", "vae", "text_encoder")
        for n, p in getattr(pipe, m).named_parameters()
    }
    stats = trainer.step()
    # One minibatch, one chunk: the policy that is scored is the one that sampled.
    # Merged-LoRA sampling matches the unmerged training forward up to float rounding.
    assert stats["ratio"] == pytest.approx(1.0, abs=1e-5 if merge else 1e-6)
    assert stats["approx_kl"] < 1e-9 and stats["clipfrac"] == 0.0
    after = {
        f"{m}.{n}": p.detach()
        for m in ("unet", "vae", "text_encoder")
        for n, p in getattr(pipe, m).named_parameters()
    }
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "no weight changed"
    assert all("lora_" in k and k.startswith("unet.") for k in changed), sorted(changed)[:5]


def test_timestep_batching_gives_the_same_gradient(tmp_path):
    grads = []
    for per_forward in (1, 0):
        pipe = build_tiny_stable_diffusion(seed=0)
        config = tiny_config(
            tmp_path, train_batch_size=4, train_timesteps_per_forward=per_forward, train_max_grad_norm=0.0
        )
        trainer = MedDDPOTrainer(config, pipe, brightness, prompts=PROMPTS)
        samples = trainer.sample()
        advantages = trainer.compute_advantages(samples["prompts"], samples["rewards"])
        trainer.optimizer.step = lambda: None  # keep the gradient for inspection
        trainer.optimizer.zero_grad = lambda set_to_none=True: None
        trainer.train_on_samples(samples, advantages)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.trainable_parameters]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_lora_weights_reload_with_diffusers_loader(tmp_path):
    trainer = MedDDPOTrainer(
        tiny_config(tmp_path), build_tiny_stable_diffusion(seed=0), brightness, prompts=PROMPTS
    )
    trainer.train()
    trainer.save_lora_weights(tmp_path / "lora")
    expected = trainer.generate(PROMPTS, seed=3)
    fresh = build_tiny_stable_diffusion(seed=0)
    base = MedDDPOTrainer(tiny_config(tmp_path, use_lora=False), fresh, brightness, prompts=PROMPTS).generate(
        PROMPTS, seed=3
    )
    fresh.load_lora_weights(tmp_path / "lora")
    cond, uncond = encode_prompts(fresh, PROMPTS), encode_prompts(fresh, [""])
    from hf_meddiff.trainer.ddpo.pipeline import decode_latents

    out = sample_with_logprob(
        fresh,
        cond,
        uncond,
        num_inference_steps=4,
        guidance_scale=3.0,
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
        decode=False,
    )
    torch.testing.assert_close(decode_latents(fresh, out.latents[:, -1]), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(base, expected, atol=1e-4)


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    full = MedDDPOTrainer(
        tiny_config(tmp_path / "a", num_epochs=2, save_freq=1),
        build_tiny_stable_diffusion(seed=0),
        brightness,
        prompts=PROMPTS,
    )
    full.train()
    checkpoint = tmp_path / "a" / "run" / "checkpoint-1"
    assert (checkpoint / "pytorch_lora_weights.safetensors").is_file()
    resumed = MedDDPOTrainer(
        tiny_config(tmp_path / "b", num_epochs=2, resume_from_checkpoint=str(checkpoint)),
        build_tiny_stable_diffusion(seed=0),
        brightness,
        prompts=PROMPTS,
    )
    history = resumed.train()
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[1]["reward_mean"] == pytest.approx(full.history[1]["reward_mean"], abs=1e-6)
    for a, b in zip(full.trainable_parameters, resumed.trainable_parameters):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert full.stat_tracker.get_stats() == resumed.stat_tracker.get_stats()


@pytest.mark.slow
def test_supervised_stage_lowers_the_denoising_loss_and_trains_only_lora(tmp_path):
    pipe = build_tiny_stable_diffusion(seed=0)
    trainer = MedDDPOTrainer(tiny_config(tmp_path), pipe, brightness, prompts=PROMPTS)
    images = torch.zeros(8, 3, 32, 32)
    images[:4, 0] = 0.9  # "melanoma": red
    images[4:, 2] = 0.9  # "nevus": blue
    captions = [PROMPTS[0]] * 4 + [PROMPTS[1]] * 4
    frozen = pipe.unet.conv_in.weight.detach().clone()
    losses = trainer.train_supervised(images, captions, num_steps=30, batch_size=4, learning_rate=1e-2)
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    assert torch.equal(frozen, pipe.unet.conv_in.weight)


def test_prompt_dicts_pass_metadata_to_rewards(tmp_path):
    seen = []

    def reward(images, prompts, attributes=None, **kwargs):
        seen.append(attributes)
        return [0.0] * len(prompts)

    prompts = [{"prompt": PROMPTS[0], "attributes": ["melanoma"]}]
    trainer = MedDDPOTrainer(
        tiny_config(tmp_path), build_tiny_stable_diffusion(seed=0), reward, prompts=prompts
    )
    trainer.sample()
    assert seen == [[["melanoma"]] * 4]
