"""`hf-meddiff demo`: the README's main job on the embedded default, offline, on a CPU.

Stages (each prints a banner, long loops show progress bars):

1. **data** — generate MedPhantom cases (train / validation / test) and save them as Parquet.
2. **tokenizers** — fit the VQ image tokenizer on the training images (reconstruction error on held-out
   images) and the text tokenizer on the training text; bundle them into a `MedDiffProcessor`.
3. **pretraining** — masked-diffusion pretraining of the embedded MedDiff model with the SFT recipe
   (`trainers/pretrain_embedded.yaml` unless `--recipe` is given) through `hf_meddiff.trainer.sft.script`.
4. **evaluation** — `hf-meddiff evaluate` on the test split: VQA accuracy vs chance, report BLEU-1 / ROUGE-L,
   a report-to-image grid PNG, loss curves.

Everything lands in one folder (default `outputs/demo`); `summary.json` there lists what was made.

Example (about a minute on 2 CPU cores):

```python
from hf_meddiff.demo import DemoOptions, run_demo
summary = run_demo(DemoOptions(output_dir="outputs/demo-quick", quick=True))
print(summary["stages"]["evaluation"]["status"])
```
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Sizes come from the pretraining recipe (trainers/pretrain_embedded.yaml: MedPhantom cases and image size,
# tokenizer preset/steps/vocabulary, training length); `--quick` replaces them with a tiny (~1 minute) setting.
RECIPE_KEYS = {
    "num_cases": "medphantom_num_cases",
    "image_size": "medphantom_image_size",
    "tokenizer_preset": "image_tokenizer_preset",
    "tokenizer_steps": "image_tokenizer_steps",
    "tokenizer_batch_size": "image_tokenizer_batch_size",
    "text_vocab_size": "text_vocab_size",
    "max_steps": "max_steps",
}
FALLBACK = {"num_cases": 600, "image_size": 64, "tokenizer_preset": "embedded", "tokenizer_steps": 300,
            "tokenizer_batch_size": 32, "text_vocab_size": 1024, "max_steps": None}  # fmt: skip
FULL_EVAL = {"eval_samples": 96, "vqa_gen_length": None, "eval_steps": None}  # VQA canvas: as trained
QUICK = {
    "num_cases": 48,
    "image_size": 32,
    "tokenizer_preset": "tiny",
    "tokenizer_steps": 10,
    "tokenizer_batch_size": 16,
    "text_vocab_size": 1024,
    "max_steps": 4,
    "eval_samples": 6,
    "vqa_gen_length": None,
    "eval_steps": 16,
}
# The tiny model and short canvases of `--quick` (passed to the SFT script as overrides of the recipe).
QUICK_SFT_ARGS = [
    "--model_preset", "tiny",
    "--per_device_train_batch_size", "8",
    "--logging_steps", "1",
    "--dataset_eval_split", "none",
    "--report_to", "none",
]  # fmt: skip
DEFAULT_RECIPE = "pretrain_embedded.yaml"
STAGES = ("data", "tokenizers", "pretraining", "evaluation")


class StageUnavailable(Exception):
    """A stage needs a part of hf-meddiff this installation does not have yet."""


@dataclass
class DemoOptions:
    """Options of `run_demo`: the flags (and `--config` YAML keys) of `hf-meddiff demo`. Sizes left unset come from
    `--quick`, else from the pretraining recipe."""

    output_dir: str = field(
        default="outputs/demo", metadata={"help": "Folder for every artefact of the run."}
    )
    num_cases: int | None = field(
        default=None, metadata={"help": "MedPhantom cases; unset: the recipe's (600), 48 with --quick."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Pretraining steps; unset: the recipe's, 4 with --quick."}
    )
    tokenizer_steps: int | None = field(
        default=None,
        metadata={"help": "Image-tokenizer training steps; unset: the recipe's, 10 with --quick."},
    )
    eval_samples: int | None = field(
        default=None, metadata={"help": "Test cases to evaluate; unset: 96, 6 with --quick."}
    )
    vqa_gen_length: int | None = field(
        default=None, metadata={"help": "Canvas of VQA answers at evaluation; unset: as trained."}
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Denoising steps of reports at evaluation; unset: the model's config."},
    )
    recipe: str | None = field(
        default=None,
        metadata={"help": f"SFT recipe YAML of the pretraining stage; unset: trainers/{DEFAULT_RECIPE}."},
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the data, the tokenizers, training and evaluation."}
    )
    quick: bool = field(default=False, metadata={"help": "A tiny (~1 minute) version, for smoke tests."})
    stages: list[str] = field(
        default_factory=lambda: list(STAGES),
        metadata={
            "help": f"Stages to run, among {list(STAGES)} (a stage needs the output of the ones before)."
        },
    )
    extra_sft_args: list[str] = field(
        default_factory=list,
        metadata={
            "help": "More flags for the pretraining stage's `hf-meddiff sft` (a YAML list in --config)."
        },
    )

    def __post_init__(self):
        unknown = [stage for stage in self.stages if stage not in STAGES]
        if unknown:
            raise ValueError(f"Unknown demo stage(s) {unknown}; choose from {list(STAGES)}.")

    def resolved(self, key: str) -> Any:
        """An explicit option, else the `--quick` value, else the recipe's value, else a fallback."""
        value = getattr(self, key, None)
        if value is not None:
            return value
        if self.quick:
            return QUICK[key]
        if key in FULL_EVAL:
            return FULL_EVAL[key]
        recipe = load_recipe(self.recipe)
        return recipe.get(RECIPE_KEYS[key], FALLBACK[key])


