"""Tiny checkpoints in the published source layouts (real key names and config fields, tiny sizes, random weights,
sharded safetensors + index), and small reference forwards written from the sources' published definitions."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

WORDS = [f"w{i}" for i in range(60)] + [
    "what",
    "is",
    "the",
    "modality",
    "ct",
    "mri",
    "yes",
    "no",
    "<unk_word>",
]
NUM_RESERVED = 24  # LLaDA has 256 slots (<|mdm_mask|> is slot 252); the tiny one keeps the same order
MASK_SLOT = 20
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}"
)


def llada_tokenizer(folder: Path):
    """A word-level tokenizer with LLaDA's added-token layout: <|startoftext|>, <|endoftext|>, [CLS], [gMASK],
    <|reserved_token_k|> (slot MASK_SLOT is <|mdm_mask|>), <role>, </role>, header/eot tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk_word>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    added = ["<|startoftext|>", "<|endoftext|>", "[CLS]", "[gMASK]"]
    added += ["<|mdm_mask|>" if k == MASK_SLOT else f"<|reserved_token_{k}|>" for k in range(NUM_RESERVED)]
    added += ["<role>", "</role>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens(added)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        cls_token="[CLS]",
    )  # fmt: skip
    fast.chat_template = LLADA_CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return fast


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, num_shards: int = 3) -> None:
    """`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`, keys spread round-robin."""
    keys = sorted(tensors)
    names = [f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]
    shards = {name: {} for name in names}
    weight_map = {}
    for i, key in enumerate(keys):
        shards[names[i % num_shards]][key] = tensors[key].contiguous()
        weight_map[key] = names[i % num_shards]
    for name, part in shards.items():
        save_file(part, str(folder / name), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def llada_config(vocab_rows: int, mask_token_id: int, eos: int, **overrides) -> dict:
    """LLaDA-8B's config.json fields at tiny sizes."""
    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 64,
        "embedding_dropout": 0.0, "embedding_size": vocab_rows, "eos_token_id": eos, "flash_attention": False,
        "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
        "layer_norm_with_affine": True, "mask_token_id": mask_token_id, "max_sequence_length": 512,
        "mlp_hidden_size": 128, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 4,
        "n_kv_heads": 4, "n_layers": 2, "pad_token_id": eos, "precision": "amp_bf16", "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
        "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False, "vocab_size": vocab_rows,
        "weight_tying": False,
    }  # fmt: skip
    config.update(overrides)
    return config


