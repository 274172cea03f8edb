"""Shared pieces of the `examples/claim_*.py` scripts: sizes, MedPhantom data, a cached SFT base, SFT / GRPO runs
through the library's own scripts, evaluation and seed statistics.

Every claim script starts from the same kind of model: a MedDiff SFT base trained on MedPhantom with the
pretraining recipe `trainers/pretrain_embedded.yaml` (the `--config` of `hf-meddiff sft`), shrunk by the flags of
`Size`. A base is trained once and cached in `~/.cache/hf-meddiff/claims/` (or `$HF_MEDDIFF_CLAIMS_CACHE`) under a
key made of its settings and of the recipe file's content, so two scripts that ask for the same base share it and a
second run of a script reuses it.

    from _claims_common import Size, cached_base
    base = cached_base(Size.quick(), seed=0)        # a folder with model + processor
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "trainers"
SFT_RECIPE = RECIPES / "pretrain_embedded.yaml"
CACHE = Path(os.environ.get("HF_MEDDIFF_CLAIMS_CACHE", "~/.cache/hf-meddiff/claims")).expanduser()


@dataclass(frozen=True)
class Size:
    """How big a claim run is. `Size()` is the default (each script about 10-15 minutes on 2 idle CPU cores);
    `Size.quick()` is a smoke run of a minute or two."""

    num_cases: int = 1200  # MedPhantom cases over all splits (80 / 10 / 10)
    image_size: int = 32  # pixels; the 'tiny' image tokenizer turns 32 px into 4x4 tokens of 64 codes
    all_questions: bool = True  # training cases get a question of every type they answer
    tokenizer_steps: int = 80
    text_vocab_size: int = 1024  # as the recipe: a smaller BPE vocabulary makes reports longer than 80 tokens
    model_preset: str = "tiny"
    model_overrides: str = '{"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3}'
    sft_steps: int = 500  # steps of the shared SFT base
    sft_batch_size: int = 8
    arm_sft_steps: int = 60  # steps of an SFT arm started from the base (claims that compare SFT with GRPO)
    grpo_steps: int = 20
    grpo_batch_size: int = 8
    num_generations: int = 4
    eval_samples: int = 64  # held-out rows scored per model
    report_length: int = 80  # GRPO canvas of reports (as the SFT recipe trains them)
    rl_image_steps: int = 8  # MaskGIT steps of GRPO's image rollouts and of the cycle / inpainting rewards
    reasoning_steps: int = 32  # denoising steps of a 96-token reasoning rollout in GRPO / rejection sampling
    judge_epochs: int = 8  # image judges (report-to-image FID / KID features)
    base: str | None = None  # a trained MedDiff folder to start from instead of training a base (`--base`)

    @classmethod
    def quick(cls) -> Size:
        return cls(
            num_cases=96,
            all_questions=False,
            tokenizer_steps=4,
            model_overrides='{"hidden_size": 64, "num_hidden_layers": 1}',
            sft_steps=3,
            sft_batch_size=4,
            arm_sft_steps=2,
            grpo_steps=1,
            grpo_batch_size=4,
            num_generations=2,
            eval_samples=8,
            report_length=12,
            rl_image_steps=2,
            reasoning_steps=8,
            judge_epochs=1,
        )


# ------------------------------------------------------------------------------------------- command line
def add_common_args(parser: argparse.ArgumentParser, *, default_seeds: int = 3) -> None:
    """Flags every claim script has: output folder, seeds, `--quick` and the size flags."""
    defaults = Size()
    parser.add_argument("--output-dir", required=True, help="folder for the JSON, the table and the models")
    parser.add_argument(
        "--seeds", type=int, default=default_seeds, help="seeds 0..N-1 (mean and spread over them)"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (a minute or two, 1 seed)")
    parser.add_argument(
        "--num-cases", type=int, default=None, help=f"MedPhantom cases (default {defaults.num_cases})"
    )
    parser.add_argument(
        "--sft-steps", type=int, default=None, help=f"SFT base steps (default {defaults.sft_steps})"
    )
    parser.add_argument(
        "--arm-sft-steps",
        type=int,
        default=None,
        help=f"SFT steps of an SFT arm from the base (default {defaults.arm_sft_steps})",
    )
    parser.add_argument(
        "--grpo-steps", type=int, default=None, help=f"GRPO steps (default {defaults.grpo_steps})"
    )
    parser.add_argument(
        "--tokenizer-steps",
        type=int,
        default=None,
        help=f"image-tokenizer training steps of a base (default {defaults.tokenizer_steps})",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help=f"held-out rows per evaluation (default {defaults.eval_samples})",
    )
    parser.add_argument("--cache-dir", default=None, help=f"where SFT bases are cached (default {CACHE})")
    parser.add_argument(
        "--base",
        default=None,
        help="a trained MedDiff folder to use as the SFT base, e.g. the model/ folder of `hf-meddiff demo`; the "
        "claim then runs on that model's own data and test split (claims that hold data out train their own)",
    )


def size_from_args(args: argparse.Namespace) -> Size:
    size = Size.quick() if args.quick else Size()
    changes = {
        "num_cases": args.num_cases,
        "sft_steps": args.sft_steps,
        "arm_sft_steps": args.arm_sft_steps,
        "grpo_steps": args.grpo_steps,
        "eval_samples": args.eval_samples,
        "tokenizer_steps": args.tokenizer_steps,
        "base": str(Path(args.base).resolve()) if args.base else None,
    }
    size = replace(size, **{k: v for k, v in changes.items() if v is not None})
    if args.quick:
        args.seeds = 1
    if args.cache_dir:
        global CACHE
        CACHE = Path(args.cache_dir).expanduser()
    return size


# ------------------------------------------------------------------------------------------------- data
def make_data(size: Size, seed: int = 0, *, expand: bool | None = None):
    """MedPhantom cases (all splits in the `split` column); training cases get every question type they answer
    when `expand` (default: `size.all_questions`). With `size.base`: the data that base was trained on, as saved."""
    from hf_meddiff.data import expand_phantom_questions, make_phantom_dataset

    if size.base:
        return base_data(size.base)
    ds = make_phantom_dataset(size.num_cases, seed=seed, image_size=size.image_size)
    if size.all_questions if expand is None else expand:
        ds = expand_phantom_questions(ds, seed=seed)
    return ds


def base_data_path(base: str) -> Path:
    """The canonical dataset a base was trained on: `data/data.parquet` beside its folder (the layout of the cached
    bases and of `hf-meddiff demo`), else the `dataset_path` of its `sft_recipe.json` (a `--base` elsewhere)."""
    beside = Path(base).parent / "data" / "data.parquet"
    if beside.is_file():
        return beside
    recipe = Path(base) / "sft_recipe.json"
    script = json.loads(recipe.read_text()).get("script", {}) if recipe.is_file() else {}
    path = script.get("dataset_path")
    if not path or not Path(path).exists():
        raise SystemExit(
            f"--base {base}: cannot find the data it was trained on (no {beside} and no dataset_path in its "
            "sft_recipe.json); the claim must test on that data's held-out split."
        )
    return Path(path)


def base_data(base: str):
    from hf_meddiff.evaluation import load_canonical

    return load_canonical(str(base_data_path(base)))


def save_data(ds, folder: str | os.PathLike) -> str:
    """Save a canonical dataset as `<folder>/data.parquet` and return that path."""
    from hf_meddiff.evaluation import save_canonical

    return str(save_canonical(ds, folder))


def fingerprint(settings: dict[str, Any], *files: Path) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    for path in files:
        text += hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached(name: str, settings: dict[str, Any], build: Callable[[Path], None], *files: Path) -> Path:
    """`CACHE/<name>-<key>`, built by `build(folder)` when it is not there yet (the key hashes `settings` and
    `files`). A half-built folder from an interrupted run is rebuilt."""
    folder = CACHE / f"{name}-{fingerprint(settings, *files)}"
    if (folder / "DONE").is_file():
        print(f"[cache] {name}: reusing {folder}", flush=True)
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=2, default=str), encoding="utf-8")
    build(folder)
    (folder / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S"), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- training
@contextlib.contextmanager
def _quiet(enabled: bool = True):
    """Keep the trainers' per-step log lines out of the claim's output (progress bars stay on stderr)."""
    if not enabled:
        yield
        return
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield


def run_sft(
    output_dir: str | os.PathLike,
    data_path: str,
    size: Size,
    *,
    seed: int,
    steps: int,
    init: str | os.PathLike | None = None,
    extra: Sequence[str] = (),
) -> str:
    """`hf-meddiff sft --config trainers/pretrain_embedded.yaml` on `data_path`, shrunk to `size`; from scratch
    (tokenizers trained on the train split) or continued from the model folder `init`. Returns the model folder."""
    from hf_meddiff.trainer.sft.script import main as sft_main

    argv = [
        "--config", str(SFT_RECIPE),
        "--dataset_name", "canonical",
        "--dataset_path", data_path,
        "--dataset_eval_split", "none",
        "--output_dir", str(output_dir),
        "--seed", str(seed),
        "--max_steps", str(steps),
        "--per_device_train_batch_size", str(size.sft_batch_size),
        "--save_strategy", "no",
        "--report_to", "none",
        "--logging_steps", str(max(1, steps // 10)),
    ]  # fmt: skip
    if init is None:
        argv += [
            "--image_tokenizer_preset", "tiny",
            "--image_tokenizer_steps", str(size.tokenizer_steps),
            "--text_vocab_size", str(size.text_vocab_size),
            "--model_preset", size.model_preset,
            "--model_config_overrides", size.model_overrides,
        ]  # fmt: skip
    else:
        argv += ["--model_name_or_path", str(init), "--processor_path", str(init), "--warmup_steps", "0"]
    argv += list(extra)
    status = sft_main(argv)
    if status:
        raise RuntimeError(f"hf-meddiff sft stopped with exit status {status}: {' '.join(argv)}")
    return str(output_dir)


def cached_base(size: Size, seed: int, *, data: str = "all", holdout: Sequence[str] = ()) -> str:
    """The shared SFT base for `size` and `seed`, trained once into the cache.

    `data="all"`: trained on the i.i.d. training split of MedPhantom (every modality and question type);
    `data="modality"` / `"question_type"`: the rows whose value is in `holdout` are left out (see `split_phantom`).
    """
    if size.base:
        if data != "all":
            raise SystemExit(
                "--base gives a model trained on every modality and question type; this claim trains its own base "
                "without the held-out groups, so run it without --base."
            )
        return size.base
    settings = {
        "kind": "sft-base",
        "size": asdict(size),
        "seed": seed,
        "data": data,
        "holdout": list(holdout),
    }

    def build(folder: Path) -> None:
        ds = make_data(size, seed)
        if data != "all":
            from hf_meddiff.data import split_phantom

            parts = split_phantom(ds, by=data, holdout=list(holdout))
            from datasets import concatenate_datasets

            ds = concatenate_datasets([parts["train"], parts["validation"]])
        path = save_data(ds, folder / "data")
        print(f"[base] SFT base ({data}, holdout {list(holdout)}, seed {seed}) -> {folder}", flush=True)
        run_sft(folder / "model", path, size, seed=seed, steps=size.sft_steps)

    return str(cached("sft-base", settings, build, SFT_RECIPE) / "model")


REASONING_LENGTH = 96
"""Canvas of reasoning responses (tokens). MedPhantom rationales cite every box: the median target is ~78 tokens
with the 1024-token vocabulary, the longest ~160; training rows longer than this are skipped and counted."""


def reasoning_sft_args(style: str, length: int = REASONING_LENGTH) -> list[str]:
    """SFT flags that train only grounded reasoning (annotation rationales) in `style`."""
    return [
        "--tasks", "reasoning",
        "--task_mix", '{"reasoning": 1.0}',
        "--reasoning_styles", style,
        "--response_length_per_task", json.dumps({"vqa": 4, "report": 80, "reasoning": length}),
        "--skip_bad_records", "true",
    ]  # fmt: skip


def reasoning_grpo_args(style: str, size: Size, length: int = REASONING_LENGTH) -> list[str]:
    """GRPO flags (over trainers/grpo_vqa.yaml) for reasoning rows in `style` with accuracy + format rewards."""
    return [
        "--diffusion_steps", str(size.reasoning_steps),
        "--tasks", "reasoning",
        "--reasoning_style", style,
        "--rewards", "accuracy", "format",
        "--reward_weights", "1.0", "0.5",
        "--completion_length_per_task", json.dumps({"vqa": 4, "reasoning": length}),
    ]  # fmt: skip


def cached_reasoner(size: Size, seed: int, style: str) -> str:
    """The shared SFT base, then `size.arm_sft_steps` of SFT on annotated grounded reasoning in `style` (cached)."""
    base = cached_base(size, seed)
    settings = {"kind": "reasoner", "size": asdict(size), "seed": seed, "style": style}

    def build(folder: Path) -> None:
        data = str(base_data_path(base))
        run_sft(folder / "model", data, size, seed=seed, steps=size.arm_sft_steps, init=base,
                extra=reasoning_sft_args(style))  # fmt: skip

    return str(cached("reasoner", settings, build, SFT_RECIPE) / "model")


def cached_reasoner_rl(size: Size, seed: int, style: str) -> str:
    """`cached_reasoner` then GRPO (accuracy + format) on reasoning rows in `style` (cached)."""
    reasoner = cached_reasoner(size, seed, style)
    settings = {"kind": "reasoner-rl", "size": asdict(size), "seed": seed, "style": style}

    def build(folder: Path) -> None:
        data = str(base_data_path(cached_base(size, seed)))
        run_grpo(folder / "model", reasoner, data, size, seed=seed, extra=reasoning_grpo_args(style, size))

    return str(cached("reasoner-rl", settings, build, SFT_RECIPE, RECIPES / "grpo_vqa.yaml") / "model")


def cached_judges(size: Size, seed: int) -> str:
    """Image judges (modality / finding classifiers whose features give the domain FID / KID of report-to-image)
    trained on the real training images of the base's data, cached."""
    demo_judges = Path(size.base).parent / "eval" / "sft" / "judges" if size.base else None
    if demo_judges is not None and (demo_judges / "judges.json").is_file():
        return str(demo_judges)  # the judges `hf-meddiff demo` trained on the base's own data
    settings = {"kind": "judges", "size": asdict(size), "seed": seed}

    def build(folder: Path) -> None:
        from hf_meddiff.evaluation.judges import train_judges

        ds = make_data(size, seed, expand=False)
        train = ds.select([i for i, s in enumerate(ds["split"]) if s == "train"])
        heldout = ds.select([i for i, s in enumerate(ds["split"]) if s == "validation"])
        judges = train_judges(train, heldout, epochs=size.judge_epochs, seed=seed, progress=False)
        judges.save(folder / "judges")

    return str(cached("judges", settings, build) / "judges")


