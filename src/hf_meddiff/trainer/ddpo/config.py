"""Configuration of `MedDDPOTrainer` (DDPO on a diffusers Stable Diffusion pipeline)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MedDDPOConfig:
    r"""Configuration class for [`MedDDPOTrainer`].

    Fields are grouped: run, model / LoRA, sampling, training, advantages, supervised stage one. The DDPO
    schedule per epoch: sample `sample_num_batches_per_epoch` batches of `sample_batch_size` images (per
    process), score them, then run `train_num_inner_epochs` passes over them in minibatches of
    `train_batch_size`, stepping the optimiser once every `train_gradient_accumulation_steps` minibatches; each
    minibatch accumulates gradients over `round(train_timestep_fraction * sample_num_steps)` timesteps, batched
    `train_timesteps_per_forward` timesteps per UNet pass.

    Example:

    ```python
    >>> from hf_meddiff import MedDDPOConfig
    >>> config = MedDDPOConfig(num_epochs=2, sample_num_steps=10, sample_batch_size=4)
    >>> config.num_train_timesteps
    10
    ```
    """

    # > Run
    output_dir: str = field(
        default="ddpo-output", metadata={"help": "Where checkpoints, LoRA weights and logs go."}
    )
    run_name: str = field(default="meddiff-ddpo", metadata={"help": "Name of the run (used by trackers)."})
    seed: int = field(default=0, metadata={"help": "Seed for prompts, noise, timestep order and LoRA init."})
    num_epochs: int = field(default=100, metadata={"help": "Number of DDPO epochs (sample, then train)."})
    log_with: str | None = field(
        default=None, metadata={"help": "accelerate tracker: 'tensorboard', 'wandb', 'all' or None for none."}
    )
    logging_dir: str | None = field(
        default=None, metadata={"help": "Tracker directory (default output_dir/logs)."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16' (accelerate)."})
    save_freq: int = field(
        default=0, metadata={"help": "Save a checkpoint every this many epochs (0: never)."}
    )
    num_checkpoint_limit: int = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint directory to resume from, or 'latest' in output_dir."}
    )
    save_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or Ctrl-C finish the current epoch, save a checkpoint and stop (a second Ctrl-C "
            "stops at once)."
        },
    )

    # > Model / LoRA
    pretrained_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local path of the Stable Diffusion pipeline `hf-meddiff ddpo` trains (unset: the "
            "embedded tiny pipeline, built and trained on the recipe's data)."
        },
    )
    pretrained_revision: str | None = field(
        default=None, metadata={"help": "Revision of `pretrained_model`."}
    )
    use_lora: bool = field(
        default=True, metadata={"help": "Train LoRA adapters on the UNet (else the whole UNet)."}
    )
    lora_rank: int = field(default=4, metadata={"help": "LoRA rank r."})
    lora_alpha: float = field(default=4.0, metadata={"help": "LoRA alpha (scaling alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        metadata={"help": "UNet attention projections that get LoRA adapters."},
    )

    # > Sampling
    sample_num_steps: int = field(default=50, metadata={"help": "DDIM steps T per trajectory."})
    sample_eta: float = field(
        default=1.0, metadata={"help": "DDIM eta (> 0, the policy must be stochastic)."}
    )
    sample_guidance_scale: float = field(default=5.0, metadata={"help": "Classifier-free guidance weight."})
    sample_batch_size: int = field(default=8, metadata={"help": "Images per sampling batch (per process)."})
    sample_num_batches_per_epoch: int = field(default=2, metadata={"help": "Sampling batches per epoch."})
    negative_prompt: str = field(default="", metadata={"help": "Unconditional prompt used for guidance."})
    sample_merge_lora: bool = field(
        default=True,
        metadata={
            "help": "Merge the LoRA deltas into the UNet weights while sampling (faster; the base weights are "
            "restored bit-exactly afterwards). Log-probs then match the unmerged training forward to float "
            "rounding (~1e-7), far inside the PPO clip range."
        },
    )

    # > Training
    train_batch_size: int = field(
        default=8, metadata={"help": "Trajectories per training minibatch (per process)."}
    )
    train_learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate."})
    train_adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    train_adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    train_adam_weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    train_adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    train_max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping (0: off)."})
    train_num_inner_epochs: int = field(default=1, metadata={"help": "Passes over each epoch's samples."})
    train_gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Minibatches per optimiser step (on top of the timestep accumulation)."}
    )
    train_timestep_fraction: float = field(
        default=1.0,
        metadata={"help": "Fraction of the T timesteps (a random subset per trajectory) trained on."},
    )
    train_timesteps_per_forward: int = field(
        default=0,
        metadata={
            "help": "Timesteps stacked into one UNet forward/backward (0: all trained timesteps at once, 1: one "
            "at a time as in TRL). The gradient is the same; larger is faster and uses more memory."
        },
    )
    train_cfg: bool = field(
        default=True, metadata={"help": "Use classifier-free guidance in the training forward."}
    )
    train_clip_range: float = field(default=1e-4, metadata={"help": "PPO clip range epsilon for the ratio."})
    train_adv_clip_max: float = field(default=5.0, metadata={"help": "Clip advantages to [-max, max]."})

    # > Advantages
    per_prompt_stat_tracking: bool = field(
        default=True,
        metadata={"help": "Normalise rewards per prompt with a running tracker (else per batch)."},
    )
    per_prompt_stat_tracking_buffer_size: int = field(
        default=32, metadata={"help": "Rewards remembered per prompt by the tracker."}
    )
    per_prompt_stat_tracking_min_count: int = field(
        default=16, metadata={"help": "Below this many rewards for a prompt, use batch statistics."}
    )

    # > Stage one: supervised LoRA fine-tuning on image-caption pairs
    sft_num_steps: int = field(
        default=0, metadata={"help": "Supervised denoising steps before RL (0: skip)."}
    )
    sft_batch_size: int = field(default=16, metadata={"help": "Image-caption pairs per supervised step."})
    sft_learning_rate: float = field(
        default=1e-3, metadata={"help": "Learning rate of the supervised stage."}
    )
    sft_caption_dropout: float = field(
        default=0.1,
        metadata={"help": "Probability of replacing a caption by the empty prompt (keeps CFG working)."},
    )

    def __post_init__(self):
        problems = []
        positive = (
            "sample_num_steps",
            "sample_batch_size",
            "sample_num_batches_per_epoch",
            "train_batch_size",
            "train_num_inner_epochs",
            "train_gradient_accumulation_steps",
            "lora_rank",
            "per_prompt_stat_tracking_buffer_size",
            "sft_batch_size",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name}={value!r} must be a positive integer")
        for name in ("num_epochs", "save_freq", "sft_num_steps", "per_prompt_stat_tracking_min_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name}={value!r} must be an integer >= 0")
        for name in ("train_learning_rate", "sft_learning_rate", "train_clip_range", "train_adv_clip_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                problems.append(f"{name}={value!r} must be a positive number")
        if not 0 <= self.sft_caption_dropout < 1:
            problems.append(f"sft_caption_dropout={self.sft_caption_dropout} must be in [0, 1)")
        if problems:
            raise ValueError("Invalid MedDDPOConfig: " + "; ".join(problems) + ".")
        if self.sample_eta <= 0:
            problems.append(f"sample_eta={self.sample_eta} must be > 0 (DDPO needs a stochastic sampler)")
        if not 0 < self.train_timestep_fraction <= 1:
            problems.append(f"train_timestep_fraction={self.train_timestep_fraction} must be in (0, 1]")
        total = self.sample_batch_size * self.sample_num_batches_per_epoch
        if total % self.train_batch_size:
            problems.append(
                f"sample_batch_size * sample_num_batches_per_epoch = {total} must be a multiple of "
                f"train_batch_size={self.train_batch_size}"
            )
        if self.train_timesteps_per_forward < 0:
            problems.append(f"train_timesteps_per_forward={self.train_timesteps_per_forward} must be >= 0")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(f"mixed_precision={self.mixed_precision!r} must be 'no', 'fp16' or 'bf16'")
        if problems:
            raise ValueError("Invalid MedDDPOConfig: " + "; ".join(problems) + ".")

    @property
    def num_train_timesteps(self) -> int:
        """Timesteps trained per trajectory: `round(train_timestep_fraction * sample_num_steps)` (>= 1)."""
        return max(1, int(round(self.sample_num_steps * self.train_timestep_fraction)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MedDDPOConfig:
        """Build from a mapping, naming unknown keys (e.g. a typo in a YAML recipe)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown MedDDPOConfig field(s) {unknown}; valid fields are {sorted(names)}.")
        return cls(**values)