def load_recipe(name: str | None) -> dict[str, Any]:
    """The pretraining recipe's settings ({} when there is no recipe file)."""
    import yaml

    path = find_recipe(name)
    if path is None:
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _banner(index: int, name: str, text: str) -> None:
    line = "=" * 78
    print(f"\n{line}\n[{index}/{len(STAGES)}] {name}: {text}\n{line}", flush=True)


def _missing(err: BaseException) -> str | None:
    """The hf_meddiff module/attribute a stage lacked, when that is why it failed."""
    if isinstance(err, ModuleNotFoundError) and err.name and err.name.startswith("hf_meddiff"):
        return err.name
    if isinstance(err, ImportError) and "hf_meddiff" in str(err):
        return str(err)
    if isinstance(err, StageUnavailable):
        return str(err)
    return None


def find_recipe(name: str | None = None) -> Path | None:
    """The SFT recipe for the demo: an explicit path, or `trainers/<name>` of the source checkout."""
    if name is not None and Path(name).is_file():
        return Path(name)
    wanted = name or DEFAULT_RECIPE
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "trainers" / wanted
        if candidate.is_file():
            return candidate
    if name is not None:
        raise FileNotFoundError(
            f"--recipe {name}: no such file (looked in the working folder and trainers/)."
        )
    return None


# --------------------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------------------


def stage_data(opts: DemoOptions, out: Path) -> dict[str, Any]:
    from .evaluation import describe_dataset, make_medphantom, save_canonical

    ds = make_medphantom(opts.resolved("num_cases"), seed=opts.seed, image_size=opts.resolved("image_size"))
    path = save_canonical(ds, out / "data")
    counts = describe_dataset(ds, num_examples=0)["counts"]
    print(f"{len(ds)} cases -> {path}")
    print("splits: " + ", ".join(f"{k}={v}" for k, v in counts.get("split", {}).items()))
    print("modalities: " + ", ".join(f"{k}={v}" for k, v in counts.get("modality", {}).items()))
    return {"path": str(path), "num_cases": len(ds), "splits": counts.get("split", {})}


def stage_tokenizers(opts: DemoOptions, out: Path, data_path: str) -> dict[str, Any]:
    from .evaluation import fit_tokenizers, load_data_arg

    train = load_data_arg(data_path, split="train")
    report = fit_tokenizers(
        train,
        out / "tokenizers",
        preset=opts.resolved("tokenizer_preset"),
        image_size=opts.resolved("image_size"),
        max_steps=opts.resolved("tokenizer_steps"),
        batch_size=opts.resolved("tokenizer_batch_size"),
        text=True,
        text_vocab_size=opts.resolved("text_vocab_size"),
        seed=opts.seed,
    )
    heldout = report["image_tokenizer"]["heldout"]
    print(
        f"image tokenizer: {report['image_tokenizer']['codebook_size']} codes, held-out reconstruction "
        f"MSE {heldout['mse']:.4f} (PSNR {heldout['psnr']:.1f} dB), codebook usage {heldout['codebook_usage']:.0%}"
    )
    print(f"text tokenizer: {report['text_tokenizer']['vocab_size']} tokens")
    print(f"tokenizers -> {out / 'tokenizers'}")
    return {**report, "path": data_path, "tokenizers": str(out / "tokenizers")}


def stage_pretraining(opts: DemoOptions, out: Path, data_path: str, tokenizers_dir: str) -> dict[str, Any]:
    import importlib

    try:
        sft_script = importlib.import_module("hf_meddiff.trainer.sft.script")
    except ModuleNotFoundError as err:
        raise StageUnavailable("hf_meddiff.trainer.sft.script (the SFT recipe runner)") from err
    recipe = find_recipe(opts.recipe)
    if recipe is None:
        raise StageUnavailable(f"the pretraining recipe trainers/{DEFAULT_RECIPE}")
    model_dir = out / "model"
    argv = [
        "--config",
        str(recipe),
        "--dataset_name",
        "canonical",
        "--dataset_path",
        data_path,
        "--text_tokenizer_path",
        str(Path(tokenizers_dir) / "text_tokenizer"),
        "--image_tokenizer_path",
        str(Path(tokenizers_dir) / "image_tokenizer"),
        "--output_dir",
        str(model_dir),
        "--seed",
        str(opts.seed),
    ]
    if opts.quick:
        argv += QUICK_SFT_ARGS
    max_steps = opts.resolved("max_steps")
    if max_steps is not None:
        argv += ["--max_steps", str(max_steps)]
    argv += list(opts.extra_sft_args)
    print("hf-meddiff sft " + " ".join(argv), flush=True)
    sft_script.main(argv)
    state = model_dir / "trainer_state.json"
    result: dict[str, Any] = {"model": str(model_dir), "recipe": str(recipe)}
    if state.is_file():
        history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
        losses = [h["loss"] for h in history if "loss" in h]
        if losses:
            result.update(first_loss=losses[0], last_loss=losses[-1])
            print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps")
    return result