def format_compliance(texts: Sequence[str], style: str) -> float | None:
    """Share of `texts` in the exact layout of `style` (`hf_meddiff.rewards.format_reward`)."""
    from hf_meddiff.rewards import format_reward

    return sum(format_reward(list(texts), style=style)) / len(texts) if texts else None


def run_grpo(
    output_dir: str | os.PathLike,
    policy: str | os.PathLike,
    data_path: str,
    size: Size,
    *,
    seed: int,
    recipe: str = "grpo_vqa.yaml",
    extra: Sequence[str] = (),
) -> str:
    """`hf-meddiff grpo --config trainers/<recipe>` from `policy` on the train split of `data_path`, shrunk to
    `size`. Returns the model folder."""
    from hf_meddiff.trainer.grpo.script import main as grpo_main

    argv = [
        "--config", str(RECIPES / recipe),
        "--policy_path", str(policy),
        "--dataset_name", "canonical",
        "--dataset_path", data_path,
        "--output_dir", str(output_dir),
        "--seed", str(seed),
        "--max_steps", str(size.grpo_steps),
        "--per_device_train_batch_size", str(size.grpo_batch_size),
        "--num_generations", str(size.num_generations),
        "--save_strategy", "no",
        "--report_to", "none",
        "--logging_steps", "1",
    ]  # fmt: skip
    argv += list(extra)
    status = grpo_main(argv)
    if status:
        raise RuntimeError(f"hf-meddiff grpo stopped with exit status {status}: {' '.join(argv)}")
    return str(output_dir)