def llada_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under LLaDA's key names (`model.transformer.*`)."""
    g = torch.Generator().manual_seed(seed)
    d, rows, hidden = config["d_model"], config["embedding_size"], config["mlp_hidden_size"]
    kv = config["n_kv_heads"] * (d // config["n_heads"])

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    w = {"model.transformer.wte.weight": rand(rows, d, scale=1.0),
         "model.transformer.ln_f.weight": 1 + rand(d)}  # fmt: skip
    if not config["weight_tying"]:
        w["model.transformer.ff_out.weight"] = rand(rows, d)
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        w |= {p + "attn_norm.weight": 1 + rand(d), p + "ff_norm.weight": 1 + rand(d),
              p + "q_proj.weight": rand(d, d), p + "k_proj.weight": rand(kv, d), p + "v_proj.weight": rand(kv, d),
              p + "attn_out.weight": rand(d, d), p + "ff_proj.weight": rand(hidden, d),
              p + "up_proj.weight": rand(hidden, d), p + "ff_out.weight": rand(d, hidden)}  # fmt: skip
    return w


def build_llada(folder: Path, seed: int = 0, **config_overrides) -> tuple[dict, dict[str, torch.Tensor]]:
    folder.mkdir(parents=True, exist_ok=True)
    tok = llada_tokenizer(folder)
    rows = (len(tok) + 15) // 16 * 16 + 16  # LLaDA pads the embedding beyond the tokenizer (126464 > 126349)
    config = llada_config(
        rows, tok.convert_tokens_to_ids("<|mdm_mask|>"), tok.eos_token_id, **config_overrides
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = llada_weights(config, seed)
    save_sharded(weights, folder)
    return config, weights


# --- reference forward, from LLaDA's published modeling_llada.py (LLaDALlamaBlock, RMSLayerNorm, RotaryEmbedding) --
def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rope(t: torch.Tensor, theta: float) -> torch.Tensor:
    _, _, seq, hs = t.shape
    inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float) / hs))
    freqs = torch.einsum("i,j->ij", torch.arange(seq, dtype=torch.float), inv_freq)
    pos = torch.cat((freqs, freqs), dim=-1)
    sin, cos = pos.sin()[None, None], pos.cos()[None, None]
    x1, x2 = t.view(*t.shape[:-1], 2, hs // 2).unbind(dim=-2)
    return t * cos + torch.cat((-x2, x1), dim=-1) * sin


def llada_reference_logits(config: dict, w: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """LLaDAModel.forward without mask or cache: bidirectional SDPA, Llama block, untied or tied head."""
    d, nh, eps = config["d_model"], config["n_heads"], config["rms_norm_eps"]
    nkv, hs = config["n_kv_heads"], d // nh
    x = F.embedding(ids, w["model.transformer.wte.weight"])
    b, t, _ = x.shape
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        h = _rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "q_proj.weight"].T).view(b, t, nh, hs).transpose(1, 2)
        k = (h @ w[p + "k_proj.weight"].T).view(b, t, nkv, hs).transpose(1, 2)
        v = (h @ w[p + "v_proj.weight"].T).view(b, t, nkv, hs).transpose(1, 2)
        q, k = _rope(q, config["rope_theta"]), _rope(k, config["rope_theta"])
        k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False).transpose(1, 2).reshape(b, t, d)
        x = x + att @ w[p + "attn_out.weight"].T
        h = _rms(x, w[p + "ff_norm.weight"], eps)
        h = F.silu(h @ w[p + "ff_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)
        x = x + h @ w[p + "ff_out.weight"].T
    x = _rms(x, w["model.transformer.ln_f.weight"], eps)
    head = w["model.transformer.wte.weight" if config["weight_tying"] else "model.transformer.ff_out.weight"]
    return x @ head.T


def causal_lm_tokenizer(folder: Path):
    """A word-level tokenizer with a bos and an eos, as a causal LM folder carries one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk_word>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<s>", "</s>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(folder))
    return fast


def build_causal_lm(folder: Path, model_type: str, seed: int = 0, **overrides):
    """A tiny Llama / Qwen2 / Qwen3 ForCausalLM saved by `save_pretrained` in small shards, with a tokenizer."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tok = causal_lm_tokenizer(folder)
    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}  # fmt: skip
    config_cls, model_cls = (getattr(transformers, name) for name in classes[model_type])
    kwargs = dict(
        vocab_size=len(tok) + 8, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=model_type != "llama",
    )  # fmt: skip
    if model_type == "qwen3":
        kwargs["head_dim"] = 32  # Qwen3's head_dim is not hidden_size / heads
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    with torch.no_grad():  # norms and biases away from their init, so the test sees them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(folder), max_shard_size="40KB")
    return model, tok


TINY_MAGVIT = dict(
    ch=32, encoder_ch_mult=[1, 1, 1, 1], encoder_num_res_blocks=[1, 1, 1, 1], decoder_ch_mult=[1, 1, 1, 1],
    decoder_num_res_blocks=[1, 1, 1, 1], z_channels=6, image_size=32,
)  # fmt: skip  # 4 levels: 32 px -> 4 x 4 codes, 2**6 = 64 codes


def build_magvit(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A showlab/magvitv2-layout folder (config.json + pytorch_model.safetensors) at tiny sizes."""
    from hf_meddiff.models.meddiff.magvit_meddiff import MagvitV2ImageTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state = MagvitV2ImageTokenizer(**TINY_MAGVIT).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **TINY_MAGVIT}))
    return state


def build_mmada(folder: Path, seed: int = 0, codebook: int = 64, grid: int = 4) -> tuple[dict, dict]:
    """LLaDA's layout with MMaDA's vocabulary: image code c at len(tokenizer) + c, the embedding resized."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = llada_tokenizer(folder)
    rows = (
        (len(tok) + 15) // 16 * 16 + 16 + codebook
    )  # llm_vocab_size + codebook_size (126464 + 8192 = 134656)
    config = llada_config(rows, tok.convert_tokens_to_ids("<|mdm_mask|>"), tok.eos_token_id)
    config |= {"architectures": ["MMadaModelLM"], "model_type": "mmada", "codebook_size": codebook,
               "num_vq_tokens": grid * grid, "llm_vocab_size": rows - codebook, "new_vocab_size": rows,
               "num_new_special_tokens": 0}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = llada_weights(config, seed)
    save_sharded(weights, folder)
    return config, weights
