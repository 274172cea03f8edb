# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""What the trainers share: the dataset arguments and loading, image tokenisation, and a checkpoint on SIGTERM.

- `DatasetArguments` + `load_canonical_datasets`: MedPhantom, a saved canonical dataset or a public set's native
  files, split by the `split` column (the SFT and GRPO scripts read their data this way).
- `tokenize_dataset_images`: every image of a canonical dataset encoded once by the processor's VQ tokenizer
  into an `image_ids` column (SFT examples and GRPO prompts are built from it).
- `UsageError`, `parse_recipe`, `check_*`, `run_command`: a command's inputs (recipe file, values, paths) checked
  before any long work, each problem one line and exit status 2.
- `SaveOnSignalMixin`: for a transformers `Trainer` whose args have `save_on_signal`; on SIGTERM or Ctrl-C
  (SIGINT) the current optimizer step finishes, a checkpoint is saved and training stops (on every process at the same step);
  `stopped_by_signal` then holds the signal, and the scripts exit with `128 + signal`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import TrainerCallback
from transformers.utils import logging

from ..data.medical_io import open_image  # the one image opener (re-exported)

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------- data
@dataclass
class DatasetArguments:
    r"""
    Which canonical dataset a training script reads, and which rows.

    Parameters:
        dataset_name (`str`, defaults to `"medphantom"`):
            `"medphantom"` (generated, the embedded default), `"canonical"` (a saved canonical dataset at
            `dataset_path`), or the name of a public-set loader of `hf_meddiff.data` (e.g. `"iu_xray"`,
            `"vqa_rad"`, `"slake"`) reading its native format from `dataset_path`.
        dataset_path (`str`, *optional*): file or folder the dataset is read from.
        dataset_train_split / dataset_eval_split (`str`): values of the `split` column used for training and
            evaluation (`"all"` keeps every row; an empty eval split disables evaluation).
        max_train_samples / max_eval_samples (`int`, *optional*): keep at most this many records.
        medphantom_num_cases / medphantom_image_size / medphantom_seed: the generated MedPhantom cases.
        medphantom_all_questions (`bool`, defaults to `False`): give every training case a question of every type
            it answers (`hf_meddiff.data.expand_phantom_questions`); other splits keep one question per case.
    """

    dataset_name: str = field(
        default="medphantom",
        metadata={
            "help": "'medphantom', 'canonical' (saved dataset at dataset_path) or a public-set loader name."
        },
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "File or folder the dataset is read from."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "`split` value used for training."})
    dataset_eval_split: str | None = field(
        default="validation", metadata={"help": "`split` value used for evaluation; empty/None disables it."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many train records."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many eval records."}
    )
    medphantom_num_cases: int = field(
        default=2000, metadata={"help": "MedPhantom cases to generate (all splits)."}
    )
    medphantom_image_size: int = field(default=64, metadata={"help": "MedPhantom image side in pixels."})
    medphantom_seed: int = field(default=0, metadata={"help": "MedPhantom generator seed."})
    medphantom_all_questions: bool = field(
        default=False,
        metadata={
            "help": "Every training case gets a question of every type it answers (more VQA supervision)."
        },
    )

    def __post_init__(self):
        if self.dataset_eval_split in ("", "none", "None", "null"):
            self.dataset_eval_split = None


def _select_split(dataset, split: str | None, limit: int | None, what: str):
    if split is None:
        return None
    if split != "all":
        if "split" not in dataset.column_names:
            raise ValueError(
                f"The dataset has no 'split' column to select the {what} split {split!r}; use 'all'."
            )
        dataset = dataset.filter(
            lambda s: s == split, input_columns="split", desc=f"Selecting the {what} split"
        )
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


