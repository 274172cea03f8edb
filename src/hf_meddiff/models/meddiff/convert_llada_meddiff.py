# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""LLaDA and MMaDA checkpoints -> MedDiff folders (`hf-meddiff convert llada|mmada SRC DST`).

Both share LLaDA's backbone (`LLaDAModelLM`, `model.transformer.*` keys, a Llama-style block with `attn_norm`,
`q_proj`/`k_proj`/`v_proj`, `attn_out`, `ff_norm`, `ff_proj` (gate), `up_proj`, `ff_out` (down)), which maps one to
one onto MedDiff's LLaMA names. The tokenizer keeps its ids: MedDiff's special tokens take the names of LLaDA's
own tokens (`<|startoftext|>` -> `<|bos|>`, `<|endoftext|>` -> `<|eos|>`, `<|mdm_mask|>` -> `<|mask|>`) and of its
reserved tokens (`<|reserved_token_k|>`), at the slots MMaDA gives its task tokens: k=0 `<|soi|>`, 1 `<|eoi|>`,
4 `<|t2i|>`, 5 `<|mmu|>`, 9 `<|pad|>` (MMaDA's `[iPAD]`); k=11.. hold `<|user|>`, `<|assistant|>`, `<|unk|>` and
the reasoning/grounding tags. A converted LLaDA therefore reads MMaDA-style sequences.

Image codes: MMaDA's already sit at `len(tokenizer) + code` (its trained rows are kept). A LLaDA gets
`image_codebook_size` new rows after its embedding matrix (id = `embedding_size + code`): input rows drawn from a
normal with the per-dimension mean and std of the text rows, head rows set to the mean head row (every code starts
with the same score). Every source row is kept as trained, so the converted model's logits over the source
vocabulary equal LLaDA's.
"""

from __future__ import annotations

import json
import math
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
    rename_tokenizer_tokens,
    resolve_source,
    special_token_ids,
    torch_dtype,
    write_plan,
)
from .tokens_meddiff import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    BOX_CLOSE,
    BOX_OPEN,
    EOI_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SOI_TOKEN,
    TASK_TOKENS,
    TEXT_TAG_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    UNK_TOKEN,
    USER_TOKEN,
)

PREFIX = "model.transformer."
# LLaDA block parameter -> MedDiff decoder-layer parameter.
BLOCK_KEYS = {
    "attn_norm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
    "ff_proj.weight": "mlp.gate_proj.weight",
    "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}
QKV_BIAS_KEYS = {
    "q_proj.bias": "self_attn.q_proj.bias",
    "k_proj.bias": "self_attn.k_proj.bias",
    "v_proj.bias": "self_attn.v_proj.bias",
}
# MedDiff token -> index k of LLaDA's `<|reserved_token_k|>` it takes (0, 1, 4, 5, 9 as MMaDA's soi, eoi, t2i, mmu,
# [iPAD]).
RESERVED_SLOTS = {
    SOI_TOKEN: 0,
    EOI_TOKEN: 1,
    TASK_TOKENS["t2i"]: 4,
    TASK_TOKENS["mmu"]: 5,
    PAD_TOKEN: 9,
    USER_TOKEN: 11,
    ASSISTANT_TOKEN: 12,
    UNK_TOKEN: 13,
    THINK_OPEN: 14,
    THINK_CLOSE: 15,
    ANSWER_OPEN: 16,
    ANSWER_CLOSE: 17,
    BOX_OPEN: 18,
    BOX_CLOSE: 19,
}
# MMaDA's other task tokens, named in a converted MMaDA's tokenizer for reference (MedDiff does not use them).
MMADA_ONLY_SLOTS = {"<|sov|>": 2, "<|eov|>": 3, "<|t2v|>": 6, "<|v2v|>": 7, "<|lvg|>": 8, "<|r2i|>": 10}
MAGVIT_CODEBOOK_SIZE = 8192  # MAGVIT-v2 (showlab/magvitv2): 13-bit lookup-free codes, 16x downsampling
MAGVIT_DOWNSAMPLE = 16


def _field(config: dict[str, Any], name: str, default: Any = None) -> Any:
    return config.get(name, default)


def check_llada_config(config: dict[str, Any], path: Path) -> None:
    """LLaDA's `config.json` describes a block MedDiff can hold exactly; otherwise a `ConversionError` naming the
    field, its value and the value MedDiff needs."""
    needed = {
        "block_type": "llama",
        "layer_norm_type": "rms",
        "activation_type": "silu",
        "rope": True,
        "alibi": False,
        "attention_layer_norm": False,
        "scale_logits": False,
        "input_emb_norm": False,
        "include_bias": False,
        "block_group_size": 1,
    }
    defaults = {"alibi": False, "attention_layer_norm": False, "scale_logits": False, "input_emb_norm": False,
                "include_bias": False, "block_group_size": 1}  # fmt: skip
    for name, value in needed.items():
        actual = config.get(name, defaults.get(name))
        if actual != value:
            raise ConversionError(
                f"{path}: {name} = {actual!r}, but the MedDiff conversion needs {name} = {value!r} (the LLaDA-8B "
                "layout); this checkpoint's block is not a LLaDA Llama block."
            )
    if config.get("bias_for_layer_norm"):
        raise ConversionError(f"{path}: bias_for_layer_norm = true; MedDiff's RMSNorm has no bias.")
    for name in ("d_model", "n_heads", "n_layers"):
        if not isinstance(config.get(name), int):
            raise ConversionError(f"{path} has no integer {name!r}; it is not a LLaDA config.json.")


def _kv_heads(config: dict[str, Any]) -> int:
    if config.get("n_kv_heads") is not None:
        return int(config["n_kv_heads"])
    return 1 if config.get("multi_query_attention") else int(config["n_heads"])


def _reserved_base(tokenizer: Any, src: Path) -> int:
    base = tokenizer.convert_tokens_to_ids("<|reserved_token_0|>")
    if base is None or base == tokenizer.unk_token_id:
        raise ConversionError(
            f"The tokenizer in {src} has no <|reserved_token_0|>: MedDiff's special tokens take LLaDA's reserved "
            "tokens. Pass a LLaDA/MMaDA tokenizer (tokenizer.json + tokenizer_config.json)."
        )
    return int(base)


def _token_renames(tokenizer: Any, mask_token_id: int, src: Path, mmada: bool) -> dict[int, str]:
    base = _reserved_base(tokenizer, src)
    renames = {base + k: name for name, k in RESERVED_SLOTS.items()}
    if mmada:
        renames |= {base + k: name for name, k in MMADA_ONLY_SLOTS.items()}
    for token_id, name in renames.items():
        current = tokenizer.convert_ids_to_tokens(token_id)
        if not (current or "").startswith("<|reserved_token_") and current not in (name, "[iPAD]"):
            raise ConversionError(
                f"Token id {token_id} is {current!r} in the tokenizer of {src}, not a reserved token; cannot make it "
                f"{name!r}. This tokenizer does not have LLaDA's reserved-token layout."
            )
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ConversionError(f"The tokenizer in {src} sets no bos_token/eos_token; LLaDA's are <|startoftext|>, "
                              "<|endoftext|>.")  # fmt: skip
    if tokenizer.convert_ids_to_tokens(mask_token_id) != "<|mdm_mask|>":
        raise ConversionError(
            f"config.json's mask_token_id {mask_token_id} is {tokenizer.convert_ids_to_tokens(mask_token_id)!r} in "
            f"the tokenizer of {src}, not <|mdm_mask|>; pass the tokenizer that came with the weights."
        )
    renames[int(tokenizer.bos_token_id)] = BOS_TOKEN
    renames[int(tokenizer.eos_token_id)] = EOS_TOKEN
    renames[int(mask_token_id)] = MASK_TOKEN
    return renames


def _load_image_tokenizer(image_tokenizer: Any) -> Any:
    if image_tokenizer is None or not isinstance(image_tokenizer, (str, os.PathLike)):
        return image_tokenizer
    folder = resolve_source(image_tokenizer)
    if (folder / "image_tokenizer_config.json").is_file() or (
        folder / "diffusion_pytorch_model.safetensors"
    ).is_file():
        from .image_tokenizer_meddiff import MedDiffImageTokenizer

        return MedDiffImageTokenizer.from_pretrained(folder)
    from .magvit_meddiff import MagvitV2ImageTokenizer

    return MagvitV2ImageTokenizer.from_magvit(folder)


def convert_llada(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    mmada: bool = False,
    image_tokenizer: Any = None,
    image_codebook_size: int | None = None,
    image_grid_size: int | None = None,
    dtype: str | None = None,
    seed: int = 0,
    revision: str | None = None,
    token: str | None = None,
) -> MedDiffConfig:
    """Convert a LLaDA (`mmada=False`) or MMaDA (`mmada=True`) checkpoint folder or Hub id into a MedDiff folder.

    Args:
        src: a folder with LLaDA's `config.json`, safetensors (sharded + `model.safetensors.index.json`, or one file)
            and tokenizer, or a Hub id (downloaded; the only case that uses the network).
        dst: output folder: `config.json`, safetensors shards + index, tokenizer, `processor_config.json`, and
            `image_tokenizer/` when one is given.
        image_tokenizer: a `MedDiffImageTokenizer`-like object, a MedDiff image tokenizer folder, or a MAGVIT-v2
            folder / Hub id (`showlab/magvitv2`, safetensors weights): it sets the codebook and grid and is saved.
        image_codebook_size, image_grid_size: without an image tokenizer (defaults: MAGVIT-v2's 8192 codes, MMaDA's
            `num_vq_tokens` or a 16 x 16 grid).
        dtype: `"bfloat16"`, `"float16"`, `"float32"` or None (the source dtype).
        seed: seed of the new embedding rows.

    Returns:
        The `MedDiffConfig` written to `dst`.

    Example:

    ```python
    >>> from hf_meddiff.models.meddiff.convert_llada_meddiff import convert_llada
    >>> config = convert_llada("GSAI-ML/LLaDA-8B-Instruct", "llada-meddiff")  # doctest: +SKIP
    >>> config.mask_token_id, config.image_token_offset  # doctest: +SKIP
    (126336, 126464)

    ```
    """
    layout = "MMaDA" if mmada else "LLaDA"
    src_path = resolve_source(src, revision=revision, token=token)
    dst_path = Path(dst)
    if dst_path.exists() and any(dst_path.iterdir()):
        raise ConversionError(f"{dst_path} exists and is not empty; pass a new output folder.")
    config = read_json(src_path, "config.json", f"the {layout} model config")
    check_llada_config(config, src_path / "config.json")
    out_dtype = torch_dtype(dtype)

    d_model, n_heads, n_layers = int(config["d_model"]), int(config["n_heads"]), int(config["n_layers"])
    head_dim = d_model // n_heads
    n_kv = _kv_heads(config)
    hidden = int(config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * d_model)
    rows = int(config.get("embedding_size") or config["vocab_size"])
    if config.get("mask_token_id") is None:
        raise ConversionError(f"{src_path / 'config.json'} has no mask_token_id (LLaDA's is 126336).")
    mask_token_id = int(config["mask_token_id"])
    qkv_bias = bool(config.get("include_qkv_bias"))
    tied = bool(config.get("weight_tying", False))

    checkpoint = SafetensorsCheckpoint(src_path)
    expected = {PREFIX + "wte.weight", PREFIX + "ln_f.weight"} | (
        {PREFIX + "ff_out.weight"} if not tied else set()
    )
    block_keys = BLOCK_KEYS | (QKV_BIAS_KEYS if qkv_bias else {})
    for i in range(n_layers):
        expected |= {f"{PREFIX}blocks.{i}.{k}" for k in block_keys}
    check_keys(
        checkpoint, expected, f"{layout} (n_layers={n_layers}, weight_tying={tied}, include_qkv_bias={qkv_bias})",
        "Pass a LLaDAModelLM / MMadaModelLM checkpoint whose config.json matches its weights.",
    )  # fmt: skip
    check_shape(checkpoint, PREFIX + "wte.weight", (rows, d_model), "embedding_size x d_model")
    shapes = {
        "q_proj.weight": (n_heads * head_dim, d_model),
        "k_proj.weight": (n_kv * head_dim, d_model),
        "v_proj.weight": (n_kv * head_dim, d_model),
        "attn_out.weight": (d_model, d_model),
        "ff_proj.weight": (hidden, d_model),
        "up_proj.weight": (hidden, d_model),
        "ff_out.weight": (d_model, hidden),
        "attn_norm.weight": (d_model,),
        "ff_norm.weight": (d_model,),
    }
    for name, shape in shapes.items():
        check_shape(
            checkpoint, f"{PREFIX}blocks.0.{name}", shape, "d_model, n_heads, n_kv_heads, mlp_hidden_size"
        )

    # Tokenizer: MedDiff names on LLaDA's ids.
    from transformers import AutoTokenizer, PreTrainedConfig

    try:
        source_tokenizer = AutoTokenizer.from_pretrained(
            str(src_path), trust_remote_code=False, config=PreTrainedConfig()
        )
    except Exception as error:  # noqa: BLE001
        raise ConversionError(
            f"{src_path} has no loadable tokenizer (tokenizer.json + tokenizer_config.json): {error}"
        ) from error
    text_vocab = len(source_tokenizer)
    renames = _token_renames(source_tokenizer, mask_token_id, src_path, mmada)
    dst_path.mkdir(parents=True, exist_ok=True)
    tokenizer = rename_tokenizer_tokens(
        src_path, dst_path, renames,
        special={"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "mask_token": MASK_TOKEN,
                 "unk_token": UNK_TOKEN},
        not_special=TEXT_TAG_TOKENS,
    )  # fmt: skip

    # Vocabulary layout.
    image_tok = _load_image_tokenizer(image_tokenizer)
    if image_tok is not None:
        codebook, grid = int(image_tok.codebook_size), int(image_tok.grid_size)
    else:
        codebook = int(image_codebook_size or config.get("codebook_size") or MAGVIT_CODEBOOK_SIZE)
        num_vq = config.get("num_vq_tokens")
        grid = int(image_grid_size or (math.isqrt(int(num_vq)) if num_vq else 16))
    if mmada:
        offset = text_vocab  # MMaDA: image token = code + len(tokenizer)
        if rows < offset + codebook:
            raise ConversionError(
                f"{src_path / 'config.json'}: the embedding has {rows} rows but MMaDA's image codes need "
                f"len(tokenizer) + codebook = {offset} + {codebook} = {offset + codebook}; is this an MMaDA "
                "checkpoint (vocab_size 134656)? For a LLaDA checkpoint use `convert llada`."
            )
    else:
        offset = rows  # new rows after the whole embedding matrix
    vocab = max(rows, offset + codebook)
    new_rows = torch.arange(rows, vocab)

    def embedding(handle: Any) -> torch.Tensor:
        value = grow_rows(
            handle.get_tensor(PREFIX + "wte.weight"), vocab, new_rows, text_vocab, "sample", seed
        )
        return cast(value, out_dtype)

    def head(handle: Any) -> torch.Tensor:
        key = PREFIX + ("wte.weight" if tied else "ff_out.weight")
        value = grow_rows(handle.get_tensor(key), vocab, new_rows, text_vocab, "mean", seed)
        return cast(value, out_dtype)

    def copy(key: str) -> Callable[[Any], torch.Tensor]:
        return copy_tensor(key, out_dtype)

    def dtype_of(key: str) -> torch.dtype:
        return out_dtype or checkpoint.dtype(key)

    plan = ConversionPlan()
    wte = PREFIX + "wte.weight"
    plan.add(
        OutputTensor(
            "model.embed_tokens.weight",
            (vocab, d_model),
            dtype_of(wte),
            embedding,
            checkpoint.key_to_file[wte],
        )
    )
    head_key = PREFIX + ("wte.weight" if tied else "ff_out.weight")
    plan.add(
        OutputTensor(
            "lm_head.weight", (vocab, d_model), dtype_of(head_key), head, checkpoint.key_to_file[head_key]
        )
    )
    ln_f = PREFIX + "ln_f.weight"
    plan.add(
        OutputTensor(
            "model.norm.weight",
            checkpoint.shape(ln_f),
            dtype_of(ln_f),
            copy(ln_f),
            checkpoint.key_to_file[ln_f],
        )
    )
    for i in range(n_layers):
        for name, target in block_keys.items():
            key = f"{PREFIX}blocks.{i}.{name}"
            plan.add(OutputTensor(f"model.layers.{i}.{target}", checkpoint.shape(key), dtype_of(key), copy(key), checkpoint.key_to_file[key]))  # fmt: skip
        if qkv_bias:  # LLaDA's attn_out has no bias where MedDiff's attention_bias gives o_proj one: zeros
            key = f"{PREFIX}blocks.{i}.q_proj.bias"
            zeros = (lambda dt: lambda handle: torch.zeros(d_model, dtype=dt))(dtype_of(key))
            plan.add(OutputTensor(f"model.layers.{i}.self_attn.o_proj.bias", (d_model,), dtype_of(key), zeros, checkpoint.key_to_file[key]))  # fmt: skip

    def token_id(name: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(name))

    meddiff_config = MedDiffConfig(
        hidden_size=d_model,
        intermediate_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=int(config.get("max_sequence_length", 4096)),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))},
        attention_bias=qkv_bias,
        mlp_bias=False,
        text_vocab_size=text_vocab,
        image_codebook_size=codebook,
        image_token_offset=offset,
        vocab_size=vocab,
        image_grid_size=grid,
        mask_token_id=mask_token_id,
        **special_token_ids(token_id),
    )
    meddiff_config.architectures = ["MedDiffForMaskedDiffusion"]
    meddiff_config.dtype = str(out_dtype or checkpoint.dtype(wte)).replace("torch.", "")
    write_plan(plan, checkpoint, dst_path, desc=f"{layout} -> MedDiff")
    meddiff_config.save_pretrained(str(dst_path))
    _save_processor(dst_path, tokenizer, offset, meddiff_config, image_tok)
    _write_provenance(dst_path, layout.lower(), str(src), new_rows, rows, codebook, offset)
    return meddiff_config


def _save_processor(
    dst: Path, tokenizer: Any, offset: int, config: MedDiffConfig, image_tokenizer: Any
) -> None:
    from .image_processing_meddiff import MedDiffImageProcessor
    from .processing_meddiff import MedDiffProcessor

    size = (
        int(image_tokenizer.image_size)
        if image_tokenizer is not None
        else config.image_grid_size * MAGVIT_DOWNSAMPLE
    )
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=size),
        tokenizer,
        image_token_offset=offset,
        max_length=config.max_position_embeddings,
        image_tokenizer=image_tokenizer,
    )
    processor.save_pretrained(str(dst))


def _write_provenance(
    dst: Path, layout: str, src: str, new_rows: torch.Tensor, rows: int, codebook: int, offset: int
) -> None:
    note = {
        "converted_from": src,
        "source_layout": layout,
        "source_embedding_rows": rows,
        "image_token_offset": offset,
        "image_codebook_size": codebook,
        "new_rows": [int(new_rows[0]), int(new_rows[-1]) + 1] if new_rows.numel() else [],
        "new_row_init": "input embedding: normal(mean, std of the text rows, per dimension); head: mean text row",
    }
    (dst / "conversion.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


__all__ = ["BLOCK_KEYS", "RESERVED_SLOTS", "check_llada_config", "convert_llada"]
