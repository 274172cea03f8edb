# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MedDiff model configuration.

This file is copied into saved model folders by `register_for_auto_class`, so it imports only the standard
library, `transformers`, `huggingface_hub` and its sibling `tokens_meddiff`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from .tokens_meddiff import (
    BOS_TOKEN,
    DEFAULT_TOKEN_IDS,
    EOI_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    TASK_TOKENS,
    TASKS,
)

# Keys transformers reads or writes on any config besides the dataclass fields (saved config.json, legacy names).
_TRANSFORMERS_KEYS = frozenset(
    {
        "architectures",
        "attn_implementation",
        "auto_map",
        "experts_implementation",
        "model_type",
        "name_or_path",
        "num_labels",
        "output_attentions",
        "per_layer_config",
        "rope_scaling",
        "rope_theta",
        "partial_rotary_factor",
        "torch_dtype",
        "transformers_version",
        "use_cache",
    }
)
# Fields that must be positive integers.
_POSITIVE_SIZES = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "text_vocab_size",
    "image_codebook_size",
    "image_grid_size",
)

# The training tasks, in the order of `task_ids` (defined in tokens_meddiff, re-exported by hf_meddiff.constants).
MEDDIFF_TASKS = TASKS

# Named backbone sizes for `MedDiffConfig.from_preset`. The vocabulary fields are placeholders: real runs take
# them from the processor (`MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs())`).
MEDDIFF_PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a few thousand parameters per layer; every Linear has dims that are multiples of 64 so that
    # bitsandbytes NF4 (block size 64) quantises it.
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "text_vocab_size": 128,
        "image_codebook_size": 64,
        "image_grid_size": 4,
    },
    # The CPU demo: ~3.5M backbone parameters with GQA, trains usefully on 2 CPU cores in minutes on sequences
    # of 150-250 tokens (8x8 image grid + question + answer).
    "embedded": {
        "hidden_size": 256,
        "intermediate_size": 640,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "max_position_embeddings": 1024,
        "text_vocab_size": 1024,
        "image_codebook_size": 256,
        "image_grid_size": 8,
    },
}