def load_canonical_datasets(script_args: DatasetArguments):
    """`(train, eval)` canonical datasets for the script arguments (`eval` is None when there is none)."""
    name = script_args.dataset_name
    if name == "medphantom" and script_args.dataset_path:
        name = (
            "canonical"  # a saved MedPhantom (or other canonical) dataset, e.g. from `hf-meddiff data make`
        )
    if name == "medphantom":
        from ..data import make_phantom_dataset

        dataset = make_phantom_dataset(
            script_args.medphantom_num_cases,
            seed=script_args.medphantom_seed,
            image_size=script_args.medphantom_image_size,
        )
        if script_args.medphantom_all_questions:
            from ..data import expand_phantom_questions

            dataset = expand_phantom_questions(dataset, seed=script_args.medphantom_seed)
    elif name == "canonical":
        if not script_args.dataset_path:
            raise ValueError(
                "dataset_name 'canonical' needs dataset_path (a Parquet file or save_to_disk folder)."
            )
        from ..evaluation import load_canonical

        dataset = load_canonical(script_args.dataset_path)
    else:
        dataset = _load_public(name, script_args.dataset_path)
    train = _select_split(dataset, script_args.dataset_train_split, script_args.max_train_samples, "train")
    if train is None or len(train) == 0:
        raise ValueError(
            f"The train split {script_args.dataset_train_split!r} of dataset {name!r} is empty; check "
            "dataset_train_split (or use 'all')."
        )
    evaluation = _select_split(dataset, script_args.dataset_eval_split, script_args.max_eval_samples, "eval")
    if evaluation is not None and len(evaluation) == 0:
        logger.warning(f"No rows with split {script_args.dataset_eval_split!r}: training without evaluation.")
        evaluation = None
    return train, evaluation


def _load_public(name: str, path: str | None):
    from .. import data

    loader = getattr(data, f"load_{name}", None)
    if loader is None:
        loaders = sorted(n[len("load_") :] for n in dir(data) if n.startswith("load_"))
        raise ValueError(
            f"Unknown dataset_name {name!r}: use 'medphantom', 'canonical' or one of the public-set loaders "
            f"{loaders}."
        )
    if not path:
        raise ValueError(f"dataset_name {name!r} reads its native files: set dataset_path to them.")
    dataset = loader(path)
    if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):  # a DatasetDict
        from datasets import concatenate_datasets

        parts = []
        for split, part in dataset.items():
            if "split" not in part.column_names:
                part = part.add_column("split", [split] * len(part))
            parts.append(part)
        dataset = concatenate_datasets(parts)
    return dataset


# ------------------------------------------------------------------------------------ image tokenisation


def record_name(record_id: Any, row: int) -> str:
    """How error messages name a record: by its `id` when it has one, and its row."""
    return f"record {record_id!r} (row {row})" if record_id not in (None, "") else f"record at row {row}"


def _module_fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def tokenize_dataset_images(
    dataset: Dataset,
    processor: Any,
    *,
    batch_size: int = 32,
    cache_dir: str | None = None,
    desc: str = "Tokenising images",
) -> Dataset:
    """Add `image_ids` (the `g*g` VQ codes of the record's image, as `MedDiffProcessor.encode_images` gives them)
    and `image_error` (non-empty when the image does not decode).

    Images are decoded one by one, so an image that does not decode only marks its own record instead of
    failing the batch. With `cache_dir` the result is written to `cache_dir/image_ids-<fingerprint>.arrow`,
    keyed by the dataset's fingerprint and the image tokenizer's weights, and reused by later runs.

    Args:
        dataset (`datasets.Dataset`): a canonical dataset with an `image` column.
        processor (`MedDiffProcessor`): its image processor and image tokenizer encode the images.
    """
    if "image" not in dataset.column_names:
        raise ValueError(f"The dataset has no 'image' column (columns: {dataset.column_names}).")
    if getattr(processor, "image_tokenizer", None) is None:
        raise ValueError("The processor has no image tokenizer: build it with `image_tokenizer=`.")
    if isinstance(dataset.features["image"], ImageFeature):
        dataset = dataset.cast_column("image", ImageFeature(decode=False))
    ids_column = "id" if "id" in dataset.column_names else None
    # Records that share an image (several questions about one case) are encoded once: codes by image digest.
    seen: dict[bytes, list[int]] = {}

    def digest(value: Any) -> bytes | None:
        if isinstance(value, dict) and value.get("bytes"):
            return hashlib.sha1(value["bytes"]).digest()
        return None

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        images, errors, good, keys = [], [], [], []
        codes: list[list[int]] = [[] for _ in batch["image"]]
        for position, value in enumerate(batch["image"]):
            key = digest(value)
            if key is not None and key in seen:
                codes[position] = seen[key]
                errors.append("")
                continue
            try:
                if value is None:
                    raise ValueError("the record has no image")
                images.append(open_image(value))
                errors.append("")
                good.append(position)
                keys.append(key)
            except Exception as error:  # noqa: BLE001 - any decode failure marks the record
                record = batch[ids_column][position] if ids_column else None
                errors.append(
                    f"{record_name(record, indices[position])}: field 'image' does not decode ({error})"
                )
        if images:
            rows = processor.encode_images(images, batch_size=len(images)).tolist()
            for position, key, row in zip(good, keys, rows):
                codes[position] = row
                if key is not None:
                    seen[key] = row
        return {"image_ids": codes, "image_error": errors}

    kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        key = f"{dataset._fingerprint}-{_module_fingerprint(processor.image_tokenizer)}-{processor.image_processor.size}"
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        kwargs.update(
            cache_file_name=os.path.join(cache_dir, f"image_ids-{fingerprint}.arrow"),
            new_fingerprint=fingerprint,
            load_from_cache_file=True,
        )
    return dataset.map(encode, batched=True, batch_size=batch_size, with_indices=True, desc=desc, **kwargs)


