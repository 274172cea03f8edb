# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Masked-diffusion SFT / pretraining of a MedDiff model from a YAML recipe (open-r1 style).

```bash
hf-meddiff sft --config trainers/pretrain_embedded.yaml [--key value ...]
python -m hf_meddiff.trainer.sft.script --config trainers/pretrain_embedded.yaml --max_steps 50
accelerate launch --config_file trainers/accelerate/ddp.yaml -m hf_meddiff.cli sft --config trainers/….yaml
```

The recipe sets the fields of three dataclasses: `MedDiffScriptArguments` (data, tokenizers, model size),
`MedDiffSFTConfig` (training) and TRL's `ModelConfig` (pretrained weights, LoRA / QLoRA, dtype). The script
loads the data, builds (or loads) the text and image tokenizers and the processor, builds (or loads) the
model, trains with `MedDiffSFTTrainer` and saves model + processor in `output_dir`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..common import (
    DatasetArguments,
    MissingInputError,
    check_model_path,
    check_output_dir,
    check_positive,
    check_training_length,
    load_canonical_datasets,
    parse_recipe,
    run_command,
)
from .config import MedDiffSFTConfig

logger = logging.get_logger(__name__)


@dataclass
class MedDiffScriptArguments(DatasetArguments):
    r"""
    Data, tokenizer and model-size arguments of the SFT script.

    Parameters:
        > Data: the fields of [`~hf_meddiff.trainer.common.DatasetArguments`] (`dataset_name`, `dataset_path`,
        `dataset_train_split`, `dataset_eval_split`, `max_*_samples`, `medphantom_*`).

        > Tokenizers

        processor_path (`str`, *optional*): a saved `MedDiffProcessor`; when set, the tokenizer fields below
            are ignored.
        text_tokenizer_path / image_tokenizer_path (`str`, *optional*): existing tokenizers; each one left
            unset is trained on the training split (text: BPE with `text_vocab_size`; image: a VQ model of
            `image_tokenizer_preset` for `image_tokenizer_steps`).

        > Model

        model_preset (`str`, defaults to `"embedded"`): `MedDiffConfig.from_preset` size of a model trained from
            scratch (ignored when `model_name_or_path` is set).
        model_config_overrides (`dict`, *optional*): config fields to override, e.g. `{"num_hidden_layers": 2}`
            for a model from scratch; for a pretrained model (`model_name_or_path`) only fields that leave its
            weights' shapes alone, e.g. `{"max_position_embeddings": 1280}` to train on longer canvases.
    """

    processor_path: str | None = field(
        default=None, metadata={"help": "A saved MedDiffProcessor (overrides the tokenizer fields)."}
    )
    text_tokenizer_path: str | None = field(
        default=None, metadata={"help": "An existing text tokenizer; trained on the train split when unset."}
    )
    text_vocab_size: int = field(
        default=1024, metadata={"help": "Vocabulary size of a newly trained text tokenizer."}
    )
    image_tokenizer_path: str | None = field(
        default=None,
        metadata={"help": "An existing MedDiffImageTokenizer; trained on the train split when unset."},
    )
    image_tokenizer_preset: str = field(
        default="embedded",
        metadata={"help": "VQ preset of a newly trained image tokenizer ('tiny', 'embedded')."},
    )
    image_tokenizer_steps: int = field(
        default=300, metadata={"help": "Training steps of a new image tokenizer."}
    )
    image_tokenizer_batch_size: int = field(
        default=32, metadata={"help": "Batch size of image-tokenizer training."}
    )

    model_preset: str = field(
        default="embedded", metadata={"help": "MedDiffConfig preset of a model from scratch."}
    )
    model_config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "MedDiffConfig fields to override, e.g. {'num_hidden_layers': 2}."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.model_config_overrides, str):
            self.model_config_overrides = json.loads(self.model_config_overrides)