def reward_history(model_dir: str | os.PathLike) -> list[float]:
    """The mean training reward logged at each GRPO step (empty when there is no trainer state)."""
    state = Path(model_dir) / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    return [float(h["reward"]) for h in history if "reward" in h]


# -------------------------------------------------------------------------------------------- evaluation
def evaluate(model_dir: str | os.PathLike, rows, output_dir: str | os.PathLike, size: Size, **overrides):
    """`hf_meddiff.evaluation.evaluate_model` on the first `size.eval_samples` of `rows`, progress bars off."""
    from hf_meddiff.evaluation import evaluate_model

    options = {
        "output_dir": str(output_dir),
        "max_samples": size.eval_samples,
        "progress": False,
        "dataset_name": "MedPhantom",
        "split": "test",
        "seed": 0,
    }
    options.update(overrides)
    return evaluate_model(str(model_dir), rows, **options)


def predictions(summary: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """The `predictions.jsonl` entries of `task` written by an evaluation."""
    path = summary.get("files", {}).get("predictions")
    if not path or not Path(path).is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [e for e in (json.loads(line) for line in f if line.strip()) if e.get("task") == task]


# ---------------------------------------------------------------------------------------------- numbers
def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), spread, len(finite)


def fmt(values: Sequence[float | None], digits: int = 3, percent: bool = False) -> str:
    """`mean ± std` over seeds (`-` when there is no value)."""
    mean, spread, n = mean_std(values)
    if mean is None:
        return "-"
    if percent:
        return f"{100 * mean:.1f} ± {100 * spread:.1f}" if n > 1 else f"{100 * mean:.1f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def dig(summary: dict[str, Any], *keys: str) -> float | None:
    """`summary[k1][k2]...` or None."""
    value: Any = summary
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


