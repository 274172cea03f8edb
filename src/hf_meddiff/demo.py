"""`hf-meddiff demo`: the README's main job on the embedded default, offline, on a CPU.

Stages (each prints a banner, long loops show progress bars):

1. **data** — generate MedPhantom cases (train / validation / test) and save them as Parquet.
2. **tokenizers** — fit the VQ image tokenizer on the training images (reconstruction error on held-out
   images) and the text tokenizer on the training text; bundle them into a `MedDiffProcessor`.
3. **pretraining** — masked-diffusion pretraining of the embedded MedDiff model with the SFT recipe
   (`trainers/pretrain_embedded.yaml` unless `--recipe` is given) through `hf_meddiff.trainer.sft.script`.
4. **rl** — GRPO of the SFT model with the composite reward (`trainers/grpo_demo.yaml` unless `--rl_recipe` is
   given) through `hf_meddiff.trainer.grpo.script`; reward curves PNG.
5. **evaluation** — `hf-meddiff evaluate` of the SFT model and of the RL model on the same test rows: VQA accuracy
   vs chance (per modality and question type), report BLEU-1 / ROUGE-L / CIDEr / clinical F1, report-to-image
   grids; then one before/after table (`eval/before_after.md`, gains and losses marked, "no gain" said as such)
   and the RL model's card with that table as `model-index`.

Everything lands in one folder (default `outputs/demo`); `summary.json` there lists what was made. Stages are
cached: a second run with the same options reuses every stage that finished (`--fresh` reruns all of them).

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
# The GRPO stage of `--quick`: a couple of tiny steps (on the canvases the SFT stage trained, as the full run).
QUICK_RL_ARGS = [
    "--max_steps", "2",
    "--per_device_train_batch_size", "4",
    "--num_generations", "2",
    "--image_steps", "2",
    "--reward_generation_steps", "2",
    "--max_train_samples", "16",
    "--logging_steps", "1",
]  # fmt: skip
DEFAULT_RECIPE = "pretrain_embedded.yaml"
DEFAULT_RL_RECIPE = "grpo_demo.yaml"
STAGES = ("data", "tokenizers", "pretraining", "rl", "evaluation")


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
    rl_recipe: str | None = field(
        default=None,
        metadata={"help": f"GRPO recipe YAML of the rl stage; unset: trainers/{DEFAULT_RL_RECIPE}."},
    )
    rl_max_steps: int | None = field(
        default=None, metadata={"help": "GRPO steps of the rl stage; unset: the rl recipe's, 2 with --quick."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the data, the tokenizers, training and evaluation."}
    )
    fresh: bool = field(
        default=False,
        metadata={"help": "Rerun every stage even when a previous run with the same options finished it."},
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "Hub repo id (user/name) to share the final model under, and the data under <id>-data."
        },
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


def find_recipe(name: str | None = None, default: str = DEFAULT_RECIPE) -> Path | None:
    """A recipe for the demo: an explicit path, or `trainers/<name>` of the source checkout (`default` unset)."""
    if name is not None and Path(name).is_file():
        return Path(name)
    wanted = name or default
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

    all_questions = bool(not opts.quick and load_recipe(opts.recipe).get("medphantom_all_questions", False))
    ds = make_medphantom(
        opts.resolved("num_cases"),
        seed=opts.seed,
        image_size=opts.resolved("image_size"),
        all_questions=all_questions,
    )
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


def stage_rl(opts: DemoOptions, out: Path, data_path: str, model_dir: str) -> dict[str, Any]:
    import importlib

    try:
        grpo_script = importlib.import_module("hf_meddiff.trainer.grpo.script")
    except ModuleNotFoundError as err:
        raise StageUnavailable("hf_meddiff.trainer.grpo.script (the GRPO recipe runner)") from err
    recipe = find_recipe(opts.rl_recipe, DEFAULT_RL_RECIPE)
    if recipe is None:
        raise StageUnavailable(f"the GRPO recipe trainers/{DEFAULT_RL_RECIPE}")
    rl_dir = out / "rl-model"
    argv = [
        "--config", str(recipe),
        "--policy_path", model_dir,
        "--dataset_name", "canonical",
        "--dataset_path", data_path,
        "--output_dir", str(rl_dir),
        "--seed", str(opts.seed),
    ]  # fmt: skip
    if opts.quick:
        argv += QUICK_RL_ARGS
    if opts.rl_max_steps is not None:
        argv += ["--max_steps", str(opts.rl_max_steps)]
    print("hf-meddiff grpo " + " ".join(argv), flush=True)
    status = grpo_script.main(argv)
    if status:
        raise RuntimeError(f"the GRPO stage stopped with exit status {status}")
    result: dict[str, Any] = {"model": str(rl_dir), "sft_model": model_dir, "recipe": str(recipe)}
    state = rl_dir / "trainer_state.json"
    if state.is_file():
        from .evaluation.plots import plot_reward_curves, read_log_history

        history = read_log_history(rl_dir)
        rewards = [h["reward"] for h in history if "reward" in h]
        if rewards:
            half = max(1, len(rewards) // 2)
            first, last = sum(rewards[:half]) / half, sum(rewards[-half:]) / half
            result.update(first_half_reward=first, last_half_reward=last, reward_points=len(rewards))
            verdict = "rose" if last > first else "did not rise (no gain)"
            print(f"mean training reward {first:.3f} (first half) -> {last:.3f} (second half): {verdict}")
        curves = plot_reward_curves(history, out / "reward_curves.png")
        if curves is not None:
            result["reward_curves"] = str(curves)
            print(f"reward curves -> {curves}")
    return result


def stage_evaluation(
    opts: DemoOptions, out: Path, data_path: str, model_dir: str, sft_dir: str
) -> dict[str, Any]:
    from .evaluation import evaluate_model, load_data_arg
    from .evaluation.compare import compare_summaries, comparison_markdown

    test = load_data_arg(data_path, split="test")
    models = {"sft": sft_dir} if not model_dir or model_dir == sft_dir else {"sft": sft_dir, "rl": model_dir}
    summaries = {}
    judges = None  # the image judges are trained once (on the training split), then shared by both models
    for name, path in models.items():
        print(f"--- evaluating the {name.upper()} model ({path})", flush=True)
        summaries[name] = evaluate_model(
            path,
            test,
            output_dir=out / "eval" / name,
            judges=judges,
            judges_data=data_path,
            image_metrics=True,
            tasks=["vqa", "report", "t2i"],
            max_samples=opts.resolved("eval_samples"),
            vqa_gen_length=opts.resolved("vqa_gen_length"),
            steps=opts.resolved("eval_steps"),
            trainer_state=path,
            seed=opts.seed,
            dataset_name="MedPhantom",
            split="test",
        )
        if (out / "eval" / name / "judges" / "modality").is_dir():
            judges = str(out / "eval" / name / "judges")
    result: dict[str, Any] = {
        name: {"results": summary["files"]["json"], "files": summary["files"]}
        for name, summary in summaries.items()
    }
    if "rl" not in summaries:
        print(Path(summaries["sft"]["files"]["markdown"]).read_text(encoding="utf-8"))
        return result
    rows = compare_summaries(summaries["sft"], summaries["rl"])
    n = summaries["sft"].get("dataset", {}).get("num_samples", "?")
    table = comparison_markdown(
        rows,
        labels=("SFT", "SFT + GRPO"),
        title=f"Before / after GRPO on {n} held-out MedPhantom test rows",
        num_samples=n if isinstance(n, int) else None,
    )
    (out / "eval" / "before_after.md").write_text(table + "\n", encoding="utf-8")
    (out / "eval" / "before_after.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(table)
    result.update(
        before_after=str(out / "eval" / "before_after.md"),
        gains=sum(r["verdict"] == "gain" for r in rows),
        losses=sum(r["verdict"] == "loss" for r in rows),
    )
    _write_card(model_dir, summaries["rl"], table)
    return result


def _write_card(model_dir: str, summary: dict[str, Any], table: str) -> None:
    """The RL model's card: the evaluation as `model-index`, the before/after table in the body."""
    from .hub import render_model_card

    card = render_model_card(
        model_name=Path(model_dir).name,
        model_description=(
            "An embedded MedDiff model trained by `hf-meddiff demo` on synthetic MedPhantom cases: masked-diffusion "
            "pretraining (SFT), then GRPO with the composite reward. A demonstration of the method, not a medical "
            "model."
        ),
        datasets=["MedPhantom (synthetic, generated by hf-meddiff)"],
        eval_results=summary,
        training_summary=table,
    )
    card.save(Path(model_dir) / "README.md")