# ------------------------------------------------------------------------------------------- processor
def build_processor(script_args: MedDiffScriptArguments, train_dataset, output_dir: str | None = None):
    """Load the processor, or assemble it from existing / newly trained text and image tokenizers.

    Newly trained tokenizers are saved under `output_dir/tokenizers/` (`text_tokenizer/`, `image_tokenizer/`).
    With several processes only the main one trains them; the others load what it saved (call this inside
    `main_process_first`).

    Example:

    ```python
    >>> args = MedDiffScriptArguments(image_tokenizer_preset="tiny", image_tokenizer_steps=5, text_vocab_size=400)
    >>> processor = build_processor(args, make_phantom_dataset(16, image_size=32))  # doctest: +SKIP
    ```
    """
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from ...image_tokenizer import MedDiffImageTokenizer, train_image_tokenizer
    from ...models.meddiff import MedDiffImageProcessor, MedDiffProcessor

    if script_args.processor_path:
        return MedDiffProcessor.from_pretrained(script_args.processor_path)
    save_dir = Path(output_dir) / "tokenizers" if output_dir else None
    reuse = save_dir is not None and not PartialState().is_main_process

    text_path = script_args.text_tokenizer_path or (str(save_dir / "text_tokenizer") if reuse else None)
    if text_path:
        tokenizer = AutoTokenizer.from_pretrained(text_path)
    else:
        from ...text_tokenizer import train_text_tokenizer

        logger.warning(
            f"Training a text tokenizer ({script_args.text_vocab_size} tokens) on the train split."
        )
        tokenizer = train_text_tokenizer(sft_texts(train_dataset), vocab_size=script_args.text_vocab_size)
        if save_dir is not None:
            tokenizer.save_pretrained(str(save_dir / "text_tokenizer"))

    image_path = script_args.image_tokenizer_path or (str(save_dir / "image_tokenizer") if reuse else None)
    if image_path:
        image_tokenizer = MedDiffImageTokenizer.from_pretrained(image_path)
    else:
        logger.warning(
            f"Training a {script_args.image_tokenizer_preset!r} image tokenizer for "
            f"{script_args.image_tokenizer_steps} steps on the train split."
        )
        image_tokenizer, stats = train_image_tokenizer(
            train_dataset,
            preset=script_args.image_tokenizer_preset,
            steps=script_args.image_tokenizer_steps,
            batch_size=script_args.image_tokenizer_batch_size,
        )
        logger.warning(f"Image tokenizer trained: {stats}")
        if save_dir is not None:
            image_tokenizer.save_pretrained(str(save_dir / "image_tokenizer"))
    image_processor = MedDiffImageProcessor(size=image_tokenizer.image_size)
    return MedDiffProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_tokenizer=image_tokenizer
    )


