# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""What the checkpoint converters share: finding the source, reading sharded safetensors one tensor at a time,
writing sharded safetensors one tensor at a time, growing embedding matrices, and renaming tokenizer tokens.

Memory: a converter never holds a whole checkpoint. Each source shard is memory-mapped (`safe_open`) while its
tensors are converted, and each output tensor is written to disk as soon as it is computed (the safetensors header
is planned first from the source shapes), so the peak is about one source shard of mapped pages plus the largest
tensor (twice for a grown embedding matrix).

Only the standard library, torch, safetensors, transformers and huggingface_hub are imported (this file may travel
with saved model folders).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .tokens_meddiff import BOS_TOKEN, EOI_TOKEN, EOS_TOKEN, PAD_TOKEN, SOI_TOKEN, TASK_TOKENS

SAFETENSORS_INDEX = "model.safetensors.index.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ConversionError(ValueError):
    """A source checkpoint does not match the layout a converter expects; the message says what and what to pass."""


def resolve_source(src: str | os.PathLike, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; a Hub id (`owner/name`, not an existing path) downloaded with `snapshot_download`
    (configs, tokenizer files and safetensors only). Nothing else ever touches the network."""
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(
            f"{src} is a file; pass the checkpoint FOLDER (the one holding config.json and the *.safetensors)."
        )
    if not HUB_ID.match(str(src)):
        raise ConversionError(
            f"{src} is neither a local folder nor a Hub id like 'GSAI-ML/LLaDA-8B-Instruct'; check the path."
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py"]
    return Path(snapshot_download(str(src), revision=revision, token=token, allow_patterns=patterns))


def read_json(folder: Path, name: str, what: str) -> dict[str, Any]:
    """`folder/name` parsed; a missing or broken file raises a `ConversionError` that names it and says why."""
    path = folder / name
    if not path.is_file():
        raise ConversionError(f"{folder} has no {name} ({what}); pass the folder of a complete checkpoint.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON ({error}); re-download it.") from error


class SafetensorsCheckpoint:
    """The tensors of a checkpoint folder (`model.safetensors.index.json` + shards, or one `*.safetensors`),
    read one at a time. Shapes and dtypes come from the headers without reading any data.

    Example:

    ```python
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> folder = tempfile.mkdtemp()
    >>> save_file({"w": torch.ones(2, 3)}, f"{folder}/model.safetensors")
    >>> ckpt = SafetensorsCheckpoint(folder)
    >>> ckpt.keys(), ckpt.shape("w")
    (['w'], (2, 3))

    ```
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = self.folder / SAFETENSORS_INDEX
        if index.is_file():
            weight_map = read_json(self.folder, SAFETENSORS_INDEX, "the shard index")["weight_map"]
            self.key_to_file = dict(weight_map)
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
            if not files:
                pickles = sorted(p.name for p in self.folder.glob("*.bin")) + sorted(
                    p.name for p in self.folder.glob("*.pt")
                )
                hint = (
                    f" It holds {pickles}: pickle files, which hf-meddiff never opens (unpickling runs code). "
                    "Re-save them as safetensors where you trust them (e.g. `model.save_pretrained(dir, "
                    "safe_serialization=True)`) and pass that folder."
                    if pickles
                    else ""
                )
                raise ConversionError(f"{self.folder} has no *.safetensors weights.{hint}")
            self.key_to_file = {}
            for name in files:
                with safe_open(self.folder / name, framework="pt") as handle:
                    for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                        self.key_to_file[key] = name
        missing = sorted({f for f in self.key_to_file.values() if not (self.folder / f).is_file()})
        if missing:
            raise ConversionError(
                f"{self.folder} lists shards {missing} in {SAFETENSORS_INDEX} that are not there; download them "
                "(or pass the Hub id to download everything)."
            )
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}
        for name in self.files():
            with safe_open(self.folder / name, framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    if self.key_to_file.get(key) == name:
                        piece = handle.get_slice(key)
                        self._meta[key] = (tuple(piece.get_shape()), piece.get_dtype())

    def files(self) -> list[str]:
        """Shard file names, in order."""
        return sorted(set(self.key_to_file.values()))

    def keys(self, file: str | None = None) -> list[str]:
        return sorted(k for k, f in self.key_to_file.items() if file is None or f == file)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._meta[key][0]

    def dtype_name(self, key: str) -> str:
        return self._meta[key][1]

    def dtype(self, key: str) -> torch.dtype:
        name = self._meta[key][1]
        for dtype, code in ST_DTYPES.items():
            if code == name:
                return dtype
        raise ConversionError(f"{key} has dtype {name}, which the converter does not handle.")

    def open(self, file: str):
        """`safe_open` on one shard (a context manager); read with `.get_tensor(key)`."""
        return safe_open(self.folder / file, framework="pt")


@dataclass
class OutputTensor:
    """One tensor of the converted checkpoint: its name, shape and dtype (planned before anything is written) and
    a function producing it from the open source shard (`handle.get_tensor`)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[Any], torch.Tensor]
    source_file: str | None = None  # the source shard `make` reads; None when it needs none


@dataclass
class ConversionPlan:
    """Output tensors grouped into output shards (one per source shard, plus one for tensors built from nothing)."""

    tensors: list[OutputTensor] = field(default_factory=list)

    def add(self, tensor: OutputTensor) -> None:
        self.tensors.append(tensor)

    def names(self) -> list[str]:
        return [t.name for t in self.tensors]


def _write_safetensors(
    path: Path, tensors: list[OutputTensor], handle: Any, progress: Callable[[], None] | None
) -> int:
    """Write `tensors` to `path` in the safetensors format, computing and writing one tensor at a time."""
    header: dict[str, Any] = {}
    offset = 0
    for t in tensors:
        if t.dtype not in ST_DTYPES:
            raise ConversionError(f"{t.name}: dtype {t.dtype} cannot be written to safetensors.")
        size = torch.Size(t.shape).numel() * torch.empty((), dtype=t.dtype).element_size()
        header[t.name] = {
            "dtype": ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for t in tensors:
            value = t.make(handle)
            if tuple(value.shape) != tuple(t.shape) or value.dtype != t.dtype:
                raise ConversionError(
                    f"{t.name}: produced {tuple(value.shape)} {value.dtype}, planned {t.shape} {t.dtype} (a "
                    "converter bug; please report it with the source config.json)."
                )
            f.write(value.contiguous().reshape(-1).view(torch.uint8).numpy().data)
            del value
            if progress is not None:
                progress()
    return offset


def write_plan(
    plan: ConversionPlan, checkpoint: SafetensorsCheckpoint, dst: Path, desc: str = "converting"
) -> None:
    """Write the planned tensors as `model-XXXXX-of-YYYYY.safetensors` + `model.safetensors.index.json` (or one
    `model.safetensors`), one source shard open at a time."""
    from tqdm.auto import tqdm

    names = plan.names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConversionError(f"Two source tensors map to {duplicates}; the source has duplicate layers.")
    groups: dict[str | None, list[OutputTensor]] = {}
    for t in plan.tensors:
        groups.setdefault(t.source_file, []).append(t)
    order = [f for f in checkpoint.files() if f in groups] + ([None] if None in groups else [])
    total = len(order)
    files = [
        "model.safetensors" if total == 1 else f"model-{i + 1:05d}-of-{total:05d}.safetensors"
        for i in range(total)
    ]
    weight_map: dict[str, str] = {}
    total_size = 0
    with tqdm(total=len(plan.tensors), desc=desc, unit="tensor", disable=None) as bar:
        for source_file, out_file in zip(order, files):
            tensors = groups[source_file]
            if source_file is None:
                total_size += _write_safetensors(dst / out_file, tensors, None, bar.update)
            else:
                with checkpoint.open(source_file) as handle:
                    total_size += _write_safetensors(dst / out_file, tensors, handle, bar.update)
            weight_map.update({t.name: out_file for t in tensors})
    if total > 1:
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def check_keys(checkpoint: SafetensorsCheckpoint, expected: Iterable[str], layout: str, hint: str) -> None:
    """Every expected key is present and no other key is: otherwise a `ConversionError` naming both lists."""
    expected = set(expected)
    present = set(checkpoint.keys())
    missing, unknown = sorted(expected - present), sorted(present - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unknown:
            parts.append(f"unknown {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
        raise ConversionError(
            f"{checkpoint.folder} does not have the {layout} key layout: {'; '.join(parts)}. {hint}"
        )


def check_shape(checkpoint: SafetensorsCheckpoint, key: str, shape: tuple[int, ...], field_hint: str) -> None:
    if checkpoint.shape(key) != tuple(shape):
        raise ConversionError(
            f"{key} has shape {checkpoint.shape(key)} but config.json implies {tuple(shape)} ({field_hint}); the "
            "config and the weights disagree: pass the config.json that came with these weights."
        )


def row_statistics(matrix: torch.Tensor, rows: int, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and standard deviation (float32) of `matrix[:rows]`, accumulated in chunks."""
    total = torch.zeros(matrix.shape[1], dtype=torch.float64)
    squares = torch.zeros(matrix.shape[1], dtype=torch.float64)
    for start in range(0, rows, chunk):
        block = matrix[start : min(rows, start + chunk)].to(torch.float64)
        total += block.sum(0)
        squares += (block * block).sum(0)
    mean = total / max(rows, 1)
    var = (squares / max(rows, 1) - mean * mean).clamp(min=0.0)
    return mean.float(), var.sqrt().float()


def grow_rows(
    matrix: torch.Tensor,
    num_rows: int,
    new_rows: torch.Tensor,
    statistics_rows: int,
    mode: str,
    seed: int,
) -> torch.Tensor:
    """`matrix` `[V, d]` with the rows listed in `new_rows` (ids, may lie beyond `V`) re-initialised and the matrix
    grown to `num_rows`: `mode="sample"` draws them from a normal with the per-dimension mean and std of the first
    `statistics_rows` rows (input embeddings: distinct, in-distribution vectors); `mode="mean"` sets them to that
    mean (output head: every new token starts with the same, average score)."""
    out = torch.empty(num_rows, matrix.shape[1], dtype=matrix.dtype)
    keep = min(matrix.shape[0], num_rows)
    out[:keep] = matrix[:keep]
    ids = torch.as_tensor(new_rows, dtype=torch.long)
    if ids.numel():
        mean, std = row_statistics(matrix, statistics_rows)
        if mode == "sample":
            g = torch.Generator().manual_seed(seed)
            values = mean + std * torch.randn(ids.numel(), matrix.shape[1], generator=g)
        elif mode == "mean":
            values = mean.expand(ids.numel(), -1)
        else:
            raise ValueError(f"mode must be 'sample' or 'mean', got {mode!r}.")
        out[ids] = values.to(matrix.dtype)
    return out


# --- tokenizer -----------------------------------------------------------------------------------------------------
def rename_tokenizer_tokens(
    src: Path,
    dst: Path,
    renames: dict[int, str],
    special: dict[str, str],
    not_special: Iterable[str] = (),
) -> Any:
    """Copy the tokenizer of `src` to `dst` with the added tokens of the given ids renamed (ids, and so the trained
    embedding rows, unchanged), `special` setting `bos_token`/`eos_token`/`pad_token`/`mask_token`/`unk_token`,
    and the chat template's literal occurrences of renamed tokens rewritten. Returns the reloaded tokenizer, checked
    to map every new name to its id."""
    from transformers import AutoTokenizer, PreTrainedConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(src), trust_remote_code=False, config=PreTrainedConfig()
        )
    except Exception as error:  # noqa: BLE001 - any loading failure gets the same actionable message
        raise ConversionError(
            f"Could not load the tokenizer in {src} without remote code ({type(error).__name__}: {error}); the "
            "folder needs tokenizer.json + tokenizer_config.json (a PreTrainedTokenizerFast)."
        ) from error
    if not getattr(tokenizer, "is_fast", False):
        raise ConversionError(
            f"The tokenizer in {src} is not a fast tokenizer (tokenizer.json); convert it first."
        )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        spec = json.loads(Path(tmp, "tokenizer.json").read_text(encoding="utf-8"))
        old_names: dict[str, str] = {}
        by_id = {entry["id"]: entry for entry in spec.get("added_tokens", [])}
        not_special = set(not_special)
        for token_id, name in renames.items():
            if token_id not in by_id:
                raise ConversionError(
                    f"Token id {token_id} (to become {name!r}) is not an added token of the tokenizer in {src}; "
                    "this tokenizer does not have the expected reserved-token layout."
                )
            old_names[by_id[token_id]["content"]] = name
            by_id[token_id]["content"] = name
            by_id[token_id]["special"] = name not in not_special
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config_path = Path(tmp, "tokenizer_config.json")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
            if int(token_id) in renames:
                entry["content"] = renames[int(token_id)]
                entry["special"] = renames[int(token_id)] not in not_special
        for key in ("additional_special_tokens", "extra_special_tokens"):
            value = config.get(key)
            if isinstance(value, list):
                config[key] = [old_names.get(v, v) if isinstance(v, str) else v for v in value]
            elif isinstance(value, dict):
                config[key] = {k: old_names.get(v, v) if isinstance(v, str) else v for k, v in value.items()}
        for key, value in list(config.items()):
            if key.endswith("_token") and isinstance(value, str) and value in old_names:
                config[key] = old_names[value]
        config.update(special)
        template = config.get("chat_template")
        if isinstance(template, str):
            for old, new in old_names.items():
                template = template.replace(old, new)
            config["chat_template"] = template
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        jinja = Path(tmp, "chat_template.jinja")
        if jinja.is_file():
            text = jinja.read_text(encoding="utf-8")
            for old, new in old_names.items():
                text = text.replace(old, new)
            jinja.write_text(text, encoding="utf-8")
        renamed = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False, config=PreTrainedConfig())
        wrong = {
            n: renamed.convert_tokens_to_ids(n)
            for i, n in renames.items()
            if renamed.convert_tokens_to_ids(n) != i
        }
        if wrong or len(renamed) != len(tokenizer):
            raise ConversionError(
                f"Renaming tokens of the tokenizer in {src} moved ids ({wrong}, size {len(tokenizer)} -> "
                f"{len(renamed)}); a new name already exists in its vocabulary."
            )
        dst.mkdir(parents=True, exist_ok=True)
        renamed.save_pretrained(str(dst))
    return renamed


