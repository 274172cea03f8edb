"""`MedDDPOTrainer`: DDPO (Black et al., 2023) for any diffusers Stable Diffusion pipeline, with accelerate.
(Over 600 lines: the DDPO loop - sample, score, advantages, train, stage one, save / resume - reads top to bottom
in one class, as TRL's DDPOTrainer does.)

One epoch:

1. **Sample** trajectories with DDIM (eta > 0) and batched classifier-free guidance, recording latents,
   timesteps and the log-probability of every transition (`pipeline.sample_with_logprob`).
2. **Score** the decoded images with the reward callables (under `torch.no_grad`).
3. **Advantages**: rewards normalised per prompt by a running `PerPromptStatTracker` (batch statistics
   until a prompt has `per_prompt_stat_tracking_min_count` rewards), clipped to `train_adv_clip_max`.
4. **Train** the LoRA adapters of the UNet with the clipped importance-ratio objective over a random subset
   of timesteps per trajectory, accumulating gradients over timesteps (batched `train_timesteps_per_forward`
   timesteps per UNet pass) and over `train_gradient_accumulation_steps` minibatches.

Stage one (`train_supervised`) fine-tunes the same LoRA adapters with the usual text-to-image denoising loss
on image-caption pairs, so RL starts from a domain-adapted model.

Example:

```python
>>> from hf_meddiff import MedDDPOConfig, MedDDPOTrainer
>>> from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion
>>> pipe = build_tiny_stable_diffusion(seed=0)
>>> brightness = lambda images, prompts, **kw: images.mean(dim=(1, 2, 3)).tolist()
>>> config = MedDDPOConfig(num_epochs=1, sample_num_steps=4, sample_batch_size=2, train_batch_size=2,
...                        sample_num_batches_per_epoch=1, output_dir="/tmp/ddpo-doc")
>>> trainer = MedDDPOTrainer(config, pipe, brightness, prompts=["dermoscopy image: melanoma"])
>>> history = trainer.train()
>>> sorted(history[0])[:3]
['approx_kl', 'clipfrac', 'epoch']
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from diffusers import DDIMScheduler, StableDiffusionPipeline

from .config import MedDDPOConfig
from .pipeline import (
    ddim_step_with_logprob,
    decode_latents,
    denoising_loss,
    encode_prompts,
    merged_lora,
    predict_noise,
    sample_with_logprob,
)

logger = logging.getLogger(__name__)

__all__ = ["MedDDPOTrainer", "PerPromptStatTracker", "denoising_loss", "merged_lora"]

RewardFunc = Callable[..., Any]
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# Trainer state: tensors (optimiser moments, RNG state) in safetensors, everything else in JSON. Nothing is unpickled.
TRAINING_STATE_TENSORS = "training_state.safetensors"
TRAINING_STATE_JSON = "training_state.json"
LEGACY_TRAINING_STATE = "training_state.pt"  # a pickle written by older versions: refused, never loaded


def _flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser `state_dict` as (tensors for safetensors, a JSON-able rest). Tensor entries of the per-parameter
    state go to `optimizer.state.<param>.<name>`; param groups and non-tensor entries stay in the JSON part."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [dict(group) for group in state["param_groups"]]
    for group in groups:
        for key, value in group.items():
            if isinstance(value, tuple):
                group[key] = list(value)
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], rest: dict[str, Any], source: Path
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, value in tensors.items():
        if not key.startswith("optimizer.state."):
            continue
        index, _, name = key[len("optimizer.state.") :].partition(".")
        if not index.isdigit() or not name:
            raise ValueError(
                f"{source}: tensor {key!r} is not an optimiser entry `optimizer.state.<i>.<name>`."
            )
        state[int(index)][name] = value
    for index, entries in rest.get("scalars", {}).items():
        if not str(index).isdigit() or not isinstance(entries, dict):
            raise ValueError(f"{source}: field 'optimizer.scalars' has a malformed entry {index!r}.")
        state[int(index)].update(entries)
    groups = rest.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise ValueError(f"{source}: field 'optimizer.param_groups' must be a list of groups with 'params'.")
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": dict(state), "param_groups": groups}


class PerPromptStatTracker:
    """Running reward statistics per prompt, for DDPO's per-prompt advantage normalisation.

    For each prompt the last `buffer_size` rewards are kept. A prompt with fewer than `min_count` rewards is
    normalised with the statistics of the whole batch passed to `update`.

    Example:

    ```python
    >>> import numpy as np
    >>> tracker = PerPromptStatTracker(buffer_size=8, min_count=2)
    >>> tracker.update(["a", "a", "b"], np.array([1.0, 3.0, 5.0])).round(3).tolist()
    [-1.0, 1.0, 5.0]
    >>> tracker.get_stats()["a"]["mean"]
    2.0
    ```
    """

    def __init__(self, buffer_size: int = 32, min_count: int = 16, eps: float = 1e-6):
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.eps = eps
        self.buffers: dict[str, deque] = {}

    def update(self, prompts: Sequence[str], rewards: np.ndarray) -> np.ndarray:
        """Add `rewards` `[N]` of `prompts` to the buffers; return the normalised advantages `[N]`."""
        rewards = np.asarray(rewards, dtype=np.float64)
        prompts = np.asarray(list(prompts), dtype=object)
        if len(prompts) != len(rewards):
            raise ValueError(f"Got {len(prompts)} prompts but {len(rewards)} rewards.")
        advantages = np.empty_like(rewards)
        batch_mean, batch_std = rewards.mean(), rewards.std()
        for prompt in dict.fromkeys(prompts.tolist()):
            sel = prompts == prompt
            buffer = self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(rewards[sel].tolist())
            if len(buffer) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                mean, std = float(np.mean(buffer)), float(np.std(buffer))
            advantages[sel] = (rewards[sel] - mean) / (std + self.eps)
        return advantages

    def get_stats(self) -> dict[str, dict[str, float]]:
        """`{prompt: {"mean", "std", "count"}}` of the buffered rewards."""
        return {
            p: {"mean": float(np.mean(b)), "std": float(np.std(b)), "count": len(b)}
            for p, b in self.buffers.items()
        }

    def clear(self) -> None:
        self.buffers = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer_size": self.buffer_size,
            "min_count": self.min_count,
            "buffers": {p: list(b) for p, b in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_size, self.min_count = state["buffer_size"], state["min_count"]
        self.buffers = {p: deque(v, maxlen=self.buffer_size) for p, v in state["buffers"].items()}


def read_training_state(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The `(JSON state, tensors)` of a `MedDDPOTrainer` checkpoint folder, checked field by field.

    Only `training_state.json` and `training_state.safetensors` are read; neither format can run code. A folder
    that holds only the pickled `training_state.pt` of older versions is refused, never unpickled.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    json_file, tensor_file = directory / TRAINING_STATE_JSON, directory / TRAINING_STATE_TENSORS
    if not json_file.is_file() or not tensor_file.is_file():
        if (directory / LEGACY_TRAINING_STATE).is_file():
            raise ValueError(
                f"{directory} holds {LEGACY_TRAINING_STATE}, a pickle, and no {TRAINING_STATE_JSON} + "
                f"{TRAINING_STATE_TENSORS}. Pickles can run code when loaded, so MedDDPOTrainer does not read them: "
                "resume from a checkpoint written by this version, or start the run anew."
            )
        missing = [f.name for f in (json_file, tensor_file) if not f.is_file()]
        raise FileNotFoundError(
            f"{directory} is not a MedDDPOTrainer checkpoint folder: {', '.join(missing)} not found."
        )
    try:
        state = json.loads(json_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{json_file}: not valid JSON ({err}); the checkpoint is damaged.") from err
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{tensor_file}: not a safetensors file ({err}); the checkpoint is damaged."
        ) from err
    expected = {
        "epoch": int,
        "global_step": int,
        "optimizer": dict,
        "stat_tracker": dict,
        "history": list,
        "sft_losses": list,
    }
    if not isinstance(state, dict):
        raise ValueError(f"{json_file}: the top level must be an object with the fields {sorted(expected)}.")
    for name, kind in expected.items():
        if not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
            raise ValueError(
                f"{json_file}: field {name!r} must be a {kind.__name__}, got {type(state.get(name)).__name__}."
            )
    tracker = state["stat_tracker"]
    if not isinstance(tracker.get("buffers"), dict) or not all(
        isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
        for v in tracker["buffers"].values()
    ):
        raise ValueError(f"{json_file}: field 'stat_tracker.buffers' must map prompts to lists of numbers.")
    generator = tensors.get("generator")
    if generator is None or generator.dtype != torch.uint8:
        raise ValueError(
            f"{tensor_file}: tensor 'generator' (the RNG state, uint8) is missing or has the wrong type."
        )
    return state, tensors


class MedDDPOTrainer:
    """DDPO trainer for a diffusers Stable Diffusion pipeline (see the module docstring for the algorithm).

    Args:
        config: a `MedDDPOConfig`.
        pipeline: a `StableDiffusionPipeline` (from `from_pretrained` or built from components), or a Hub id /
            path. Its scheduler is replaced by a `DDIMScheduler` with the same config when it is not one.
        reward_funcs: a callable or list of callables `f(images, prompts, **metadata) -> list[float]` where
            `images` is `[B, 3, H, W]` in [0, 1]. See `hf_meddiff.rewards.image_rewards` for model-based ones.
        prompts: the prompts to sample from: a list of strings, a list of dicts with a `"prompt"` key whose
            other keys are passed to the rewards as metadata (e.g. `attributes`, `boxes`), or a callable
            `f(generator) -> (prompt, metadata)`.
        reward_weights: one weight per reward function (default 1 each); the reward is the weighted sum.
        accelerator: an existing `Accelerator` (a new one is made from `config` otherwise).
    """

    def __init__(
        self,
        config: MedDDPOConfig,
        pipeline: StableDiffusionPipeline | str,
        reward_funcs: RewardFunc | Sequence[RewardFunc],
        prompts: Sequence[str]
        | Sequence[dict[str, Any]]
        | Callable[[torch.Generator], tuple[str, dict]]
        | None = None,
        reward_weights: Sequence[float] | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        if accelerator is None:
            logging_dir = config.logging_dir or os.path.join(config.output_dir, "logs")
            accelerator = Accelerator(
                mixed_precision=config.mixed_precision,
                log_with=config.log_with,
                project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=logging_dir),
            )
        self.accelerator = accelerator
        if config.log_with:
            self.accelerator.init_trackers(config.run_name, config=config.to_dict())
        set_seed(config.seed)

        if isinstance(pipeline, str):
            pipeline = StableDiffusionPipeline.from_pretrained(pipeline, revision=config.pretrained_revision)
        if not isinstance(pipeline.scheduler, DDIMScheduler):
            pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
        pipeline.set_progress_bar_config(disable=True)
        if getattr(pipeline, "safety_checker", None) is not None:
            pipeline.safety_checker = None
        self.pipeline = pipeline.to(self.accelerator.device)

        self.reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not self.reward_funcs:
            raise ValueError("MedDDPOTrainer needs at least one reward function.")
        self.reward_weights = (
            list(reward_weights) if reward_weights is not None else [1.0] * len(self.reward_funcs)
        )
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"Got {len(self.reward_weights)} reward_weights for {len(self.reward_funcs)} reward functions."
            )
        self.prompts = prompts
        if prompts is None or (not callable(prompts) and len(prompts) == 0):
            raise ValueError(
                "MedDDPOTrainer needs prompts: a non-empty list of strings / dicts, or a callable."
            )

        self._setup_model()
        self.generator = torch.Generator().manual_seed(config.seed + self.accelerator.process_index)
        self.stat_tracker = PerPromptStatTracker(
            config.per_prompt_stat_tracking_buffer_size, config.per_prompt_stat_tracking_min_count
        )
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.sft_losses: list[float] = []
        self.stopped_by_signal: int | None = None
        with torch.no_grad():
            self._negative_embeds = encode_prompts(self.pipeline, [config.negative_prompt])

    # ----------------------------------------------------------------------------------------- setup

    def _setup_model(self) -> None:
        config, pipe = self.config, self.pipeline
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        unet = pipe.unet
        if config.use_lora:
            from peft import LoraConfig

            unet.requires_grad_(False)
            if "default" not in getattr(unet, "peft_config", {}):
                unet.add_adapter(
                    LoraConfig(
                        r=config.lora_rank,
                        lora_alpha=config.lora_alpha,
                        lora_dropout=config.lora_dropout,
                        init_lora_weights="gaussian",
                        target_modules=list(config.lora_target_modules),
                    )
                )
            for name, param in unet.named_parameters():
                param.requires_grad_("lora_" in name)
        else:
            unet.requires_grad_(True)
        self.trainable_parameters = [p for p in unet.parameters() if p.requires_grad]
        if not self.trainable_parameters:
            raise ValueError(
                f"No trainable UNet parameters: lora_target_modules={config.lora_target_modules} matched nothing."
            )
        optimizer = torch.optim.AdamW(
            self.trainable_parameters,
            lr=config.train_learning_rate,
            betas=(config.train_adam_beta1, config.train_adam_beta2),
            weight_decay=config.train_adam_weight_decay,
            eps=config.train_adam_epsilon,
        )
        self.unet, self.optimizer = self.accelerator.prepare(unet, optimizer)

    @property
    def unwrapped_unet(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.unet)

    # ------------------------------------------------------------------------------------- prompts

    def _next_prompts(self, n: int) -> tuple[list[str], dict[str, list[Any]]]:
        prompts, metadata = [], defaultdict(list)
        for _ in range(n):
            if callable(self.prompts):
                prompt, meta = self.prompts(self.generator)
            else:
                item = self.prompts[int(torch.randint(len(self.prompts), (1,), generator=self.generator))]
                prompt, meta = (
                    (item, {})
                    if isinstance(item, str)
                    else (item["prompt"], {k: v for k, v in item.items() if k != "prompt"})
                )
            prompts.append(prompt)
            for key, value in meta.items():
                metadata[key].append(value)
        return prompts, dict(metadata)

    # ------------------------------------------------------------------------------------ rewards

    @torch.no_grad()
    def compute_rewards(
        self, images: torch.Tensor, prompts: list[str], metadata: dict[str, list[Any]] | None = None
    ) -> torch.Tensor:
        """Weighted sum of the reward functions, `[B]` float32 on CPU."""
        total = torch.zeros(len(prompts))
        for func, weight in zip(self.reward_funcs, self.reward_weights):
            values = func(images, prompts, **(metadata or {}))
            values = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)
            if values.numel() != len(prompts):
                name = getattr(func, "__name__", type(func).__name__)
                raise ValueError(f"Reward {name} returned {values.numel()} values for {len(prompts)} images.")
            total += weight * values
        return total

    def compute_advantages(self, prompts: list[str], rewards: torch.Tensor) -> torch.Tensor:
        """Advantages `[N_local]` from rewards gathered over processes (per-prompt or batch normalisation)."""
        all_rewards = self.accelerator.gather(rewards.to(self.accelerator.device)).cpu().numpy()
        all_prompts = gather_object(list(prompts)) if self.accelerator.num_processes > 1 else list(prompts)
        if self.config.per_prompt_stat_tracking:
            advantages = self.stat_tracker.update(all_prompts, all_rewards)
        else:
            advantages = (all_rewards - all_rewards.mean()) / (all_rewards.std() + 1e-6)
        n = len(prompts)
        start = self.accelerator.process_index * n
        return torch.as_tensor(advantages[start : start + n], dtype=torch.float32)

    # ----------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self) -> dict[str, Any]:
        """Sample `sample_num_batches_per_epoch` batches; return trajectories, rewards and prompts."""
        config = self.config
        self.unet.eval()
        batches = []
        for _ in range(config.sample_num_batches_per_epoch):
            prompts, metadata = self._next_prompts(config.sample_batch_size)
            embeds = encode_prompts(self.pipeline, prompts)
            with merged_lora(self.unwrapped_unet, config.use_lora and config.sample_merge_lora):
                out = sample_with_logprob(
                    self.pipeline,
                    embeds,
                    self._negative_embeds,
                    num_inference_steps=config.sample_num_steps,
                    guidance_scale=config.sample_guidance_scale,
                    eta=config.sample_eta,
                    generator=self.generator,
                    unet=self.unwrapped_unet,
                )
            rewards = self.compute_rewards(out.images, prompts, metadata)
            batches.append(
                {
                    "prompt_embeds": embeds,
                    "latents": out.latents,
                    "log_probs": out.log_probs,
                    "timesteps": out.timesteps,
                    "rewards": rewards,
                    "prompts": prompts,
                    "images": out.images,
                }
            )
        samples = {
            k: torch.cat([b[k] for b in batches])
            for k in ("prompt_embeds", "latents", "log_probs", "rewards", "images")
        }
        samples["timesteps"] = batches[0]["timesteps"]
        samples["prompts"] = [p for b in batches for p in b["prompts"]]
        return samples

    # ----------------------------------------------------------------------------------- training

    def _loss_on_timesteps(
        self,
        latents: torch.Tensor,
        next_latents: torch.Tensor,
        old_log_probs: torch.Tensor,
        timesteps: torch.Tensor,
        prompt_embeds: torch.Tensor,
        advantages: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped DDPO loss on a flat batch of (trajectory, timestep) pairs `[M, …]`; returns (loss, stats)."""
        config = self.config
        scheduler = self.pipeline.scheduler
        model_in = scheduler.scale_model_input(latents, timesteps)
        guidance = config.sample_guidance_scale if config.train_cfg else 1.0
        with self.accelerator.autocast():
            noise_pred = predict_noise(
                self.unet, model_in, timesteps, prompt_embeds, self._negative_embeds, guidance
            )
        step = ddim_step_with_logprob(
            scheduler, noise_pred.float(), timesteps, latents, eta=config.sample_eta, prev_sample=next_latents
        )
        advantages = advantages.clamp(-config.train_adv_clip_max, config.train_adv_clip_max)
        ratio = torch.exp(step.log_prob - old_log_probs)
        unclipped = -advantages * ratio
        clipped = -advantages * ratio.clamp(1.0 - config.train_clip_range, 1.0 + config.train_clip_range)
        loss = torch.maximum(unclipped, clipped).mean()
        stats = {
            "approx_kl": 0.5 * ((step.log_prob - old_log_probs) ** 2).mean().detach(),
            "clipfrac": ((ratio - 1.0).abs() > config.train_clip_range).float().mean().detach(),
            "ratio": ratio.mean().detach(),
        }
        return loss, stats

    def train_on_samples(self, samples: dict[str, Any], advantages: torch.Tensor) -> dict[str, float]:
        """The inner epochs of DDPO on one epoch's samples; returns mean loss / approx_kl / clipfrac / ratio."""
        config = self.config
        device = self.accelerator.device
        n, num_steps = samples["log_probs"].shape
        k = min(config.num_train_timesteps, num_steps)
        chunk = config.train_timesteps_per_forward or k
        timesteps_all = samples["timesteps"].to(device)
        accumulated: dict[str, list[float]] = defaultdict(list)
        self.unet.train()
        num_minibatches = n // config.train_batch_size
        for _ in range(config.train_num_inner_epochs):
            order = torch.randperm(n, generator=self.generator)
            step_order = torch.stack(
                [torch.randperm(num_steps, generator=self.generator)[:k] for _ in range(n)]
            )
            for mb in range(num_minibatches):
                idx = order[mb * config.train_batch_size : (mb + 1) * config.train_batch_size]
                rows = torch.arange(len(idx))
                latents = samples["latents"][idx].to(device)
                old_lp = samples["log_probs"][idx].to(device)
                embeds = samples["prompt_embeds"][idx].to(device)
                adv = advantages[idx].to(device)
                group_end = (
                    mb + 1
                ) % config.train_gradient_accumulation_steps == 0 or mb == num_minibatches - 1
                for start in range(0, k, chunk):
                    cols = step_order[idx, start : start + chunk]  # [b, c] timestep indices
                    c = cols.shape[1]
                    flat_rows = rows[:, None].expand(-1, c).reshape(-1)
                    flat_cols = cols.reshape(-1)
                    sync = group_end and start + chunk >= k
                    ctx = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.unet)
                    with ctx:
                        loss, stats = self._loss_on_timesteps(
                            latents[flat_rows, flat_cols],
                            latents[flat_rows, flat_cols + 1],
                            old_lp[flat_rows, flat_cols],
                            timesteps_all[flat_cols.to(device)],
                            embeds[flat_rows],
                            adv[flat_rows],
                        )
                        scale = c / k / config.train_gradient_accumulation_steps
                        self.accelerator.backward(loss * scale)
                    accumulated["loss"].append(loss.item())
                    for key, value in stats.items():
                        accumulated[key].append(value.item())
                if group_end:
                    if config.train_max_grad_norm > 0:
                        self.accelerator.clip_grad_norm_(
                            self.trainable_parameters, config.train_max_grad_norm
                        )
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.global_step += 1
        self.unet.eval()
        return {key: float(np.mean(values)) for key, values in accumulated.items()}

    def step(self) -> dict[str, float]:
        """One DDPO epoch: sample, score, compute advantages, train. Returns the epoch's statistics."""
        t0 = time.perf_counter()
        samples = self.sample()
        t1 = time.perf_counter()
        advantages = self.compute_advantages(samples["prompts"], samples["rewards"])
        train_stats = self.train_on_samples(samples, advantages)
        t2 = time.perf_counter()
        rewards = self.accelerator.gather(samples["rewards"].to(self.accelerator.device)).cpu()
        stats = {
            "epoch": self.epoch,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "sample_time_s": t1 - t0,
            "train_time_s": t2 - t1,
            "samples_per_s": rewards.numel() / max(t1 - t0, 1e-9),
            **train_stats,
        }
        self.history.append(stats)
        self.accelerator.log(stats, step=self.epoch)
        self.epoch += 1
        return stats

    def train(self, num_epochs: int | None = None, progress: bool = True) -> list[dict[str, float]]:
        """Run DDPO until `num_epochs` (default `config.num_epochs`) epochs are done, resuming if configured.

        With `config.save_on_signal`, SIGTERM or Ctrl-C (SIGINT) ends training after the current epoch with a
        checkpoint (`stopped_by_signal` then holds the signal); a second Ctrl-C stops at once. `progress` shows a
        progress bar on the main process (log lines are written above it)."""
        from tqdm.auto import tqdm

        from ..common import received_signals

        config = self.config
        self.stopped_by_signal = None
        if config.resume_from_checkpoint:
            self.load_checkpoint(self._resolve_checkpoint(config.resume_from_checkpoint))
        num_epochs = config.num_epochs if num_epochs is None else num_epochs
        signals = received_signals() if config.save_on_signal else contextlib.nullcontext([])
        bar = tqdm(
            total=num_epochs,
            initial=min(self.epoch, num_epochs),
            desc="DDPO epochs",
            unit="epoch",
            disable=not progress or not self.accelerator.is_main_process,
            dynamic_ncols=True,
        )
        with signals as received, bar:
            while self.epoch < num_epochs:
                stats = self.step()
                bar.update(1)
                bar.set_postfix(reward=f"{stats['reward_mean']:.4f}", kl=f"{stats['approx_kl']:.1e}")
                message = (
                    f"epoch {stats['epoch']}: reward {stats['reward_mean']:.4f} (±{stats['reward_std']:.4f}), "
                    f"kl {stats['approx_kl']:.2e}"
                )
                logger.info(message)  # `hf-meddiff ddpo` writes log lines above the bar (tqdm.write)
                if self._signal_received(received):
                    path = self.save_checkpoint()
                    logger.warning(
                        "Stopped by %s after epoch %d: checkpoint in %s. Resume with "
                        "`--resume_from_checkpoint latest`.",
                        signal.Signals(self.stopped_by_signal).name,
                        self.epoch,
                        path,
                    )
                    break
                if config.save_freq and self.epoch % config.save_freq == 0:
                    self.save_checkpoint()
        self.accelerator.wait_for_everyone()
        return self.history

    def _signal_received(self, received: list[int]) -> bool:
        """Whether any process received a stop signal (all processes agree, so they stop at the same epoch)."""
        flag = torch.tensor([float(received[0]) if received else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="max")
        if float(flag) > 0:
            self.stopped_by_signal = int(float(flag))
            return True
        return False

    # --------------------------------------------------------------------------- stage one: supervised

    def train_supervised(
        self,
        images: torch.Tensor,
        captions: Sequence[str],
        num_steps: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        progress: bool = False,
    ) -> list[float]:
        """Stage one: fine-tune the trainable UNet parameters (the LoRA adapters) on image-caption pairs.

        Args:
            images (`[N, 3, H, W]`): images in [0, 1] at the pipeline's resolution
                (`hf_meddiff.trainer.ddpo.tiny.images_to_tensor` converts PIL images).
            captions: N captions.
            num_steps / batch_size / learning_rate: default to the `sft_*` fields of the config.
            progress: show a progress bar (main process).

        Returns:
            The per-step losses.
        """
        config = self.config
        if len(images) != len(captions):
            raise ValueError(f"train_supervised got {len(images)} images but {len(captions)} captions.")
        num_steps = config.sft_num_steps if num_steps is None else num_steps
        batch_size = min(config.sft_batch_size if batch_size is None else batch_size, len(images))
        optimizer = torch.optim.AdamW(
            self.trainable_parameters, lr=learning_rate or config.sft_learning_rate, weight_decay=1e-4
        )
        optimizer = self.accelerator.prepare_optimizer(optimizer)
        from tqdm.auto import tqdm

        losses = []
        self.unet.train()
        bar = tqdm(
            range(num_steps),
            desc="Stage one (supervised LoRA)",
            unit="step",
            disable=not progress or not self.accelerator.is_main_process,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        for step in bar:
            idx = torch.randint(len(images), (batch_size,), generator=self.generator)
            batch_captions = [
                config.negative_prompt
                if torch.rand((), generator=self.generator) < config.sft_caption_dropout
                else captions[i]
                for i in idx.tolist()
            ]
            with torch.no_grad():
                embeds = encode_prompts(self.pipeline, batch_captions)
            with self.accelerator.autocast():
                loss = denoising_loss(
                    self.pipeline, self.unet, images[idx].to(self.accelerator.device), embeds, self.generator
                )
            self.accelerator.backward(loss)
            if config.train_max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(self.trainable_parameters, config.train_max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        self.unet.eval()
        self.sft_losses.extend(losses)
        return losses

    # ------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seed: int = 0,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
    ) -> torch.Tensor:
        """Images `[B, 3, H, W]` in [0, 1] for `prompts` with a fixed seed (for before/after comparisons)."""
        config = self.config
        generator = torch.Generator().manual_seed(seed)
        with merged_lora(self.unwrapped_unet, config.use_lora and config.sample_merge_lora):
            out = sample_with_logprob(
                self.pipeline,
                encode_prompts(self.pipeline, list(prompts)),
                self._negative_embeds,
                num_inference_steps=num_inference_steps or config.sample_num_steps,
                guidance_scale=config.sample_guidance_scale if guidance_scale is None else guidance_scale,
                eta=config.sample_eta if eta is None else eta,
                generator=generator,
                decode=False,
                unet=self.unwrapped_unet,
            )
        return decode_latents(self.pipeline, out.latents[:, -1])

    # ---------------------------------------------------------------------------- save / resume

    def save_lora_weights(self, save_directory: str | os.PathLike) -> None:
        """Save the UNet LoRA adapters in diffusers' format (`pipe.load_lora_weights(dir)` reloads them)."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        unet = self.unwrapped_unet
        if not self.config.use_lora:
            raise ValueError(
                "save_lora_weights needs use_lora=True; with full training use `save_pretrained`."
            )
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionPipeline.save_lora_weights(
            save_directory, unet_lora_layers=state, is_main_process=self.accelerator.is_main_process
        )

    def load_lora_weights(self, directory: str | os.PathLike) -> None:
        """Load LoRA weights saved by `save_lora_weights` into the trainable adapter (for resuming)."""
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict

        state, _ = StableDiffusionPipeline.lora_state_dict(directory, weight_name=LORA_WEIGHT_NAME)
        unet_state = {k[len("unet.") :]: v for k, v in state.items() if k.startswith("unet.")}
        result = set_peft_model_state_dict(
            self.unwrapped_unet, convert_unet_state_dict_to_peft(unet_state), adapter_name="default"
        )
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(
                f"LoRA weights in {directory} do not match the UNet adapters: unexpected keys {unexpected[:5]}."
            )

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Save the LoRA adapters (or, without LoRA, the whole pipeline)."""
        if self.config.use_lora:
            self.save_lora_weights(save_directory)
        elif self.accelerator.is_main_process:
            self.pipeline.save_pretrained(save_directory)

    def save_checkpoint(self, directory: str | os.PathLike | None = None) -> Path:
        """Save everything needed to resume: weights, optimiser, RNG, tracker, counters and history."""
        directory = Path(directory or Path(self.config.output_dir) / f"checkpoint-{self.epoch}")
        directory.mkdir(parents=True, exist_ok=True)
        if self.config.use_lora:
            self.save_lora_weights(directory)
        elif self.accelerator.is_main_process:
            self.unwrapped_unet.save_pretrained(directory / "unet")
        if self.accelerator.is_main_process:
            tensors, optimizer_rest = _flatten_optimizer_state(self.optimizer.state_dict())
            tensors["generator"] = self.generator.get_state()
            state = {
                "format": 1,
                "epoch": self.epoch,
                "global_step": self.global_step,
                "optimizer": optimizer_rest,
                "stat_tracker": self.stat_tracker.state_dict(),
                "history": self.history,
                "sft_losses": self.sft_losses,
            }
            from safetensors.torch import save_file

            save_file(tensors, str(directory / TRAINING_STATE_TENSORS))
            (directory / TRAINING_STATE_JSON).write_text(json.dumps(state, indent=1), encoding="utf-8")
            (directory / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return directory

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Restore a checkpoint written by `save_checkpoint` (safetensors + JSON; a pickled state is refused)."""
        directory = Path(directory)
        state, tensors = read_training_state(directory)
        if self.config.use_lora:
            self.load_lora_weights(directory)
        else:
            from diffusers import UNet2DConditionModel

            loaded = UNet2DConditionModel.from_pretrained(directory / "unet")
            self.unwrapped_unet.load_state_dict(loaded.state_dict())
        source = directory / TRAINING_STATE_JSON
        try:
            self.optimizer.load_state_dict(
                _unflatten_optimizer_state(tensors, state["optimizer"], directory / TRAINING_STATE_TENSORS)
            )
        except (KeyError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{directory}: the optimiser state does not fit this trainer's parameters ({err}); resume with the "
                "same use_lora / lora_rank / lora_target_modules as the run that wrote it."
            ) from err
        self.generator.set_state(tensors["generator"])
        self.stat_tracker.load_state_dict(state["stat_tracker"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.history, self.sft_losses = list(state["history"]), list(state["sft_losses"])
        logger.info(
            "Resumed from %s (epoch %d, step %d; state read from %s).",
            directory,
            self.epoch,
            self.global_step,
            source,
        )

    def _resolve_checkpoint(self, value: str) -> Path:
        if value != "latest":
            return Path(value)
        checkpoints = self._checkpoints()
        if not checkpoints:
            raise FileNotFoundError(
                f"resume_from_checkpoint='latest' but {self.config.output_dir} has no checkpoint-* directory."
            )
        return checkpoints[-1]

    def _checkpoints(self) -> list[Path]:
        root = Path(self.config.output_dir)
        found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def _prune_checkpoints(self) -> None:
        limit = self.config.num_checkpoint_limit
        if limit and limit > 0:
            for old in self._checkpoints()[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
