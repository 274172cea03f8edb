"""Model loading and batched generation for evaluation and `hf-meddiff generate`: a saved folder becomes a model,
a processor and a `MedDiffPipeline`; generation-config overrides stay valid against the model's config."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..formatting import format_question

__all__ = [
    "batched_images",
    "batched_text",
    "generate_one",
    "load_model_and_processor",
    "text_generation_overrides",
    "trained_text_canvases",
    "trained_vqa_length",
]


def _device(device: str | None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model_and_processor(
    model_path: str | os.PathLike, device: str | None = None, trust_remote_code=False
):
    """`AutoModelForMaskedLM` + `AutoProcessor` from a saved folder (or a Hub id), in eval mode on `device`."""
    from transformers import AutoModelForMaskedLM, AutoProcessor

    from .. import models  # noqa: F401  (registers the Auto classes)

    path = str(model_path)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: pass the folder a training run saved (its --output_dir), e.g. "
            "outputs/demo/model."
        )
    model = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model.to(_device(device)).eval(), processor


def trained_text_canvases(model_dir: str | os.PathLike) -> dict[str, int]:
    """The text canvas of each task a model folder was trained with, e.g. `{"vqa": 4, "report": 256}`.

    Read from the folder's `sft_recipe.json` (`response_length_per_task`, else `response_length` for every text
    task), else from its `grpo_recipe.json` (`completion_length_per_task`, then the GRPO policy's own folder for
    the tasks it leaves out). `{}` when the folder says nothing (e.g. a Hub id).
    """
    folder = Path(model_dir)
    sft = _read_json(folder / "sft_recipe.json")
    if sft is not None:
        training = sft.get("training") or {}
        canvases = dict.fromkeys(("vqa", "report", "reasoning"), training.get("response_length"))
        canvases.update(training.get("response_length_per_task") or {})
        return {task: int(length) for task, length in canvases.items() if length}
    grpo = _read_json(folder / "grpo_recipe.json")
    if grpo is None:
        return {}
    policy = (grpo.get("script") or {}).get("policy_path")
    canvases = (
        trained_text_canvases(policy) if policy and Path(policy).is_dir() and Path(policy) != folder else {}
    )
    lengths = (grpo.get("training") or {}).get("completion_length_per_task") or {}
    return canvases | {task: int(length) for task, length in lengths.items() if length}


def trained_vqa_length(model_dir: str | os.PathLike) -> int | None:
    """The VQA answer canvas a model was trained with (`trained_text_canvases`; `None` if unknown)."""
    return trained_text_canvases(model_dir).get("vqa")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def pipeline_for(model, processor):
    """A `MedDiffPipeline` over `model` and `processor` with its per-call progress bar off (evaluation loops show
    one bar per loop)."""
    from ..generation import MedDiffPipeline

    pipe = MedDiffPipeline(model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image_generation_overrides(image_steps: int | None = None) -> dict[str, Any]:
    """Overrides of report-to-image generation: only `image_steps`, when given."""
    return {} if image_steps is None else {"image_steps": image_steps}


def text_generation_overrides(
    model, gen_length: int | None = None, steps: int | None = None, **extra: Any
) -> dict[str, Any]:
    """Generation-config overrides for a text canvas of `gen_length` that stay valid against the model's
    `generation_config`: a block length that does not divide `gen_length` becomes one block, without an
    explicit `steps` the sampler commits one token per step (`steps = gen_length`), and explicit `steps` are
    rounded up to a multiple of the number of blocks (every block gets the same number of steps)."""
    overrides = {k: v for k, v in extra.items() if v is not None}
    config = getattr(model, "generation_config", None)
    block = getattr(config, "block_length", None)
    if gen_length is None:
        if steps is not None:
            overrides["steps"] = _steps_per_block_multiple(
                int(steps), getattr(config, "gen_length", None), block
            )
        return overrides
    overrides["gen_length"] = int(gen_length)
    if block and gen_length % block:
        overrides["block_length"] = None
        block = None
    steps = int(steps) if steps is not None else int(gen_length)
    overrides["steps"] = _steps_per_block_multiple(steps, int(gen_length), block)
    return overrides


def _steps_per_block_multiple(steps: int, gen_length: int | None, block_length: int | None) -> int:
    """`steps` rounded up so that every block of the canvas gets the same number of steps."""
    if not gen_length or not block_length or gen_length % block_length:
        return steps
    num_blocks = gen_length // block_length
    return -(-steps // num_blocks) * num_blocks


def batched_text(pipe, images, questions, *, batch_size, desc, progress, **gen_kwargs) -> list[str]:
    """Text answers of `pipe` for each (image, question), `batch_size` rows per call (`None` question: the
    processor's report instruction)."""
    out: list[str] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        result = pipe(
            image=list(images[start : start + batch_size]),
            question=list(questions[start : start + batch_size]),
            **gen_kwargs,
        )
        texts = result.text
        out.extend([texts] if isinstance(texts, str) else list(texts))
    return out


def batched_images(pipe, prompts, *, batch_size, desc, progress, **gen_kwargs) -> list[Any]:
    """PIL images `pipe` generates from each prompt, `batch_size` prompts per call."""
    out: list[Any] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=not progress):
        out.extend(pipe(prompt=list(prompts[start : start + batch_size]), **gen_kwargs).images)
    return out


def generate_one(
    model_path: str,
    *,
    task: str,
    image: Any = None,
    question: str | None = None,
    options: Sequence[str] | None = None,
    prompt: str | None = None,
    output: str = "generated.png",
    gen_length: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """One generation for `hf-meddiff generate`; returns the text (or where the image was saved)."""
    import torch

    # looked up on the package, where tests replace it

    torch.manual_seed(seed)
    model, processor = load_model_and_processor(model_path, device, trust_remote_code)
    pipe = pipeline_for(model, processor)
    if task == "image":
        picture = pipe(prompt=prompt, **image_generation_overrides(steps)).images[0]
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        picture.save(output)
        return f"saved {output}"
    if task == "vqa" and gen_length is None:
        gen_length = trained_vqa_length(model_path)  # answer on the canvas VQA was trained with
    kwargs = text_generation_overrides(model, gen_length, steps)
    text_question = format_question(question, options) if task == "vqa" else None  # None: report instruction
    text = pipe(image=_open_cli_image(image), question=text_question, **kwargs).text
    return text if isinstance(text, str) else text[0]


def _open_cli_image(value: Any):
    """`--image PATH` as the image processor takes it (other values pass through)."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    if not Path(value).exists():
        raise FileNotFoundError(f"--image {value}: no such file.")
    from ..data.medical_io import open_image

    return open_image(value)