@strict
class MedDiffConfig(PreTrainedConfig):
    r"""
    Configuration of a MedDiff discrete-diffusion multimodal model: a LLaMA-style **bidirectional** transformer
    over one unified vocabulary `[text tokens (specials first)][gap][image codebook]`.

    The backbone fields use the names of [`~transformers.LlamaConfig`]. The vocabulary layout is described in
    `docs/internals.md`: image token id = VQ code + `image_token_offset`, `vocab_size = image_token_offset +
    image_codebook_size` (or more, e.g. after `resize_token_embeddings`), `mask_token_id` is the text-side
    `<|mask|>` and never lies inside the codebook.

    Args:
        text_vocab_size (`int`): size of the text tokenizer, special tokens included.
        image_codebook_size (`int`): number of VQ codes.
        image_token_offset (`int`, *optional*): id of VQ code 0; defaults to `text_vocab_size`.
        vocab_size (`int`, *optional*): rows of the embedding matrix; defaults to
            `image_token_offset + image_codebook_size`.
        image_grid_size (`int`): one image is `image_grid_size ** 2` tokens, row-major.
        mask_token_id, pad_token_id, bos_token_id, eos_token_id, soi_token_id, eoi_token_id, mmu_token_id,
            t2i_token_id (`int`): ids of the special tokens; defaults from `tokens_meddiff.DEFAULT_TOKEN_IDS`.
        qk_norm, causal_attention, logits_shift (`bool`): for converted checkpoints (`hf-meddiff convert`):
            Qwen3's query/key norms, causal attention (only to compare with the source causal LM) and the
            Dream-style shift (the logits at position i come from the hidden state at i-1).
        task_loss_weights (`dict[str, float]`, *optional*): loss weight per task (`vqa`, `report`, `t2i`,
            `reasoning`); missing tasks weigh 1.0.
        text_noise_eps (`float`): the text mask ratio is drawn from `U(text_noise_eps, 1)`.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion

    >>> config = MedDiffConfig.from_preset("tiny")
    >>> config.vocab_size, config.image_token_offset, config.mask_token_id
    (192, 128, 4)
    >>> model = MedDiffForMaskedDiffusion(config)

    ```
    """

    model_type = "meddiff"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    # Backbone (LLaMA field names).
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: int | float = 0.0
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    # Converted checkpoints (hf_meddiff.models.meddiff.convert_*): off by default, i.e. the MedDiff architecture.
    qk_norm: bool = False  # per-head RMSNorm of queries and keys before RoPE (Qwen3)
    causal_attention: bool = (
        False  # causal instead of bidirectional attention (to check a converted causal LM)
    )
    logits_shift: bool = (
        False  # position i is predicted from hidden state i-1 (Dream / DiffuLLaMA adaptation)
    )

    # Unified vocabulary.
    text_vocab_size: int = 32000
    image_codebook_size: int = 8192
    image_token_offset: int | None = None
    vocab_size: int | None = None
    image_grid_size: int = 16
    mask_token_id: int = DEFAULT_TOKEN_IDS[MASK_TOKEN]
    pad_token_id: int | None = DEFAULT_TOKEN_IDS[PAD_TOKEN]
    bos_token_id: int | None = DEFAULT_TOKEN_IDS[BOS_TOKEN]
    eos_token_id: int | None = DEFAULT_TOKEN_IDS[EOS_TOKEN]
    soi_token_id: int = DEFAULT_TOKEN_IDS[SOI_TOKEN]
    eoi_token_id: int = DEFAULT_TOKEN_IDS[EOI_TOKEN]
    mmu_token_id: int = DEFAULT_TOKEN_IDS[TASK_TOKENS["mmu"]]
    t2i_token_id: int = DEFAULT_TOKEN_IDS[TASK_TOKENS["t2i"]]

    # Masked-diffusion training objective.
    task_loss_weights: dict[str, float] | None = None
    text_noise_eps: float = 1e-3

    def __post_init__(self, **kwargs):
        self._refuse_unknown_keys(kwargs)
        self._refuse_non_positive_sizes()
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.image_token_offset is None:
            self.image_token_offset = self.text_vocab_size
        if self.vocab_size is None:
            self.vocab_size = self.image_token_offset + self.image_codebook_size
        self.task_loss_weights = {task: 1.0 for task in MEDDIFF_TASKS} | {
            task: float(weight) for task, weight in (self.task_loss_weights or {}).items()
        }
        super().__post_init__(**kwargs)

    def _refuse_unknown_keys(self, kwargs: dict[str, Any]) -> None:
        """Keys that are neither MedDiff fields nor keys transformers itself reads or writes (`model_type`,
        `auto_map`, generation parameters, `_`-prefixed internals, ...): a typo, refused with the closest field."""
        from transformers import GenerationConfig

        known = {f.name for f in dataclasses.fields(self)} | _TRANSFORMERS_KEYS
        known |= set(GenerationConfig._get_default_generation_params())
        unknown = sorted(key for key in kwargs if not key.startswith("_") and key not in known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"MedDiffConfig got unknown field(s) {', '.join(hints)}; the fields are listed in the MedDiffConfig "
                "docstring (LLaMA names for the backbone)."
            )

    def _refuse_non_positive_sizes(self) -> None:
        """Sizes that must be positive integers (and the norm epsilon a positive number), named when they are not."""
        for name in _POSITIVE_SIZES:
            value = getattr(self, name)
            if value is None and name in ("num_key_value_heads", "head_dim"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MedDiffConfig.{name} must be a positive integer, got {value!r}.")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise ValueError(
                f"MedDiffConfig.rms_norm_eps must be a positive number, got {self.rms_norm_eps!r}."
            )
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range >= 0):
            raise ValueError(f"MedDiffConfig.initializer_range must be >= 0, got {self.initializer_range!r}.")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MedDiffConfig:
        """Builds a config from a named size (`"tiny"` for tests, `"embedded"` for the CPU demo).

        Example:

        ```python
        >>> config = MedDiffConfig.from_preset("embedded", text_vocab_size=700, image_codebook_size=512)
        >>> config.hidden_size, config.vocab_size
        (256, 1212)

        ```
        """
        if name not in MEDDIFF_PRESETS:
            raise ValueError(
                f"Unknown MedDiff preset {name!r}; choose one of {sorted(MEDDIFF_PRESETS)} or build "
                "`MedDiffConfig(...)` directly."
            )
        return cls(**(MEDDIFF_PRESETS[name] | overrides))

    @property
    def image_token_end(self) -> int:
        """One past the last image token id: image ids are `[image_token_offset, image_token_end)`."""
        return self.image_token_offset + self.image_codebook_size

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image, `image_grid_size ** 2`."""
        return self.image_grid_size**2

    def validate_architecture(self):
        """Part of `@strict`-powered validation: backbone shapes and the unified vocabulary layout."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"The hidden size ({self.hidden_size}) is not a multiple of the number of attention heads "
                f"({self.num_attention_heads}); pick num_attention_heads dividing hidden_size or set head_dim."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"The number of attention heads ({self.num_attention_heads}) is not a multiple of the number of "
                f"key/value heads ({self.num_key_value_heads}); pick num_key_value_heads dividing it."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotary position embeddings.")
        if self.text_vocab_size < 1 or self.image_codebook_size < 1 or self.image_grid_size < 1:
            raise ValueError(
                f"text_vocab_size ({self.text_vocab_size}), image_codebook_size ({self.image_codebook_size}) "
                f"and image_grid_size ({self.image_grid_size}) must all be positive."
            )
        if self.image_token_offset < self.text_vocab_size:
            raise ValueError(
                f"image_token_offset ({self.image_token_offset}) lies inside the text vocabulary "
                f"[0, {self.text_vocab_size}): image ids would collide with text ids. Set image_token_offset >= "
                f"text_vocab_size ({self.text_vocab_size}) or leave it unset."
            )
        if self.vocab_size < self.image_token_end:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) is smaller than image_token_offset + image_codebook_size "
                f"({self.image_token_offset} + {self.image_codebook_size} = {self.image_token_end}); leave "
                "vocab_size unset to derive it."
            )
        special_ids = {
            name: getattr(self, name)
            for name in (
                "mask_token_id",
                "pad_token_id",
                "bos_token_id",
                "eos_token_id",
                "soi_token_id",
                "eoi_token_id",
                "mmu_token_id",
                "t2i_token_id",
            )
            if getattr(self, name) is not None
        }
        for name, token_id in special_ids.items():
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"{name} ({token_id}) is outside the vocabulary [0, {self.vocab_size}); use the id the text "
                    "tokenizer gives the token."
                )
            if self.image_token_offset <= token_id < self.image_token_end:
                raise ValueError(
                    f"{name} ({token_id}) lies inside the image codebook range [{self.image_token_offset}, "
                    f"{self.image_token_end}); special tokens must be text-side ids below "
                    f"image_token_offset ({self.image_token_offset})."
                )
        for name, token_id in special_ids.items():
            if name != "mask_token_id" and token_id == self.mask_token_id:
                raise ValueError(
                    f"mask_token_id ({self.mask_token_id}) equals {name}; the diffusion [MASK] needs its own id."
                )
        if self.num_image_tokens >= self.max_position_embeddings:
            raise ValueError(
                f"One image is image_grid_size**2 = {self.num_image_tokens} tokens, which does not fit in "
                f"max_position_embeddings ({self.max_position_embeddings}); raise max_position_embeddings or "
                "lower image_grid_size."
            )
        unknown = sorted(set(self.task_loss_weights) - set(MEDDIFF_TASKS))
        if unknown:
            raise ValueError(
                f"task_loss_weights has unknown tasks {unknown}; known tasks are {MEDDIFF_TASKS}."
            )
        negative = {
            task: w for task, w in self.task_loss_weights.items() if not (w >= 0 and math.isfinite(w))
        }
        if negative:
            raise ValueError(f"task_loss_weights must be finite and >= 0, got {negative}.")
        if not 0.0 < self.text_noise_eps < 1.0:
            raise ValueError(f"text_noise_eps ({self.text_noise_eps}) must lie in (0, 1), e.g. 1e-3.")


__all__ = ["MedDiffConfig", "MEDDIFF_PRESETS", "MEDDIFF_TASKS"]