# ------------------------------------------------------------------------------------ command inputs
class UsageError(ValueError):
    """A problem with a command's inputs (config file, option value, path) found before any long work starts.
    The commands print it as one line, `hf-meddiff <command>: error: <message>`, and exit with status 2."""


class MissingInputError(UsageError, FileNotFoundError):
    """A `UsageError` for a file or folder that does not exist (also a `FileNotFoundError`)."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def parse_recipe(parser: Any, argv: list[str]) -> tuple[Any, ...]:
    """`parser.parse_args_and_config(argv)` (a TRL `TrlParser`) with every problem of the inputs as a `UsageError`:
    a missing / unreadable / malformed `--config` file, unknown keys, and values the dataclasses refuse. (A flag with
    a value of the wrong type is reported by argparse itself, with exit status 2.)"""
    import yaml

    argv = list(argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise UsageError("--config needs the path of a YAML recipe (e.g. trainers/….yaml).")
        path = argv[index + 1]
        if not os.path.isfile(path):
            raise MissingInputError(
                f"--config {path}: no such file; recipes live in trainers/ (e.g. trainers/*.yaml)."
            )
        try:
            with open(path, encoding="utf-8") as handle:
                values = yaml.safe_load(handle)
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--config {path}: cannot be read ({_one_line(err)}).") from err
        except yaml.YAMLError as err:
            raise UsageError(f"--config {path}: not valid YAML ({_one_line(err)}).") from err
        if values is not None and not isinstance(values, dict):
            raise UsageError(f"--config {path}: the top level must be a mapping of option: value.")
    try:
        return tuple(parser.parse_args_and_config(argv))
    except UsageError:
        raise
    except (ValueError, TypeError, KeyError, yaml.YAMLError) as err:
        raise UsageError(_one_line(err)) from err


def check_output_dir(path: str | os.PathLike | None, option: str = "output_dir") -> None:
    """Create `path` if needed and make sure a file can be written there, else a `UsageError` naming it."""
    if not path:
        raise UsageError(f"{option} is required (a folder to write the results to).")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as err:
        raise UsageError(
            f"{option} {str(path)!r} is not a writable folder ({err.strerror or _one_line(err)}); pick a folder "
            "you can write to."
        ) from err


def looks_like_local_path(value: str) -> bool:
    """Whether `value` names a local file or folder rather than a Hub id (`org/name`): it exists, starts with `/`,
    `.` or `~`, has more than one `/`, or the Hub is off (`HF_HUB_OFFLINE`)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return (
        os.path.exists(value)
        or value.startswith(("/", ".", "~"))
        or value.count("/") > 1
        or os.sep != "/"
        and os.sep in value
        or offline
    )


def check_model_path(
    value: str | None, option: str, *, required: bool = False, what: str = "a model folder"
) -> None:
    """A `UsageError` when `value` looks like a local path that does not exist (a Hub id is left to the Hub)."""
    if not value:
        if required:
            raise UsageError(f"{option} is required: {what}.")
        return
    value = str(value)
    if looks_like_local_path(value) and not os.path.exists(os.path.expanduser(value)):
        raise MissingInputError(f"{option} {value!r}: no such file or folder ({what}).")