def copy_extra_files(src: Path, dst: Path, names: Iterable[str]) -> None:
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (`getrusage`, bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def torch_dtype(name: str | None) -> torch.dtype | None:
    """`"bfloat16"`/`"float16"`/`"float32"` -> torch dtype (None keeps the source dtype)."""
    if name in (None, "", "auto", "source"):
        return None
    if name not in TORCH_DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(TORCH_DTYPES)} or 'auto', got {name!r}.")
    return TORCH_DTYPES[name]


__all__ = [
    "ConversionError",
    "ConversionPlan",
    "OutputTensor",
    "SafetensorsCheckpoint",
    "check_keys",
    "check_shape",
    "grow_rows",
    "peak_rss_bytes",
    "read_json",
    "rename_tokenizer_tokens",
    "resolve_source",
    "row_statistics",
    "torch_dtype",
    "write_plan",
]


def special_token_ids(token_id: Callable[[str], int]) -> dict[str, int]:
    """The `MedDiffConfig` ids of the pad, bos, eos, image-boundary and task tokens, looked up by `token_id(text)`."""
    return {
        "pad_token_id": token_id(PAD_TOKEN),
        "bos_token_id": token_id(BOS_TOKEN),
        "eos_token_id": token_id(EOS_TOKEN),
        "soi_token_id": token_id(SOI_TOKEN),
        "eoi_token_id": token_id(EOI_TOKEN),
        "mmu_token_id": token_id(TASK_TOKENS["mmu"]),
        "t2i_token_id": token_id(TASK_TOKENS["t2i"]),
    }


def cast(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`value` in `dtype` (unchanged when `dtype` is None)."""
    return value if dtype is None else value.to(dtype)


def copy_tensor(key: str, dtype: torch.dtype | None) -> Callable[[Any], torch.Tensor]:
    """A conversion plan's maker for a tensor taken as it is: source tensor `key` of the open shard, cast to `dtype`."""
    return lambda handle: cast(handle.get_tensor(key), dtype)