def _push(opts: DemoOptions, out: Path, context: dict[str, str]) -> dict[str, Any]:
    from .data import push_dataset_to_hub
    from .evaluation import load_canonical
    from .evaluation.inference import load_model_and_processor
    from .hub import push_meddiff_to_hub

    repo = opts.push_to_hub
    model, processor = load_model_and_processor(context["model"], "cpu", False)
    results = Path(out / "eval" / ("rl" if context.get("rl") else "sft") / "results.json")
    push_meddiff_to_hub(
        model,
        processor,
        repo,
        eval_results=str(results) if results.is_file() else None,
        datasets=[f"{repo}-data"],
    )
    push_dataset_to_hub(load_canonical(context["data"]), f"{repo}-data")
    print(f"pushed the model to {repo} and the data to {repo}-data")
    return {"model_repo": repo, "data_repo": f"{repo}-data"}


# --------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------

# Options that do not change what a stage makes (a cached stage stays valid when only these differ).
_NOT_FINGERPRINTED = ("output_dir", "stages", "fresh", "push_to_hub")


def _fingerprint(opts: DemoOptions) -> str:
    values = {k: v for k, v in asdict(opts).items() if k not in _NOT_FINGERPRINTED}
    return json.dumps(values, sort_keys=True, default=str)


def _cached_stages(out: Path, opts: DemoOptions) -> dict[str, dict[str, Any]]:
    """The stages a previous run with the same options finished, in order, while their outputs still exist."""
    if opts.fresh or not (out / "summary.json").is_file():
        return {}
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    if previous.get("fingerprint") != _fingerprint(opts):
        return {}
    cached: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        stage = previous.get("stages", {}).get(name, {})
        paths = [stage.get(k) for k in ("path", "tokenizers", "model") if stage.get(k)]
        if stage.get("status") != "done" or not all(Path(p).exists() for p in paths):
            break
        cached[name] = stage
    return cached