def check_training_length(max_steps: int, num_train_epochs: float) -> None:
    """`max_steps` 0 (or below -1), or no steps and a non-positive `num_train_epochs`, as a `UsageError`."""
    if max_steps == 0 or max_steps < -1:
        raise UsageError(
            f"max_steps={max_steps}: use a positive number of optimizer steps, or -1 to train for num_train_epochs."
        )
    if max_steps == -1 and not num_train_epochs > 0:
        raise UsageError(f"num_train_epochs={num_train_epochs} must be positive (or set max_steps).")


def check_positive(owner: Any, names: tuple[str, ...], *, allow_none: bool = True) -> None:
    """A `UsageError` for the first of the fields `names` of `owner` that is not a positive number."""
    for name in names:
        value = getattr(owner, name)
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UsageError(f"{name}={value!r} must be positive.")


def run_command(command: str, body: Any) -> int:
    """Run `body()`; a `UsageError` becomes one line on stderr and exit status 2."""
    try:
        return body()
    except UsageError as err:
        print(f"hf-meddiff {command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


# -------------------------------------------------------------------------------------------- signals
STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def received_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[list[int]]:
    """Within the block, the `signals` a process receives are appended to the yielded list instead of ending it;
    the previous handlers come back afterwards. The first signal is announced on stderr (the run finishes its step,
    saves a checkpoint and stops); a second Ctrl-C (SIGINT) stops at once with `KeyboardInterrupt`. Outside the
    main thread (where Python cannot install handlers) nothing is installed and the list stays empty."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and signal.SIGINT in received:
            raise KeyboardInterrupt
        if not received:
            print(
                f"\nReceived {signal.Signals(signum).name}: finishing the current step, then saving a checkpoint "
                "and stopping" + (" (Ctrl-C again to stop at once)." if signum == signal.SIGINT else "."),
                file=sys.stderr,
                flush=True,
            )
        received.append(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield received
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


class SaveOnSignalCallback(TrainerCallback):
    """Turns a signal received by any process into `should_save` + `should_training_stop` at the end of the
    current optimizer step, and records it in `trainer.stopped_by_signal`."""

    def __init__(self, trainer: Any, received: list[int]):
        self.trainer = trainer
        self.received = received

    def _received_anywhere(self) -> bool:
        flag = torch.tensor(1.0 if self.received else 0.0, device=self.trainer.args.device)
        if self.trainer.accelerator.num_processes > 1:
            flag = self.trainer.accelerator.reduce(flag, reduction="sum")
        return bool(flag > 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._received_anywhere():
            control.should_save = True
            control.should_training_stop = True
            self.trainer.stopped_by_signal = self.received[0] if self.received else signal.SIGTERM
            logger.warning(
                f"Received signal {signal.Signals(self.trainer.stopped_by_signal).name} during step "
                f"{state.global_step}: saving checkpoint-{state.global_step} in {args.output_dir} and stopping. "
                "Resume with `--resume_from_checkpoint true`."
            )
        return control


class SaveOnSignalMixin:
    """Mixed in before a transformers `Trainer` (`class MyTrainer(SaveOnSignalMixin, Trainer)`): with
    `args.save_on_signal`, `train` saves a checkpoint and stops when the process gets SIGTERM or Ctrl-C (SIGINT).

    Attributes:
        stopped_by_signal (`int | None`): the signal number when the last `train` call stopped on a signal.
    """

    stopped_by_signal: int | None = None

    def train(self, *args: Any, **kwargs: Any):
        self.stopped_by_signal = None
        if not getattr(self.args, "save_on_signal", False):
            return super().train(*args, **kwargs)
        with received_signals() as received:
            callback = SaveOnSignalCallback(self, received)
            self.add_callback(callback)
            try:
                return super().train(*args, **kwargs)
            finally:
                self.remove_callback(callback)


__all__ = [
    "DatasetArguments",
    "SaveOnSignalCallback",
    "STOP_SIGNALS",
    "SaveOnSignalMixin",
    "MissingInputError",
    "UsageError",
    "check_model_path",
    "check_output_dir",
    "check_positive",
    "check_training_length",
    "looks_like_local_path",
    "parse_recipe",
    "run_command",
    "load_canonical_datasets",
    "open_image",
    "received_signals",
    "record_name",
    "tokenize_dataset_images",
]