class Run:
    """Wall time, the command line and the output files of one claim run."""

    def __init__(self, name: str, args: argparse.Namespace, size: Size):
        self.name, self.args, self.size = name, args, size
        self.start = time.time()
        self.cpu_start = time.process_time()
        self.out = Path(args.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.command = "python " + " ".join([f"examples/{name}.py", *sys.argv[1:]])
        print(f"{self.command}\nsize: {json.dumps(asdict(size))}\nseeds: {args.seeds}", flush=True)

    def finish(
        self, title: str, tables: Sequence[str], payload: dict[str, Any], notes: Sequence[str] = ()
    ) -> str:
        """Print and write `<output-dir>/<name>.md` (title, tables, notes, command, wall time) and `<name>.json`."""
        wall = time.time() - self.start
        cpu = time.process_time() - self.cpu_start  # all threads of this process: the load-independent cost
        parts = [f"## {title}", "", *[t + "\n" for t in tables]]
        parts += [*notes, ""] if notes else []
        parts += [
            f"Command: `{self.command}` (seeds 0..{self.args.seeds - 1}); wall time {wall / 60:.1f} min "
            f"(CPU time {cpu / 60:.1f} min, all threads)."
        ]
        text = "\n".join(parts) + "\n"
        (self.out / f"{self.name}.md").write_text(text, encoding="utf-8")
        record = {
            "claim": self.name,
            "command": self.command,
            "seeds": list(range(self.args.seeds)),
            "size": asdict(self.size),
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
            **payload,
        }
        (self.out / f"{self.name}.json").write_text(
            json.dumps(record, indent=2, default=str), encoding="utf-8"
        )
        print("\n" + text, flush=True)
        return text
