# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""A transformers Llama / Qwen2 / Qwen3 `*ForCausalLM` -> a MedDiff folder (`hf-meddiff convert causal-lm SRC DST`).

The parameter names are the same as MedDiff's (`model.layers.N.self_attn.q_proj.weight`, ...), so the weights are
copied as they are; attention becomes bidirectional (MedDiff's), and the MedDiff special tokens the tokenizer lacks
are added (`<|mask|>`, `<|soi|>`, `<|eoi|>`, `<|mmu|>`, `<|t2i|>`, `<|user|>`, `<|assistant|>`, and `<|bos|>`,
`<|eos|>`, `<|pad|>`, `<|unk|>` unless the tokenizer names them so), then `image_codebook_size` image rows.

New rows: `<|bos|>`/`<|eos|>`/`<|pad|>` copy the rows of the model's own bos/eos/pad token (same meaning); every
other new row is drawn, for the input embedding, from a normal with the per-dimension mean and std of the text rows
and set, for the head, to the mean head row. Qwen2's q/k/v biases become MedDiff's attention bias (o_proj's bias is
zero); Qwen3's query/key norms are MedDiff's `qk_norm`; tied embeddings are copied into an untied head.

`keep_shift=True` keeps the causal LM's next-token head as it is trained: MedDiff reads the logits of position i
from the hidden state at i-1 (`logits_shift`), the adaptation of Dream and DiffuLLaMA, so training starts from the
model's own predictions. The recipe `trainers/adapt_causal_lm.yaml` then continues with the masked-diffusion loss.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .configuration_meddiff import MedDiffConfig
from .convert_common_meddiff import (
    ConversionError,
    ConversionPlan,
    OutputTensor,
    SafetensorsCheckpoint,
    cast,
    check_keys,
    check_shape,
    copy_tensor,
    grow_rows,
    read_json,
    resolve_source,
    special_token_ids,
    torch_dtype,
)
from .convert_common_meddiff import write_plan as _write_plan
from .tokens_meddiff import (
    BOS_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TEXT_TAG_TOKENS,
    UNK_TOKEN,
)

SUPPORTED = ("llama", "qwen2", "qwen3")
LAYER_KEYS = (
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
# MedDiff token -> the source tokenizer attribute whose row it copies.
COPIED_ROWS = {BOS_TOKEN: "bos_token_id", EOS_TOKEN: "eos_token_id", PAD_TOKEN: "pad_token_id"}


def _source_config(src: Path) -> Any:
    raw = read_json(src, "config.json", "the causal LM's config")
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED:
        raise ConversionError(
            f"{src / 'config.json'}: model_type {model_type!r} is not one of {SUPPORTED}. For a LLaDA or MMaDA "
            "checkpoint use `convert llada` / `convert mmada`."
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(src), trust_remote_code=False)
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ConversionError(
            f"{src / 'config.json'}: hidden_act = {config.hidden_act!r}; MedDiff's MLP is SwiGLU."
        )
    if getattr(config, "use_sliding_window", False):
        raise ConversionError(
            f"{src / 'config.json'}: use_sliding_window = true; MedDiff attends over the whole sequence. Set it to "
            "false in a copy of config.json if the model was trained without it."
        )
    return config


def _tokenizer_with_meddiff_tokens(src: Path) -> tuple[Any, Any, list[str]]:
    from transformers import AddedToken, AutoTokenizer, PreTrainedConfig

    try:
        source = AutoTokenizer.from_pretrained(str(src), trust_remote_code=False, config=PreTrainedConfig())
        tokenizer = AutoTokenizer.from_pretrained(
            str(src), trust_remote_code=False, config=PreTrainedConfig()
        )
    except Exception as error:  # noqa: BLE001 - any loading failure gets the same actionable message
        raise ConversionError(
            f"{src} has no tokenizer that loads without remote code ({type(error).__name__}: {error}); pass the "
            "model folder with its tokenizer.json + tokenizer_config.json."
        ) from error
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tags = [t for t in TEXT_TAG_TOKENS if t not in vocab]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = BOS_TOKEN, EOS_TOKEN, PAD_TOKEN
    tokenizer.mask_token, tokenizer.unk_token = MASK_TOKEN, UNK_TOKEN
    return source, tokenizer, missing + tags


def convert_causal_lm(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    keep_shift: bool = False,
    image_tokenizer: Any = None,
    image_codebook_size: int = 8192,
    image_grid_size: int = 16,
    dtype: str | None = None,
    seed: int = 0,
    revision: str | None = None,
    token: str | None = None,
) -> MedDiffConfig:
    """Convert a Llama / Qwen2 / Qwen3 causal LM folder or Hub id into a MedDiff folder (see the module docstring).

    Example:

    ```python
    >>> from hf_meddiff.models.meddiff.convert_causal_lm_meddiff import convert_causal_lm
    >>> config = convert_causal_lm("Qwen/Qwen3-0.6B", "qwen3-meddiff", keep_shift=True)  # doctest: +SKIP
    >>> config.logits_shift, config.qk_norm  # doctest: +SKIP
    (True, True)

    ```
    """
    from .convert_llada_meddiff import _load_image_tokenizer, _save_processor

    src_path = resolve_source(src, revision=revision, token=token)
    dst_path = Path(dst)
    if dst_path.exists() and any(dst_path.iterdir()):
        raise ConversionError(f"{dst_path} exists and is not empty; pass a new output folder.")
    config = _source_config(src_path)
    model_type = config.model_type
    out_dtype = torch_dtype(dtype)
    d, n_layers = int(config.hidden_size), int(config.num_hidden_layers)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(config, "head_dim", None) or d // n_heads)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    qk_norm = model_type == "qwen3"
    qkv_bias = model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
    o_bias = model_type == "llama" and bool(getattr(config, "attention_bias", False))
    mlp_bias = bool(getattr(config, "mlp_bias", False))

    checkpoint = SafetensorsCheckpoint(src_path)
    layer_keys = list(LAYER_KEYS)
    if qkv_bias:
        layer_keys += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
    if o_bias:
        layer_keys += ["self_attn.o_proj.bias"]
    if mlp_bias:
        layer_keys += ["mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"]
    if qk_norm:
        layer_keys += ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | (
        {"lm_head.weight"} if not tied else set()
    )
    expected |= {f"model.layers.{i}.{k}" for i in range(n_layers) for k in layer_keys}
    present = set(checkpoint.keys())
    if tied and "lm_head.weight" in present:
        expected.add("lm_head.weight")  # some tied checkpoints store the head anyway; it is the embedding
    check_keys(
        checkpoint, expected, f"{model_type} *ForCausalLM (num_hidden_layers={n_layers}, tie_word_embeddings={tied})",
        "Pass a transformers checkpoint saved by save_pretrained whose config.json matches its weights.",
    )  # fmt: skip
    rows = checkpoint.shape("model.embed_tokens.weight")[0]
    check_shape(checkpoint, "model.embed_tokens.weight", (rows, d), "vocab_size x hidden_size")
    check_shape(
        checkpoint, "model.layers.0.self_attn.q_proj.weight", (n_heads * head_dim, d), "heads x head_dim"
    )
    check_shape(
        checkpoint, "model.layers.0.self_attn.k_proj.weight", (n_kv * head_dim, d), "kv heads x head_dim"
    )
    intermediate = int(config.intermediate_size)
    check_shape(checkpoint, "model.layers.0.mlp.gate_proj.weight", (intermediate, d), "intermediate_size")

    source_tokenizer, tokenizer, added = _tokenizer_with_meddiff_tokens(src_path)
    text_vocab = len(tokenizer)
    image_tok = _load_image_tokenizer(image_tokenizer)
    codebook = int(image_tok.codebook_size) if image_tok is not None else int(image_codebook_size)
    grid = int(image_tok.grid_size) if image_tok is not None else int(image_grid_size)
    offset = max(text_vocab, rows)
    vocab = offset + codebook
    added_ids = {name: int(tokenizer.convert_tokens_to_ids(name)) for name in added}
    copied = {}
    for name, attribute in COPIED_ROWS.items():
        source_id = getattr(source_tokenizer, attribute, None)
        if name in added_ids and source_id is not None and source_id < rows:
            copied[added_ids[name]] = int(source_id)
    fresh = sorted((set(added_ids.values()) | set(range(rows, vocab))) - set(copied))
    statistics_rows = min(len(source_tokenizer), rows)

    def grown(key: str, mode: str):
        def make(handle: Any) -> torch.Tensor:
            value = grow_rows(handle.get_tensor(key), vocab, torch.tensor(fresh), statistics_rows, mode, seed)
            for new_id, source_id in copied.items():
                value[new_id] = value[source_id]
            return cast(value, out_dtype)

        return make

    def copy(key: str) -> Callable[[Any], torch.Tensor]:
        return copy_tensor(key, out_dtype)

    def dtype_of(key: str) -> torch.dtype:
        return out_dtype or checkpoint.dtype(key)

    plan = ConversionPlan()
    embed = "model.embed_tokens.weight"
    head = embed if tied else "lm_head.weight"
    plan.add(
        OutputTensor(
            embed, (vocab, d), dtype_of(embed), grown(embed, "sample"), checkpoint.key_to_file[embed]
        )
    )
    plan.add(OutputTensor("lm_head.weight", (vocab, d), dtype_of(head), grown(head, "mean"), checkpoint.key_to_file[head]))  # fmt: skip
    plan.add(OutputTensor("model.norm.weight", (d,), dtype_of("model.norm.weight"), copy("model.norm.weight"), checkpoint.key_to_file["model.norm.weight"]))  # fmt: skip
    for i in range(n_layers):
        for name in layer_keys:
            key = f"model.layers.{i}.{name}"
            plan.add(
                OutputTensor(
                    key, checkpoint.shape(key), dtype_of(key), copy(key), checkpoint.key_to_file[key]
                )
            )
        if (
            qkv_bias and not o_bias
        ):  # MedDiff's attention_bias also gives o_proj a bias: zeros keep the function
            key = f"model.layers.{i}.self_attn.q_proj.bias"
            zeros = (lambda dt: lambda handle: torch.zeros(d, dtype=dt))(dtype_of(key))
            plan.add(OutputTensor(f"model.layers.{i}.self_attn.o_proj.bias", (d,), dtype_of(key), zeros, checkpoint.key_to_file[key]))  # fmt: skip

    def token_id(name: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(name))

    rope = dict(getattr(config, "rope_parameters", None) or {})
    if not rope:
        rope = {"rope_type": "default", "rope_theta": float(getattr(config, "rope_theta", 10000.0))}
    meddiff_config = MedDiffConfig(
        hidden_size=d,
        intermediate_size=intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=int(config.max_position_embeddings),
        rms_norm_eps=float(config.rms_norm_eps),
        rope_parameters=rope,
        attention_bias=qkv_bias or o_bias,
        mlp_bias=mlp_bias,
        qk_norm=qk_norm,
        logits_shift=bool(keep_shift),
        text_vocab_size=text_vocab,
        image_codebook_size=codebook,
        image_token_offset=offset,
        vocab_size=vocab,
        image_grid_size=grid,
        mask_token_id=token_id(MASK_TOKEN),
        **special_token_ids(token_id),
    )
    meddiff_config.architectures = ["MedDiffForMaskedDiffusion"]
    meddiff_config.dtype = str(out_dtype or checkpoint.dtype(embed)).replace("torch.", "")
    dst_path.mkdir(parents=True, exist_ok=True)
    _write_plan(plan, checkpoint, dst_path, desc=f"{model_type} -> MedDiff")
    meddiff_config.save_pretrained(str(dst_path))
    tokenizer.save_pretrained(str(dst_path))
    _save_processor(dst_path, tokenizer, offset, meddiff_config, image_tok)
    note = {
        "converted_from": str(src),
        "source_layout": f"{model_type} causal LM",
        "source_embedding_rows": rows,
        "added_tokens": added_ids,
        "rows_copied_from": {str(k): v for k, v in copied.items()},
        "image_token_offset": offset,
        "image_codebook_size": codebook,
        "logits_shift": bool(keep_shift),
        "new_row_init": "input embedding: normal(mean, std of the text rows, per dimension); head: mean text row",
    }
    (dst_path / "conversion.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return meddiff_config


__all__ = ["SUPPORTED", "convert_causal_lm"]