def run_demo(opts: DemoOptions | None = None) -> dict[str, Any]:
    """Run the demo stages in order; a stage whose machinery is missing is reported and the rest skipped.

    Stages a previous run in the same folder finished with the same options are reused (their banner says
    "cached"), so an interrupted demo resumes from the last finished stage; `fresh=True` reruns everything.

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
    cached = _cached_stages(out, opts)
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
        "rl": (
            "GRPO of the pretrained model with the composite reward",
            lambda: stage_rl(opts, out, context.get("data", ""), context.get("model", "")),
        ),
        "evaluation": (
            "evaluate the SFT and the RL model on the same test rows",
            lambda: stage_evaluation(
                opts, out, context.get("data", ""), context.get("model", ""), context.get("sft", "")
            ),
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
        if name in cached:
            result = dict(cached[name])
            print(
                f"cached: finished by a previous run with the same options ({result.get('seconds', '?')} s then)"
            )
        else:
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
            print(f"done in {result['seconds']:.1f} s")
        stages[name] = result
        if name == "pretraining":
            context["sft"] = result.get("model", "")
        if name == "rl":
            context["rl"] = result.get("model", "")
        context.update(
            {
                "data": result.get("path", context.get("data", "")),
                "tokenizers": result.get("tokenizers", context.get("tokenizers", "")),
                "model": result.get("model", context.get("model", "")),
            }
        )
        _write_summary(out, opts, stages, start)
    if opts.push_to_hub and blocked is None and context.get("model"):
        stages["push"] = {**_push(opts, out, context), "status": "done"}
    summary = _write_summary(out, opts, stages, start)
    _print_summary(summary)
    return summary


def _write_summary(
    out: Path, opts: DemoOptions, stages: dict[str, dict[str, Any]], start: float
) -> dict[str, Any]:
    summary = {
        "ok": all(s["status"] in ("done", "skipped") for s in stages.values())
        and not any(s.get("reason", "").startswith("needs") for s in stages.values()),
        "output_dir": str(out),
        "seconds": round(time.time() - start, 1),
        "options": asdict(opts),
        "fingerprint": _fingerprint(opts),
        "stages": stages,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
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
        "sft model": summary["stages"].get("pretraining", {}).get("model"),
        "rl model": summary["stages"].get("rl", {}).get("model"),
        "reward curves": summary["stages"].get("rl", {}).get("reward_curves"),
        "before/after": summary["stages"].get("evaluation", {}).get("before_after"),
    }
    for label, path in where.items():
        if path:
            print(f"  {label:<12} {path}")
    for name in ("sft", "rl"):
        files = summary["stages"].get("evaluation", {}).get(name, {}).get("files", {})
        for label, path in files.items():
            if label not in ("json", "predictions") and path:
                print(f"  {name + ' ' + label:<12} {path}")
    print("Not for clinical decisions." + ("" if summary["ok"] else " Some stages did not run; see above."))