def stage_evaluation(opts: DemoOptions, out: Path, data_path: str, model_dir: str) -> dict[str, Any]:
    from .evaluation import evaluate_model, load_data_arg

    test = load_data_arg(data_path, split="test")
    summary = evaluate_model(
        model_dir,
        test,
        output_dir=out / "eval",
        tasks=["vqa", "report", "t2i"],
        max_samples=opts.resolved("eval_samples"),
        vqa_gen_length=opts.resolved("vqa_gen_length"),
        steps=opts.resolved("eval_steps"),
        trainer_state=model_dir,
        seed=opts.seed,
        dataset_name="MedPhantom",
        split="test",
    )
    print(Path(summary["files"]["markdown"]).read_text(encoding="utf-8"))
    return {"results": summary["files"]["json"], "files": summary["files"]}


# --------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------


def run_demo(opts: DemoOptions | None = None) -> dict[str, Any]:
    """Run the demo stages in order; a stage whose machinery is missing is reported and the rest skipped.

    Returns:
        the summary dict (also written to `<output_dir>/summary.json`): `{"ok", "output_dir", "seconds",
        "stages": {name: {"status": "done" | "not available" | "skipped" | "failed", …}}}`.
    """
    opts = opts or DemoOptions()
    out = Path(opts.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    mode = "quick" if opts.quick else "full"
    print(f"hf-meddiff demo ({mode}) -> {out}\nNot for clinical decisions: MedPhantom cases are synthetic.")
    start = time.time()
    stages: dict[str, dict[str, Any]] = {}
    context: dict[str, str] = {}
    steps = {
        "data": ("make MedPhantom cases", lambda: stage_data(opts, out)),
        "tokenizers": (
            "fit the VQ image tokenizer and the text tokenizer",
            lambda: stage_tokenizers(opts, out, context.get("data", "")),
        ),
        "pretraining": (
            "masked-diffusion pretraining of the embedded model",
            lambda: stage_pretraining(opts, out, context.get("data", ""), context.get("tokenizers", "")),
        ),
        "evaluation": (
            "evaluate on the test split",
            lambda: stage_evaluation(opts, out, context.get("data", ""), context.get("model", "")),
        ),
    }
    blocked: str | None = None
    for index, name in enumerate(STAGES, start=1):
        text, fn = steps[name]
        _banner(index, name, text)
        if name not in opts.stages:
            stages[name] = {"status": "skipped", "reason": "not requested"}
            print("skipped (not requested)")
            continue
        if blocked is not None:
            stages[name] = {"status": "skipped", "reason": f"needs the {blocked} stage"}
            print(f"skipped: needs the output of the {blocked} stage")
            continue
        t0 = time.time()
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - a stage failure is reported, then the demo stops cleanly
            missing = _missing(err)
            if missing is None:
                traceback.print_exc()
                stages[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                print(f"FAILED: {type(err).__name__}: {err}")
            else:
                stages[name] = {"status": "not available", "needs": missing}
                print(f"not available yet in this installation of hf-meddiff: needs {missing}")
            blocked = name
            continue
        result["status"] = "done"
        result["seconds"] = round(time.time() - t0, 1)
        stages[name] = result
        context.update(
            {
                "data": result.get("path", context.get("data", "")),
                "tokenizers": result.get("tokenizers", context.get("tokenizers", "")),
                "model": result.get("model", context.get("model", "")),
            }
        )
        print(f"done in {result['seconds']:.1f} s")
    summary = {
        "ok": all(s["status"] in ("done", "skipped") for s in stages.values())
        and not any(s.get("reason", "").startswith("needs") for s in stages.values()),
        "output_dir": str(out),
        "seconds": round(time.time() - start, 1),
        "options": asdict(opts),
        "stages": stages,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        "\n"
        + "=" * 78
        + f"\nSummary ({summary['seconds']:.0f} s) — everything is under {summary['output_dir']}"
    )
    for name, stage in summary["stages"].items():
        detail = stage.get("needs") or stage.get("reason") or stage.get("error") or ""
        print(f"  {name:<12} {stage['status']:<14} {detail}")
    where = {
        "data": summary["stages"].get("data", {}).get("path"),
        "tokenizers": summary["stages"].get("tokenizers", {}).get("tokenizers"),
        "model": summary["stages"].get("pretraining", {}).get("model"),
        "results": summary["stages"].get("evaluation", {}).get("results"),
    }
    for label, path in where.items():
        if path:
            print(f"  {label:<12} {path}")
    files = summary["stages"].get("evaluation", {}).get("files", {})
    for label, path in files.items():
        if label not in ("json",) and path:
            print(f"  {label:<12} {path}")
    print("Not for clinical decisions." + ("" if summary["ok"] else " Some stages did not run; see above."))