def sft_texts(dataset) -> list[str]:
    """Texts a text tokenizer for SFT should cover: the dataset's text columns plus the fixed prompts the
    trainer adds (report prompt, reasoning instructions), repeated so that BPE merges them."""
    from ...text_tokenizer import texts_from_dataset
    from .collator import REASONING_INSTRUCTIONS, REPORT_PROMPT

    prompts = [REPORT_PROMPT, *REASONING_INSTRUCTIONS.values()]
    return list(texts_from_dataset(dataset)) + prompts * max(8, len(dataset) // 20)


# ----------------------------------------------------------------------------------------------- model
def build_model(script_args: MedDiffScriptArguments, model_args: Any, processor: Any):
    """A MedDiff model: pretrained (`model_name_or_path`, optionally 4/8-bit) or from a preset sized to the
    processor's vocabulary."""
    import torch

    from ...models.meddiff import MedDiffConfig, MedDiffForMaskedDiffusion

    dtype = getattr(model_args, "dtype", None)
    torch_dtype = getattr(torch, dtype) if dtype not in (None, "auto") else dtype
    if getattr(model_args, "model_name_or_path", None):
        from trl import get_quantization_config

        quantization_config = get_quantization_config(model_args)
        kwargs: dict[str, Any] = {"revision": model_args.model_revision}
        if torch_dtype is not None:
            kwargs["dtype"] = torch_dtype
        if model_args.attn_implementation:
            kwargs["attn_implementation"] = model_args.attn_implementation
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
            kwargs["device_map"] = (
                {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
            )
        overrides = dict(script_args.model_config_overrides or {})
        return MedDiffForMaskedDiffusion.from_pretrained(model_args.model_name_or_path, **overrides, **kwargs)
    if getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False):
        raise ValueError(
            "load_in_4bit / load_in_8bit quantise pretrained weights: set model_name_or_path too."
        )
    overrides = dict(processor.model_config_kwargs()) | dict(script_args.model_config_overrides or {})
    config = MedDiffConfig.from_preset(script_args.model_preset, **overrides)
    if model_args.attn_implementation:
        config._attn_implementation = model_args.attn_implementation
    model = MedDiffForMaskedDiffusion(config)
    if isinstance(torch_dtype, torch.dtype):
        model = model.to(torch_dtype)
    return model


def _set_generation_length(model: Any, args: MedDiffSFTConfig) -> None:
    """Save a `generation_config` whose canvas is the longest EOS-padded text response the model trained on, with
    `ordered_eos` on: a model trained on EOS-padded canvases otherwise ends its answers early (on held-out
    validation reports of the long recipe's model, BLEU-1 0.08 without it and 0.39 with it); then the recipe's
    `generation_options`."""
    lengths = [args.response_length_for(task) for task in args.tasks if task != "t2i"]
    lengths = [n for n in lengths if n]
    config = getattr(model, "generation_config", None)
    if not lengths or config is None or not hasattr(config, "gen_length"):
        return
    gen_length = max(lengths)
    config.gen_length = gen_length
    config.ordered_eos = True
    for name, value in (args.generation_options or {}).items():
        setattr(config, name, value)
    block = getattr(config, "block_length", None)
    if block is None and args.generation_block_length:
        block = args.generation_block_length
    config.block_length = block if block is not None and gen_length % block == 0 else None
    if getattr(config, "steps", None) is not None and config.steps > gen_length:
        config.steps = gen_length


# ------------------------------------------------------------------------------------------------ main
def make_parser():
    from trl import ModelConfig, TrlParser

    return TrlParser(
        (MedDiffScriptArguments, MedDiffSFTConfig, ModelConfig),
        prog="hf-meddiff sft",
        description="Masked-diffusion SFT / pretraining of a MedDiff model from a YAML recipe (trainers/).",
        epilog="Options come from `--config recipe.yaml` (keys: the option names) and from flags, which win.",
    )


def validate(script_args: MedDiffScriptArguments, training_args: MedDiffSFTConfig, model_args: Any) -> None:
    """What can be checked before any work starts (steps, sizes, paths, a writable output_dir): `UsageError`s."""
    check_training_length(training_args.max_steps, training_args.num_train_epochs)
    check_positive(training_args, ("per_device_train_batch_size",))
    check_positive(
        script_args,
        (
            "text_vocab_size",
            "image_tokenizer_steps",
            "image_tokenizer_batch_size",
            "medphantom_num_cases",
            "medphantom_image_size",
            "max_train_samples",
        ),
    )
    check_model_path(getattr(model_args, "model_name_or_path", None), "model_name_or_path")
    check_model_path(script_args.processor_path, "processor_path", what="a saved MedDiffProcessor")
    check_model_path(script_args.text_tokenizer_path, "text_tokenizer_path", what="a text tokenizer")
    check_model_path(script_args.image_tokenizer_path, "image_tokenizer_path", what="a MedDiffImageTokenizer")
    if script_args.dataset_path and not os.path.exists(script_args.dataset_path):
        raise MissingInputError(f"dataset_path {script_args.dataset_path!r}: no such file or folder.")
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() not in ("true", "false") and not os.path.isdir(resume):
        raise MissingInputError(f"resume_from_checkpoint {resume!r}: no such checkpoint folder.")
    check_output_dir(training_args.output_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the SFT script; returns the exit status (2 for a problem with the inputs, printed as one line; `128 +
    signal` when SIGTERM or Ctrl-C stopped training after saving a checkpoint)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("sft", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    from transformers import set_seed
    from trl import get_peft_config

    from .trainer import MedDiffSFTTrainer

    script_args, training_args, model_args = parse_recipe(make_parser(), argv)
    validate(script_args, training_args, model_args)
    set_seed(training_args.seed)
    train_dataset, eval_dataset = load_canonical_datasets(script_args)
    with training_args.main_process_first(desc="building the processor"):
        processor = build_processor(script_args, train_dataset, training_args.output_dir)
    set_seed(training_args.seed)  # the initial weights do not depend on whether tokenizers were trained first
    model = build_model(script_args, model_args, processor)
    if eval_dataset is None and training_args.eval_strategy != "no":
        logger.warning("No eval split: evaluation is turned off.")
        training_args.eval_strategy = "no"

    trainer = MedDiffSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    checkpoint = training_args.resume_from_checkpoint
    if isinstance(checkpoint, str) and checkpoint.lower() == "true":
        checkpoint = (
            get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        )
        if checkpoint is None:
            logger.warning(
                f"resume_from_checkpoint=true but {training_args.output_dir} has no checkpoint: starting anew."
            )
    _set_generation_length(trainer.model, training_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.stopped_by_signal:
        return 128 + int(trainer.stopped_by_signal)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json (log history) next to the model
    if trainer.is_world_process_zero():
        recipe = {
            "script": asdict(script_args),
            "model": asdict(model_args),
            # what evaluation needs to ask the way training taught (answer canvas, answer form)
            "training": {
                name: getattr(training_args, name)
                for name in (
                    "tasks",
                    "vqa_target",
                    "response_length",
                    "response_length_per_task",
                    "loss_weighting",
                    "learning_rate",
                    "max_steps",
                    "per_device_train_batch_size",
                )
            },
        }
        with open(os.path.join(training_args.output_dir, "sft_recipe.json"), "w", encoding="utf-8") as f:
            json.dump(recipe, f, indent=2, default=str)
    if eval_dataset is not None and training_args.eval_strategy != "no":
        trainer.log_metrics("eval", trainer.evaluate())
    if training_args.push_to_hub:
        trainer.push_to_hub(training_recipe=json.dumps({"script": asdict(script_args)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
