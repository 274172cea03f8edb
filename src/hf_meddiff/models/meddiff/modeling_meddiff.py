# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""MedDiff: a LLaMA-style bidirectional transformer trained as a masked-diffusion model over text and image tokens.

Reads top to bottom like `transformers/models/llama/modeling_llama.py`: RMSNorm -> rotary embedding -> SwiGLU MLP
-> attention -> decoder layer -> cache -> model -> masked-diffusion head. The differences from LLaMA are that
attention is bidirectional (`is_causal = False`, key-padding mask only), that the head computes the
masked-diffusion loss of `docs/internals.md`, and that the KV cache can splice a block into the middle of the
sequence (the fast sampler's block cache).

This file is copied into saved model folders by `register_for_auto_class`, so it imports only `torch`,
`transformers`, the standard library and its sibling modules.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, can_return_tuple, logging

from .configuration_meddiff import MEDDIFF_TASKS, MedDiffConfig
from .generation_meddiff import MedDiffGenerationMixin

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------- input guards
def _tracing() -> bool:
    """Under torch.compile / torch.jit / torch.fx tracing, where data-dependent checks must not run."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if compiling is not None and compiling():
        return True
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    try:
        from torch.fx._symbolic_trace import is_fx_tracing

        return is_fx_tracing()
    except ImportError:  # pragma: no cover - older torch
        return False


def check_token_ids(
    ids: torch.Tensor, vocab_size: int, name: str = "input_ids", ignore_index: int | None = None
):
    """A `ValueError` naming the first id of `ids` outside `[0, vocab_size)` (`ignore_index` allowed), or an empty
    `ids`. One min/max reduction and one host transfer; nothing under tracing.

    Example:

    ```python
    >>> check_token_ids(torch.tensor([[1, 2, 700]]), 512)
    Traceback (most recent call last):
    ...
    ValueError: input_ids holds id 700 at row 0, position 2, outside the vocabulary [0, 512): ...
    ```
    """
    if ids.dim() == 0 or ids.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(ids.shape)}): give at least one sequence with at least one token."
        )
    if _tracing():
        return
    values = ids if ignore_index is None else ids.masked_fill(ids == ignore_index, 0)
    low, high = torch.stack(torch.aminmax(values)).tolist()
    if low >= 0 and high < vocab_size:
        return
    bad = ((values < 0) | (values >= vocab_size)).nonzero()[0].tolist()
    value = int(values[tuple(bad)])
    where = f"row {bad[0]}, position {bad[1]}" if len(bad) == 2 else f"index {tuple(bad)}"
    raise ValueError(
        f"{name} holds id {value} at {where}, outside the vocabulary [0, {vocab_size}): "
        + (
            "labels are token ids or -100 (ignored)."
            if ignore_index is not None
            else "the ids come from another tokenizer or model; encode with this model's processor (or resize the "
            "embeddings with `resize_token_embeddings`)."
        )
    )


class MedDiffRMSNorm(nn.Module):
    """Root-mean-square layer norm (LLaMA / T5), computed in float32."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class MedDiffRotaryEmbedding(nn.Module):
    """Rotary position embedding; `forward(x, position_ids [B, L])` returns `(cos, sin)`, each `[B, L, head_dim]`."""

    def __init__(self, config: MedDiffConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config

        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)

        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: MedDiffConfig, **kwargs) -> tuple[torch.Tensor, float]:
        """Inverse frequencies `base ** (-2i / head_dim)` of the original RoPE, and a scaling of 1."""
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates `q` `[B, H, L, D]` and `k` `[B, H_kv, L, D]` by the angles in `cos`/`sin` `[B, L, D]`."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class MedDiffMLP(nn.Module):
    """SwiGLU feed-forward: `down_proj(act(gate_proj(x)) * up_proj(x))`."""

    def __init__(self, config: MedDiffConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`[B, H_kv, L, D]` -> `[B, H_kv * n_rep, L, D]`, i.e. `torch.repeat_interleave(x, n_rep, dim=1)`."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; `attention_mask` is additive, `[B, 1, L_q, L_k]`. Returns `[B, L_q, H, D]`."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MedDiffAttention(nn.Module):
    """Bidirectional multi-head attention with grouped key/value heads and rotary positions."""

    def __init__(self, config: MedDiffConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = bool(getattr(config, "causal_attention", False))

        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_bias
        )
        if getattr(config, "qk_norm", False):  # Qwen3: RMSNorm over each head's queries and keys
            self.q_norm = MedDiffRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = MedDiffRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: MedDiffCache | None = None,
        cache_start: int = 0,
        update_cache: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape)
        key_states = self.k_proj(hidden_states).view(hidden_shape)
        if hasattr(self, "q_norm"):
            query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
        query_states, key_states = query_states.transpose(1, 2), key_states.transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.splice(
                key_states, value_states, self.layer_idx, start=cache_start, write=update_cache
            )

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class MedDiffDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))`."""

    def __init__(self, config: MedDiffConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = MedDiffAttention(config=config, layer_idx=layer_idx)
        self.mlp = MedDiffMLP(config)
        self.input_layernorm = MedDiffRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MedDiffRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: MedDiffCache | None = None,
        cache_start: int = 0,
        update_cache: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states=hidden_states,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            cache_start=cache_start,
            update_cache=update_cache,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, attn_weights


class MedDiffCache:
    """Per-layer post-RoPE keys and values of every position, for the fast (block-cached) diffusion sampler.

    Unlike an autoregressive cache, a diffusion step may recompute a block in the *middle* of the sequence:
    a forward with `cache_start=s` and inputs of positions `[s, e)` attends over keys
    `cache[:s] ++ new ++ cache[e:]`. Keys are `[B, num_key_value_heads, L, head_dim]`. (With flash attention
    and padding, the recomputed block must be padding-free, e.g. the generation region of left-padded prompts.)

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    >>> model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
    >>> ids = torch.randint(11, 128, (1, 12))
    >>> cache = model(ids, use_cache=True).cache
    >>> cache.get_seq_length()
    12
    >>> block = model(ids[:, 4:8], cache=cache, cache_start=4).logits  # same as the full logits[:, 4:8]

    ```
    """

    def __init__(self) -> None:
        self.key_cache: list[torch.Tensor] = []
        self.value_cache: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.key_cache)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of cached positions (0 when empty)."""
        return self.key_cache[layer_idx].shape[-2] if len(self.key_cache) > layer_idx else 0

    def splice(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        start: int = 0,
        write: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values `cache[:start] ++ new ++ cache[start + n:]` for layer `layer_idx`; stored back if `write`.

        An empty layer is filled with the new keys/values (the `use_cache=True` full forward). Without autograd
        a block inside the cached length is always written in place (the sampler recomputes a block before it
        reads it again, so `write=False` then only matters under autograd or past the cached length).
        """
        if layer_idx == len(self.key_cache):
            if start != 0:
                raise ValueError(
                    f"MedDiffCache layer {layer_idx} is empty but cache_start={start}; fill the cache with a full "
                    "forward (`use_cache=True`, no cache_start) first."
                )
            # contiguous, so that blocks written in place later keep the layout attention reads fastest
            self.key_cache.append(key_states.contiguous())
            self.value_cache.append(value_states.contiguous())
            return self.key_cache[-1], self.value_cache[-1]
        end = start + key_states.shape[-2]
        cached_keys, cached_values = self.key_cache[layer_idx], self.value_cache[layer_idx]
        writable = torch.is_inference_mode_enabled() or not cached_keys.is_inference()
        if end <= cached_keys.shape[-2] and not torch.is_grad_enabled() and writable:
            # without autograd the block is written in place (no copy of the whole cache per block pass); the
            # positions it overwrites are the block's own, which every later pass recomputes before reading
            cached_keys[..., start:end, :].copy_(key_states)
            cached_values[..., start:end, :].copy_(value_states)
            return cached_keys, cached_values
        keys = torch.cat([cached_keys[..., :start, :], key_states, cached_keys[..., end:, :]], dim=-2)
        values = torch.cat([cached_values[..., :start, :], value_states, cached_values[..., end:, :]], dim=-2)
        if write:
            self.key_cache[layer_idx], self.value_cache[layer_idx] = keys, values
        return keys, values

    def crop(self, max_length: int) -> None:
        """Keeps only the first `max_length` positions (prefix mode: crop to `s`, then feed positions `[s, L)`)."""
        self.key_cache = [k[..., :max_length, :] for k in self.key_cache]
        self.value_cache = [v[..., :max_length, :] for v in self.value_cache]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps only the batch rows in `indices` (e.g. the sequences still being denoised)."""
        self.key_cache = [k[indices] for k in self.key_cache]
        self.value_cache = [v[indices] for v in self.value_cache]


def _cache_argument(cache: MedDiffCache | None, kwargs: dict) -> MedDiffCache | None:
    """The block cache passed as `cache` or, by older code, as `past_key_values` (removed from `kwargs`).

    transformers 5.24 renamed `past_key_values` to `cache` on model inputs and outputs; MedDiff uses `cache` on
    every transformers version and accepts the older keyword so that existing callers keep working."""
    legacy = kwargs.pop("past_key_values", None)
    if cache is not None and legacy is not None:
        raise ValueError("Pass the block cache once, as `cache` (not also as `past_key_values`).")
    return cache if cache is not None else legacy


@dataclass
class MedDiffModelOutput(ModelOutput):
    r"""
    Output of [`MedDiffModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `[B, n, hidden_size]`): output of the final norm.
        cache (`MedDiffCache`): the block cache (with `use_cache=True` or a given cache).
        hidden_states (`tuple[torch.FloatTensor]`): embeddings and each layer's output, `[B, n, hidden_size]`.
        attentions (`tuple[torch.FloatTensor]`): attention probabilities per layer, `[B, heads, n, L_k]` (eager).
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: MedDiffCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MedDiffPreTrainedModel(PreTrainedModel):
    config: MedDiffConfig
    config_class = MedDiffConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MedDiffDecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    # Check token ids against the vocabulary in `forward` (one min/max per call; `generate` checks its inputs once
    # and skips the per-step checks). Set to False to skip the checks entirely.
    check_inputs: bool = True
    _inputs_checked_depth: int = 0

    def _should_check_ids(self) -> bool:
        return self.check_inputs and not self._inputs_checked_depth

    def _check_sequence_length(self, length: int) -> None:
        limit = self.config.max_position_embeddings
        if length > limit:
            raise ValueError(
                f"The sequence has {length} positions but max_position_embeddings is {limit}: shorten the prompt "
                f"(or the generation length), or pass `truncation=True` to keep the last {limit} positions."
            )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves like `PreTrainedModel.save_pretrained`; when the classes are registered for the Auto classes
        (importing `hf_meddiff` does it), `config.json`'s `auto_map` names the whole MedDiff family so the folder
        loads with `AutoConfig`, `AutoModel` and `AutoModelForMaskedLM` under `trust_remote_code=True`."""
        if self._auto_class is not None:
            module = self.__class__.__module__.split(".")[-1]
            self.config.auto_map = (getattr(self.config, "auto_map", None) or {}) | {
                "AutoConfig": f"{MedDiffConfig.__module__.split('.')[-1]}.{MedDiffConfig.__name__}",
                "AutoModel": f"{module}.MedDiffModel",
                "AutoModelForMaskedLM": f"{module}.MedDiffForMaskedDiffusion",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)


class MedDiffModel(MedDiffPreTrainedModel):
    """The bare MedDiff transformer: token embeddings, bidirectional decoder layers and a final norm.

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff import MedDiffConfig, MedDiffModel
    >>> model = MedDiffModel(MedDiffConfig.from_preset("tiny"))
    >>> model(torch.tensor([[1, 9, 20, 30]])).last_hidden_state.shape
    torch.Size([1, 4, 64])

    ```
    """

    # A MedDiffForMaskedDiffusion checkpoint loads into the bare model without its head.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: MedDiffConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size

        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [MedDiffDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MedDiffRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MedDiffRotaryEmbedding(config=config)
        self.gradient_checkpointing = False

        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: MedDiffCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache_start: int | None = None,
        update_cache: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MedDiffModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[B, n]`): token ids (the whole sequence, or the positions
                `[cache_start, cache_start + n)` when a cache is given).
            attention_mask (`torch.Tensor` of shape `[B, L_k]`, *optional*): 1 for real tokens, 0 for padding,
                over all key positions (with a cache: the full sequence length).
            position_ids (`torch.LongTensor` of shape `[B, n]`, *optional*): defaults to `attention_mask.cumsum(-1)
                - 1` (so left/right padding does not change outputs), sliced to the input positions.
            cache (`MedDiffCache`, *optional*): keys/values of the other positions (`past_key_values` is accepted
                as the older name).
            use_cache (`bool`, *optional*): return a `MedDiffCache` (filled by this call if none is given).
            cache_start (`int`, *optional*): position of the first input token; defaults to the cache length.
            update_cache (`bool`): write this call's keys/values into `cache`.

        Returns:
            `MedDiffModelOutput` with `last_hidden_state` `[B, n, hidden_size]`, `cache`,
            `hidden_states` (embeddings, then each layer's output; the last one normed) and `attentions`.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if input_ids is not None and self._should_check_ids() and not (cache is not None and cache_start):
            check_token_ids(input_ids, self.config.vocab_size)
        elif inputs_embeds is not None and inputs_embeds.shape[1] == 0:
            raise ValueError(f"inputs_embeds is empty (shape {tuple(inputs_embeds.shape)}).")
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, query_length = inputs_embeds.shape[:2]

        cache = _cache_argument(cache, kwargs)
        if use_cache and cache is None:
            cache = MedDiffCache()
        if cache is not None and self.gradient_checkpointing and self.training:
            logger.warning_once(
                "A MedDiffCache is incompatible with gradient checkpointing in training; ignoring it."
            )
            cache = None
        cache_length = cache.get_seq_length() if cache is not None else 0
        if cache is not None and cache_length > 0:
            cache_start = cache_length if cache_start is None else cache_start
            if not 0 <= cache_start <= cache_length:
                raise ValueError(
                    f"cache_start ({cache_start}) must lie in [0, {cache_length}] (the cache length); crop the "
                    "cache with `cache.crop(s)` for prefix mode."
                )
            key_length = cache_start + query_length + max(cache_length - cache_start - query_length, 0)
        else:
            if cache_start not in (None, 0):
                raise ValueError(
                    f"cache_start={cache_start} needs a filled `cache`; run a full forward with "
                    "`use_cache=True` first."
                )
            cache_start = 0
            key_length = query_length

        self._check_sequence_length(key_length)
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, key_length, dtype=torch.long, device=inputs_embeds.device)
        if attention_mask.dim() != 2 or attention_mask.shape != (batch_size, key_length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but ({batch_size}, {key_length}) was "
                f"expected: one entry per key position (input length {query_length}, cache_start {cache_start}, "
                f"cache length {cache_length})."
            )
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = position_ids[:, cache_start : cache_start + query_length]

        if getattr(self.config, "causal_attention", False):
            if cache is not None:
                raise ValueError("causal_attention (a check of a converted causal LM) takes no block cache.")
            bidirectional_mask = create_causal_mask(
                config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=None,
                position_ids=position_ids,
            )  # fmt: skip
        else:
            bidirectional_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
            )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(
                hidden_states,
                attention_mask=bidirectional_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                cache_start=cache_start,
                update_cache=update_cache,
                **kwargs,
            )
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.norm(hidden_states)
        if getattr(self.config, "logits_shift", False):
            # Dream / DiffuLLaMA: a causal LM's next-token head kept, position i read from the state at i-1.
            if cache_start not in (None, 0) or (cache is not None and cache_length > 0):
                raise ValueError(
                    "logits_shift needs the hidden state left of each position: run full forwards (no block "
                    "cache, cache_mode='none')."
                )
            hidden_states = torch.cat([hidden_states[:, :1], hidden_states[:, :-1]], dim=1)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return MedDiffModelOutput(
            last_hidden_state=hidden_states,
            cache=cache,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


@dataclass
class MedDiffMaskedDiffusionOutput(ModelOutput):
    r"""
    Output of [`MedDiffForMaskedDiffusion`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): masked-diffusion loss, mean of `per_sample_loss` over the samples
            that have a response (only with `labels`).
        logits (`torch.FloatTensor` of shape `[B, n, vocab_size]`): token scores (unless `return_logits=False`).
        cache (`MedDiffCache`): the block cache (with `use_cache=True` or a given cache).
        hidden_states (`tuple[torch.FloatTensor]`): embeddings and each layer's output, `[B, n, hidden_size]`.
        attentions (`tuple[torch.FloatTensor]`): attention probabilities per layer, `[B, heads, n, L_k]` (eager).
        text_loss (`torch.FloatTensor` of shape `()`): mean text term over samples with a text response.
        image_loss (`torch.FloatTensor` of shape `()`): mean image term over samples with an image response.
        per_sample_loss (`torch.FloatTensor` of shape `[B]`): `w[task] * (text_b + image_b)`.
        noise_mask (`torch.BoolTensor` of shape `[B, L]`): positions replaced by `[MASK]`.
        mask_ratio (`torch.FloatTensor` of shape `[B]`): the text mask ratio `t_b` (image ratio `r_b` for samples
            without a text response).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: MedDiffCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_loss: torch.FloatTensor | None = None
    image_loss: torch.FloatTensor | None = None
    per_sample_loss: torch.FloatTensor | None = None
    noise_mask: torch.BoolTensor | None = None
    mask_ratio: torch.FloatTensor | None = None


class MedDiffForMaskedDiffusion(MedDiffPreTrainedModel, MedDiffGenerationMixin):
    """MedDiff with a token head, trained by masked diffusion and sampled by parallel unmasking (`generate`).

    With `labels` (clean targets on RESPONSE positions, -100 elsewhere) the forward noises the clean `input_ids`
    itself and returns the loss of `docs/internals.md`:
    `per_sample_b = w[task_b] * (sum_{masked text} CE / t_b / n_text_b + mean_{masked image} CE)`.

    Example:

    ```python
    >>> import torch
    >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    >>> config = MedDiffConfig.from_preset("tiny")
    >>> model = MedDiffForMaskedDiffusion(config)
    >>> ids = torch.randint(11, 128, (2, 10))
    >>> labels = torch.full_like(ids, -100)
    >>> labels[:, 6:] = ids[:, 6:]  # the last four tokens are the response
    >>> out = model(ids, labels=labels, generator=torch.Generator().manual_seed(0))
    >>> out.loss.shape, out.noise_mask[:, :6].any().item()
    (torch.Size([]), False)

    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # The loss is a mean over samples and takes no `num_items_in_batch`: `Trainer` must scale it for accumulation.
    accepts_loss_kwargs = False
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MedDiffConfig):
        super().__init__(config)
        self.model = MedDiffModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @classmethod
    def from_llada(
        cls, src: str, save_directory: str, mmada: bool = False, **kwargs
    ) -> MedDiffForMaskedDiffusion:
        """Convert a LLaDA (or, with `mmada=True`, MMaDA) checkpoint folder or Hub id into the MedDiff folder
        `save_directory` (streamed tensor by tensor, see `convert_llada_meddiff.convert_llada`, which takes `kwargs`)
        and load it. `hf-meddiff convert llada SRC DST` does the same from the command line."""
        from .convert_llada_meddiff import convert_llada

        convert_llada(src, save_directory, mmada=mmada, **kwargs)
        return cls.from_pretrained(save_directory)

    def response_modalities(self, labels: torch.LongTensor) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """Splits the RESPONSE positions of `labels` `[B, L]` into `(text, image)` boolean masks, `[B, L]` each."""
        response = labels != IGNORE_INDEX
        is_image = (
            response & (labels >= self.config.image_token_offset) & (labels < self.config.image_token_end)
        )
        return response & ~is_image, is_image

    def sample_noise_mask(
        self,
        labels: torch.LongTensor,
        mask_ratio: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.BoolTensor, torch.Tensor]:
        """Draws the forward-process noise for a batch (prompt positions are never masked).

        Text response positions are masked independently with probability `t_b ~ U(eps, 1)`; image response
        positions get exactly `max(1, ceil(r_b * n_image_b))` masks at random places, `r_b = cos(pi/2 * u_b)`,
        `u_b ~ U(0, 1)` (MaskGIT cosine schedule). A given `mask_ratio` `[B]` replaces both `t_b` and `r_b`.

        Args:
            labels (`torch.LongTensor` of shape `[B, L]`): clean targets on response positions, -100 elsewhere.
            mask_ratio (`torch.Tensor` of shape `[B]`, *optional*): fixed ratios instead of sampled ones.
            generator (`torch.Generator`, *optional*): source of randomness (on the device of `labels`).

        Returns:
            `(noise_mask [B, L] bool, mask_ratio [B] float)`; `mask_ratio` is `t_b`, or `r_b` for samples without
            a text response.
        """
        batch_size, seq_len = labels.shape
        device = labels.device
        is_text, is_image = self.response_modalities(labels)
        eps = self.config.text_noise_eps
        text_draw = torch.rand(batch_size, generator=generator, device=device)
        image_draw = torch.rand(batch_size, generator=generator, device=device)
        if mask_ratio is None:
            text_ratio = eps + (1.0 - eps) * text_draw
            image_ratio = torch.cos(math.pi / 2 * image_draw)
        else:
            text_ratio = image_ratio = mask_ratio.to(device=device, dtype=torch.float32)

        text_noise = (
            torch.rand(batch_size, seq_len, generator=generator, device=device) < text_ratio[:, None]
        ) & is_text

        num_image = is_image.sum(-1)
        num_image_masked = (image_ratio * num_image).ceil().long().clamp(min=1)
        num_image_masked = torch.minimum(num_image_masked, num_image)
        scores = torch.rand(batch_size, seq_len, generator=generator, device=device).masked_fill(
            ~is_image, 2.0
        )
        ranks = scores.argsort(dim=-1).argsort(dim=-1)
        image_noise = (ranks < num_image_masked[:, None]) & is_image

        ratio = torch.where(is_text.any(-1), text_ratio, image_ratio)
        return text_noise | image_noise, ratio

    def task_weights(self, task_ids: torch.LongTensor) -> torch.Tensor:
        """`[B]` loss weight of each sample's task, `config.task_loss_weights[TASKS[task_ids[b]]]` (1.0 for a task
        the config does not name): the one lookup, for this loss and for trainers that weight per-sample losses."""
        weights = self.config.task_loss_weights or {}
        table = torch.tensor(
            [float(weights.get(task, 1.0)) for task in MEDDIFF_TASKS], device=task_ids.device
        )
        return table[task_ids.long()]

    def masked_diffusion_loss(
        self,
        token_logits: torch.Tensor,
        labels: torch.LongTensor,
        noise_mask: torch.BoolTensor,
        mask_ratio: torch.Tensor,
        task_ids: torch.LongTensor | None = None,
        loss_weighting: str = "elbo",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of `docs/internals.md` from the logits of the masked RESPONSE positions.

        Args:
            token_logits (`torch.Tensor` of shape `[N, vocab_size]`): logits at `noise_mask & (labels != -100)`,
                in row-major order.
            labels, noise_mask (`[B, L]`), mask_ratio (`[B]`), task_ids (`[B]`, *optional*).
            loss_weighting (`str`): `"elbo"` divides the text cross-entropy sum by `t_b * n_text` (the
                masked-diffusion bound); `"uniform"` averages it over the masked text tokens (no `1/t` weight:
                lower-variance gradients, which small models trained briefly learn faster from).

        Returns:
            `(loss, text_loss, image_loss, per_sample_loss)`.
        """
        is_text, is_image = self.response_modalities(labels)
        targets = noise_mask & (is_text | is_image)
        token_ce = F.cross_entropy(token_logits.float(), labels[targets], reduction="none")
        ce = torch.zeros(labels.shape, dtype=token_ce.dtype, device=labels.device).masked_scatter(
            targets, token_ce
        )

        num_text = is_text.sum(-1)
        if loss_weighting == "elbo":
            text_denominator = (mask_ratio.float() * num_text).clamp(min=1e-12)
        elif loss_weighting == "uniform":
            text_denominator = (noise_mask & is_text).sum(-1).clamp(min=1).float()
        else:
            raise ValueError(f"loss_weighting must be 'elbo' or 'uniform', got {loss_weighting!r}.")
        text_term = (ce * (noise_mask & is_text)).sum(-1) / text_denominator
        num_image_masked = (noise_mask & is_image).sum(-1)
        image_term = (ce * (noise_mask & is_image)).sum(-1) / num_image_masked.clamp(min=1)

        weights = (
            torch.ones_like(text_term)
            if task_ids is None
            else self.task_weights(task_ids.to(text_term.device))
        )
        per_sample = weights * (text_term + image_term)

        has_text, has_image = num_text > 0, is_image.any(-1)
        has_response = has_text | has_image
        loss = per_sample[has_response].mean() if has_response.any() else token_logits.sum() * 0.0
        text_loss = text_term[has_text].mean() if has_text.any() else text_term.new_zeros(())
        image_loss = image_term[has_image].mean() if has_image.any() else image_term.new_zeros(())
        return loss, text_loss, image_loss, per_sample

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        noise_mask: torch.BoolTensor | None = None,
        mask_ratio: torch.Tensor | None = None,
        task_ids: torch.LongTensor | None = None,
        cache: MedDiffCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache_start: int | None = None,
        update_cache: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_logits: bool = True,
        generator: torch.Generator | None = None,
        loss_weighting: str = "elbo",
        truncation: bool = False,
        **kwargs,
    ) -> MedDiffMaskedDiffusionOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[B, L]`): token ids; with `labels`, the CLEAN sequence.
            attention_mask (`torch.Tensor` of shape `[B, L]`, *optional*): 1 real, 0 padding (key padding).
            labels (`torch.LongTensor` of shape `[B, L]`, *optional*): clean ids on RESPONSE positions, -100
                elsewhere. Image targets are ids in `[image_token_offset, image_token_end)`.
            noise_mask (`torch.BoolTensor` of shape `[B, L]`, *optional*): positions to replace by `[MASK]`;
                sampled by `sample_noise_mask` when `labels` are given and this is not.
            mask_ratio (`torch.Tensor` of shape `[B]`, *optional*): the `t_b` of the `1/t` weight; with a given
                `noise_mask` and no `mask_ratio` it is the masked fraction of the text response.
            task_ids (`torch.LongTensor` of shape `[B]`, *optional*): index into `("vqa", "report", "t2i",
                "reasoning")` selecting `config.task_loss_weights`.
            cache, use_cache, cache_start, update_cache: the block cache, see `MedDiffModel.forward`.
            return_logits (`bool`): compute the full `[B, L, vocab]` logits; with `False` and `labels`, the head
                runs only on the masked response positions (faster training).
            generator (`torch.Generator`, *optional*): randomness for the noise.
            loss_weighting (`str`): `"elbo"` (default, the `1/t`-weighted bound) or `"uniform"` (mean over the
                masked text tokens); see `masked_diffusion_loss`.
            truncation (`bool`): a sequence longer than `max_position_embeddings` is an error by default; with
                `True` only its last `max_position_embeddings` positions are kept (with a warning), for every
                per-position input (ids, masks, labels, positions).

        Token ids outside the vocabulary, labels that are neither -100 nor a token id, task ids outside the task
        table and empty inputs are errors that name the value and where it is (see `check_inputs`).
        """
        cache = _cache_argument(cache, kwargs)
        if truncation and cache is None:
            sequence = input_ids if input_ids is not None else inputs_embeds
            limit = self.config.max_position_embeddings
            if sequence is not None and sequence.shape[1] > limit:
                logger.warning(
                    f"Truncating a sequence of {sequence.shape[1]} positions to its last {limit} "
                    "(max_position_embeddings), as truncation=True asked."
                )
                keep = slice(sequence.shape[1] - limit, None)
                input_ids, inputs_embeds, attention_mask, position_ids, labels, noise_mask = (
                    None if t is None else t[:, keep]
                    for t in (input_ids, inputs_embeds, attention_mask, position_ids, labels, noise_mask)
                )
        if labels is not None and self._should_check_ids():
            check_token_ids(labels, self.config.vocab_size, name="labels", ignore_index=IGNORE_INDEX)
        if task_ids is not None and self._should_check_ids() and not _tracing() and task_ids.numel():
            low, high = torch.stack(torch.aminmax(task_ids)).tolist()
            if low < 0 or high >= len(MEDDIFF_TASKS):
                raise ValueError(
                    f"task_ids must index the tasks {MEDDIFF_TASKS} (0..{len(MEDDIFF_TASKS) - 1}); got values in "
                    f"[{low}, {high}]."
                )
        if labels is not None:
            if input_ids is None:
                raise ValueError(
                    "Training with `labels` needs the clean `input_ids` to noise; got inputs_embeds."
                )
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}."
                )
            if cache is not None or cache_start is not None:
                raise ValueError("The masked-diffusion loss needs a full forward; drop cache/cache_start.")
            if noise_mask is None:
                noise_mask, mask_ratio = self.sample_noise_mask(
                    labels, mask_ratio=mask_ratio, generator=generator
                )
        if noise_mask is not None:
            if input_ids is None or noise_mask.shape != input_ids.shape:
                raise ValueError(
                    f"noise_mask must have the shape of input_ids, got {tuple(noise_mask.shape)} and "
                    f"{None if input_ids is None else tuple(input_ids.shape)}."
                )
            noise_mask = noise_mask.to(device=input_ids.device, dtype=torch.bool)
            input_ids = input_ids.masked_fill(noise_mask, self.config.mask_token_id)
            if labels is not None and mask_ratio is None:
                mask_ratio = self._observed_mask_ratio(labels, noise_mask)

        outputs: MedDiffModelOutput = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache_start=cache_start,
            update_cache=update_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(hidden_states) if return_logits or labels is None else None

        loss = text_loss = image_loss = per_sample_loss = None
        if labels is not None:
            targets = noise_mask & (labels != IGNORE_INDEX)
            token_logits = logits[targets] if logits is not None else self.lm_head(hidden_states[targets])
            loss, text_loss, image_loss, per_sample_loss = self.masked_diffusion_loss(
                token_logits, labels, noise_mask, mask_ratio, task_ids, loss_weighting=loss_weighting
            )

        return MedDiffMaskedDiffusionOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            text_loss=text_loss,
            image_loss=image_loss,
            per_sample_loss=per_sample_loss,
            noise_mask=noise_mask,
            mask_ratio=mask_ratio,
        )

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor, *args, **kwargs):
        """`MedDiffGenerationMixin.generate` with its token ids checked once per call (not at every step)."""
        with self._checked_inputs(input_ids, kwargs.get("response_ids")):
            return super().generate(input_ids, *args, **kwargs)

    @torch.no_grad()
    def generate_images(self, input_ids: torch.LongTensor, *args, **kwargs):
        """`MedDiffGenerationMixin.generate_images` with its token ids checked once per call (not at every step)."""
        with self._checked_inputs(input_ids, kwargs.get("negative_input_ids")):
            return super().generate_images(input_ids, *args, **kwargs)

    generate.__signature__ = inspect.signature(MedDiffGenerationMixin.generate)
    generate_images.__signature__ = inspect.signature(MedDiffGenerationMixin.generate_images)

    @contextlib.contextmanager
    def _checked_inputs(self, *ids: torch.Tensor | None):
        if self._should_check_ids():
            for name, value in zip(("input_ids", "response_ids"), ids):
                if isinstance(value, torch.Tensor):
                    check_token_ids(value, self.config.vocab_size, name=name)
        self._inputs_checked_depth += 1
        try:
            yield
        finally:
            self._inputs_checked_depth -= 1

    def _observed_mask_ratio(self, labels: torch.LongTensor, noise_mask: torch.BoolTensor) -> torch.Tensor:
        """Masked fraction of the text response (of the image response for samples without text), `[B]`."""
        is_text, is_image = self.response_modalities(labels)
        text_ratio = (noise_mask & is_text).sum(-1) / is_text.sum(-1).clamp(min=1)
        image_ratio = (noise_mask & is_image).sum(-1) / is_image.sum(-1).clamp(min=1)
        ratio = torch.where(is_text.any(-1), text_ratio, image_ratio).float()
        return ratio.clamp(min=self.config.text_noise_eps)


__all__ = [
    "check_token_ids",
    "MedDiffCache",
    "MedDiffForMaskedDiffusion",
    "MedDiffMaskedDiffusionOutput",
    "MedDiffModel",
    "MedDiffModelOutput",
    "MedDiffPreTrainedModel",
]
