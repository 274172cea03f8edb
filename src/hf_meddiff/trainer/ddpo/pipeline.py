"""DDPO building blocks for any diffusers Stable Diffusion pipeline.

The pieces, in the order a DDPO epoch uses them:

1. `encode_prompts` - text embeddings from the pipeline's own tokenizer and text encoder.
2. `predict_noise` - one UNet pass with classifier-free guidance *batched* (unconditional and conditional
   halves in a single forward), the UNet output in the scheduler's parameterisation.
3. `ddim_step_with_logprob` - one DDIM transition x_t -> x_{t-1} with eta > 0, returning the Gaussian
   log-density of the transition. Given a recorded `prev_sample` it scores that sample instead of drawing one,
   which is how the trainer re-evaluates old trajectories under the current policy.
4. `sample_with_logprob` - the whole denoising loop, recording latents, timesteps and per-step log-probs.

Around them: `merged_lora` (LoRA deltas merged into the UNet while sampling, base weights restored bit-exactly)
and `denoising_loss` (the supervised text-to-image loss of stage one and of the tiny pipeline's pretraining).

Example:

```python
>>> import torch
>>> from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion
>>> from hf_meddiff.trainer.ddpo.pipeline import encode_prompts, sample_with_logprob
>>> pipe = build_tiny_stable_diffusion(seed=0)
>>> embeds = encode_prompts(pipe, ["dermoscopy image: melanoma"])
>>> neg = encode_prompts(pipe, [""])
>>> out = sample_with_logprob(pipe, embeds, neg, num_inference_steps=4, guidance_scale=3.0, eta=1.0,
...                           generator=torch.Generator().manual_seed(0))
>>> out.latents.shape[:2], out.log_probs.shape
(torch.Size([1, 5]), torch.Size([1, 4]))
```
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

__all__ = [
    "DDIMStepOutput",
    "DDPOSampleOutput",
    "ddim_step_with_logprob",
    "decode_latents",
    "denoising_loss",
    "encode_prompts",
    "merged_lora",
    "predict_noise",
    "sample_with_logprob",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class DDIMStepOutput:
    """Result of `ddim_step_with_logprob`.

    Attributes:
        prev_sample (`torch.Tensor` of shape `[B, C, h, w]`): x_{t-1} (drawn, or the one given).
        log_prob (`torch.Tensor` of shape `[B]`): per-dimension mean Gaussian log-density of `prev_sample`.
        mean (`torch.Tensor` of shape `[B, C, h, w]`): mean of the transition.
        std (`torch.Tensor` of shape `[B, 1, 1, 1]`): standard deviation of the transition.
    """

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


@dataclass
class DDPOSampleOutput:
    """Trajectories recorded by `sample_with_logprob`.

    Attributes:
        images (`torch.Tensor` of shape `[B, 3, H, W]`): decoded images in [0, 1] (None with `decode=False`).
        latents (`torch.Tensor` of shape `[B, T + 1, C, h, w]`): x_T, …, x_0 along the chain.
        log_probs (`torch.Tensor` of shape `[B, T]`): log-density of each transition x_{t_i} -> x_{t_{i+1}}.
        timesteps (`torch.LongTensor` of shape `[T]`): the scheduler timesteps, in sampling order.
    """

    images: torch.Tensor | None
    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor


def _expand_as(values: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], *([1] * (sample.ndim - 1)))


def ddim_step_with_logprob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    variance_noise: torch.Tensor | None = None,
) -> DDIMStepOutput:
    """One DDIM step x_t -> x_{t-1} (as `DDIMScheduler.step`) with the log-density of the transition.

    The transition is Gaussian: x_{t-1} ~ N(mean, std^2 I) with
    `mean = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - std^2) * eps_hat` and
    `std = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))` (Song et al., 2021). The log-density is
    averaged over the latent dimensions (as in DDPO), so ratios stay on a scale independent of resolution.

    Args:
        scheduler: a `DDIMScheduler` on which `set_timesteps` was called.
        model_output (`[B, C, h, w]`): UNet output (epsilon, v or sample, per `scheduler.config.prediction_type`).
        timestep: the current timestep, an int or a LongTensor `[B]` (one per sample).
        sample (`[B, C, h, w]`): x_t.
        eta: DDIM noise weight; must be > 0 for a proper density (1.0 = DDPM-like).
        prev_sample (`[B, C, h, w]`, *optional*): a recorded x_{t-1} to score instead of drawing one.
        generator / variance_noise: randomness for drawing x_{t-1} (one of them at most).

    Returns:
        `DDIMStepOutput` with `prev_sample`, `log_prob` `[B]`, `mean` and `std`.
    """
    if scheduler.num_inference_steps is None:
        raise ValueError(
            "Call `scheduler.set_timesteps(num_inference_steps)` before `ddim_step_with_logprob`."
        )
    if eta <= 0:
        raise ValueError(f"DDPO needs a stochastic sampler: eta must be > 0, got eta={eta}.")
    if generator is not None and variance_noise is not None:
        raise ValueError("Pass either `generator` or `variance_noise` to `ddim_step_with_logprob`, not both.")
    batch = sample.shape[0]
    device = sample.device
    timestep = torch.as_tensor(timestep, device=device, dtype=torch.long)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch)
    prev_timestep = timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps

    alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, device=device, dtype=torch.float32)
    alpha_t = alphas_cumprod[timestep]
    alpha_prev = torch.where(prev_timestep >= 0, alphas_cumprod[prev_timestep.clamp(min=0)], final)
    alpha_t, alpha_prev = _expand_as(alpha_t, sample), _expand_as(alpha_prev, sample)
    beta_t = 1 - alpha_t

    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        x0 = (sample - beta_t.sqrt() * model_output) / alpha_t.sqrt()
        eps = model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_t.sqrt() * x0) / beta_t.sqrt()
    elif prediction_type == "v_prediction":
        x0 = alpha_t.sqrt() * sample - beta_t.sqrt() * model_output
        eps = alpha_t.sqrt() * model_output + beta_t.sqrt() * sample
    else:
        raise ValueError(
            f"Unsupported scheduler prediction_type {prediction_type!r}; use 'epsilon', 'v_prediction' or 'sample'."
        )
    if scheduler.config.thresholding:
        x0 = scheduler._threshold_sample(x0)
    elif scheduler.config.clip_sample:
        x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)

    variance = (1 - alpha_prev) / beta_t * (1 - alpha_t / alpha_prev)
    std = eta * variance.clamp(min=1e-20).sqrt()
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp(min=0).sqrt() * eps

    if prev_sample is None:
        if variance_noise is None:
            variance_noise = randn_tensor(
                model_output.shape, generator=generator, device=device, dtype=model_output.dtype
            )
        prev_sample = mean + std * variance_noise

    log_prob = -((prev_sample.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    log_prob = log_prob.mean(dim=tuple(range(1, sample.ndim)))
    return DDIMStepOutput(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)


def encode_prompts(pipeline, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states `[B, L, D]` for `prompts`, with the pipeline's tokenizer (no guidance)."""
    device = pipeline.unet.device
    embeds, _ = pipeline.encode_prompt(
        list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    return embeds


def predict_noise(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """UNet output with classifier-free guidance in one batched forward.

    Args:
        unet: the (possibly LoRA-wrapped, possibly DDP-wrapped) UNet.
        latents (`[B, C, h, w]`): x_t (already scaled by `scheduler.scale_model_input`).
        timesteps (`[B]` or scalar): timesteps.
        prompt_embeds (`[B, L, D]`): conditional text embeddings.
        negative_prompt_embeds (`[B, L, D]` or `[1, L, D]`, *optional*): unconditional embeddings.
        guidance_scale: CFG weight w; guidance is skipped when w <= 1 or no negative embeddings are given.

    Returns:
        `[B, C, h, w]` guided output `uncond + w * (cond - uncond)`.
    """
    batch = latents.shape[0]
    timesteps = torch.as_tensor(timesteps, device=latents.device)
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(batch)
    if guidance_scale <= 1.0 or negative_prompt_embeds is None:
        return unet(latents, timesteps, encoder_hidden_states=prompt_embeds).sample
    negative = (
        negative_prompt_embeds.expand(batch, -1, -1)
        if negative_prompt_embeds.shape[0] == 1
        else negative_prompt_embeds
    )
    out = unet(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        encoder_hidden_states=torch.cat([negative, prompt_embeds]),
    ).sample
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def decode_latents(pipeline, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode `[B, C, h, w]` latents to `[B, 3, H, W]` images in [0, 1]."""
    vae = pipeline.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def sample_with_logprob(
    pipeline,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    decode: bool = True,
    unet: torch.nn.Module | None = None,
) -> DDPOSampleOutput:
    """Run the DDIM loop of a Stable Diffusion pipeline and record what DDPO needs.

    Args:
        pipeline: a diffusers Stable Diffusion pipeline whose scheduler is a `DDIMScheduler`.
        prompt_embeds (`[B, L, D]`): conditional embeddings (see `encode_prompts`).
        negative_prompt_embeds (`[1 or B, L, D]`, *optional*): unconditional embeddings for guidance.
        num_inference_steps: T, the number of DDIM steps.
        guidance_scale: CFG weight (guidance is batched into a single UNet pass per step).
        eta: DDIM noise weight (> 0).
        generator: seeds the initial noise and every transition.
        latents (`[B, C, h, w]`, *optional*): initial x_T.
        decode: decode x_0 with the VAE.
        unet: the UNet to call (defaults to `pipeline.unet`; pass the trainer's wrapped one under DDP).

    Returns:
        `DDPOSampleOutput(images, latents [B, T+1, C, h, w], log_probs [B, T], timesteps [T])`.
    """
    unet = unet if unet is not None else pipeline.unet
    scheduler = pipeline.scheduler
    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(
            f"DDPO needs a DDIMScheduler, the pipeline has {type(scheduler).__name__}; set "
            "`pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)`."
        )
    device = prompt_embeds.device
    batch = prompt_embeds.shape[0]
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    if latents is None:
        config = pipeline.unet.config
        shape = (batch, config.in_channels, config.sample_size, config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        latents = latents * scheduler.init_noise_sigma

    all_latents, all_log_probs = [latents], []
    for t in timesteps:
        model_in = scheduler.scale_model_input(latents, t)
        noise_pred = predict_noise(unet, model_in, t, prompt_embeds, negative_prompt_embeds, guidance_scale)
        step = ddim_step_with_logprob(scheduler, noise_pred, t, latents, eta=eta, generator=generator)
        latents = step.prev_sample
        all_latents.append(latents)
        all_log_probs.append(step.log_prob)
    images = decode_latents(pipeline, latents) if decode else None
    return DDPOSampleOutput(
        images=images,
        latents=torch.stack(all_latents, dim=1),
        log_probs=torch.stack(all_log_probs, dim=1),
        timesteps=timesteps.clone(),
    )


@contextlib.contextmanager
def merged_lora(unet: torch.nn.Module, enabled: bool = True):
    """Temporarily merge the PEFT LoRA adapters of `unet` into its weights (for fast sampling).

    PEFT's `unmerge` subtracts the delta again, which is not bit-exact; here the original weights are copied
    back instead, so the base model never drifts.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer) and not m.merged] if enabled else []
    saved = [
        {n: p.data.clone() for n, p in m.get_base_layer().named_parameters(recurse=False)} for m in layers
    ]
    try:
        for layer in layers:
            layer.merge()
        yield unet
    finally:
        for layer, params in zip(layers, saved):
            base = layer.get_base_layer()
            for name, value in params.items():
                getattr(base, name).data.copy_(value)
            layer.merged_adapters.clear()


def denoising_loss(
    pipeline,
    unet: torch.nn.Module,
    pixel_values: torch.Tensor,
    prompt_embeds: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The text-to-image training loss: MSE between the UNet output and its target at a random timestep.

    Args:
        pipeline: supplies `vae` and `scheduler` (any diffusers noise scheduler with `add_noise`).
        unet: the UNet being trained.
        pixel_values (`[B, 3, H, W]`): images in [0, 1].
        prompt_embeds (`[B, L, D]`): caption embeddings.
        generator: seeds the timesteps and the noise.

    Returns:
        A scalar loss (epsilon or v target, per `scheduler.config.prediction_type`).
    """
    vae, scheduler = pipeline.vae, pipeline.scheduler
    device = prompt_embeds.device
    with torch.no_grad():
        posterior = vae.encode((2 * pixel_values - 1).to(device=device, dtype=vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator).float() * vae.config.scaling_factor
    noise = torch.randn(
        latents.shape, generator=generator, device=generator.device if generator else "cpu"
    ).to(device)
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (latents.shape[0],),
        generator=generator,
        device=generator.device if generator else "cpu",
    ).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    elif scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = latents
    pred = unet(noisy, timesteps, encoder_hidden_states=prompt_embeds).sample
    return torch.nn.functional.mse_loss(pred.float(), target.float())
