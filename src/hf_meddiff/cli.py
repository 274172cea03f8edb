"""The `hf-meddiff` command. (Over 600 lines: one short section per subcommand; each reads as one screen.)

```
hf-meddiff demo        the embedded default end to end: MedPhantom -> tokenizers -> pretraining -> evaluation
hf-meddiff sft         masked-diffusion SFT / pretraining from a YAML recipe (`--config trainers/….yaml`)
hf-meddiff grpo        GRPO of a trained MedDiff model (rule rewards, cycle consistency, inpainting)
hf-meddiff ddpo        DDPO on Stable Diffusion from a YAML recipe
hf-meddiff tokenizer   fit the VQ image tokenizer (and the text tokenizer) on a dataset's images
hf-meddiff data        make / inspect MedPhantom, convert a public set to the canonical form
hf-meddiff generate    a VQA answer, a report or an image from a trained model folder
hf-meddiff evaluate    VQA accuracy, report metrics, grounding, image metrics -> Markdown + JSON + PNG plots
hf-meddiff review      clinician review web app (Gradio, SQLite); `review export` turns reviews into a dataset
```

Every subcommand takes `--help`. The module runs as `python -m hf_meddiff.cli …`, so multi-process training
works with `accelerate launch -m hf_meddiff.cli sft --config trainers/….yaml`.

One configuration system: `demo`, `tokenizer`, `evaluate`, `sft`, `grpo` and `ddpo` read dataclasses whose fields carry
`metadata={"help": ...}`, parsed by TRL's `TrlParser` from `--config file.yaml` (keys: the field names) and
`--key value` flags, which win (`--key-name` works as well as `--key_name`). `data` and `generate` take plain flags.

Subcommands import their machinery only when they run, so `hf-meddiff --help` is fast and a missing
optional piece only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PROG = "hf-meddiff"

# Subcommands whose arguments belong to another module's `main(argv)` (recipe scripts).
PASSTHROUGH = {
    "sft": (
        "hf_meddiff.trainer.sft.script",
        "masked-diffusion SFT / pretraining from a YAML recipe (see trainers/)",
    ),
    "grpo": (
        "hf_meddiff.trainer.grpo.script",
        "GRPO of a trained MedDiff model with rule and model-based rewards (see trainers/grpo_*.yaml)",
    ),
    "ddpo": (
        "hf_meddiff.trainer.ddpo.script",
        "DDPO on a Stable Diffusion pipeline from a YAML recipe (see trainers/)",
    ),
    "review": (
        "hf_meddiff.review.command",
        "clinician review web app of grounded answers (SQLite); `review export` makes the reviews a dataset",
    ),
}


class CLIError(Exception):
    """A user-facing error: printed as `hf-meddiff <cmd>: error: <message>` with exit status 2."""


def require(module: str, attr: str | None = None, *, what: str) -> Any:
    """Import `module` (and get `attr`), or raise a `CLIError` that says which piece is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (err.name == module or module.startswith(err.name + ".")):
            raise CLIError(
                f"{what} needs `{module}`, which is not part of this installation of hf-meddiff yet. "
                "Update hf-meddiff (pip install -U hf-meddiff) or use a subcommand that does not need it."
            ) from err
        raise
    if attr is None:
        return mod
    if not hasattr(mod, attr):
        raise CLIError(
            f"{what} needs `{module}.{attr}`, which this installation of hf-meddiff does not define."
        )
    return getattr(mod, attr)


def load_data_or_exit(spec: str, **kwargs: Any):
    """`hf_meddiff.evaluation.load_data_arg`, with its "no such dataset / split" errors as `CLIError`s."""
    from .evaluation import load_canonical, load_data_arg

    try:
        if kwargs.get("raw"):
            return load_canonical(spec)
        return load_data_arg(spec, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err


# --------------------------------------------------------------------------------------------------------
# Configuration: dataclasses parsed by TRL's `TrlParser` from `--config file.yaml` and `--key value` flags.
# --------------------------------------------------------------------------------------------------------

CONFIG_EPILOG = (
    "Every option may also come from `--config file.yaml`, whose keys are the option names (e.g. output_dir: out); "
    "flags on the command line win."
)


def check_inputs(
    options: Any,
    positive: Sequence[str] = (),
    *,
    output_dir: tuple[str, Any] | None = None,
    paths: Sequence[tuple[str, Any, str]] = (),
) -> None:
    """Validate a command's options before any work starts: the `positive` fields of `options` (None allowed),
    `output_dir` (`(option, path)`, created and test-written) and `paths` (`(option, value, what)`: local paths that
    must exist; Hub ids pass). Each problem is a `CLIError` naming the option."""
    from .trainer.common import UsageError, check_model_path, check_output_dir, check_positive

    try:
        check_positive(options, tuple(positive))
        for option, value, what in paths:
            check_model_path(value, option, what=what)
        if output_dir is not None:
            check_output_dir(output_dir[1], output_dir[0])
    except UsageError as err:
        raise CLIError(str(err)) from err


def read_yaml_config(path: str) -> dict[str, Any]:
    """The mapping of a `--config` YAML file; a missing file, bad YAML or a non-mapping is a `CLIError`."""
    import yaml

    if not Path(path).is_file():
        raise CLIError(f"--config {path}: no such file.")
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise CLIError(f"--config {path}: not valid YAML ({' '.join(str(err).split())}).") from err
    if not isinstance(values, dict):
        raise CLIError(f"--config {path}: the top level must be a mapping of option: value.")
    return values


def parse_options(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    *,
    command: str,
    description: str,
    translate: Callable[[dict, str, set[str]], dict] | None = None,
) -> tuple[Any, ...]:
    """Instances of `dataclass_types` from `--config file.yaml` and `--key value` flags (flags win), with TRL's
    `TrlParser`, as the training scripts parse theirs. `translate(values, path, known_keys)` may rewrite the YAML's
    mapping first (`tokenizer` reads an SFT recipe). Unknown keys, bad YAML and invalid values are `CLIError`s."""
    from trl import TrlParser

    parser = TrlParser(
        list(dataclass_types), prog=f"{PROG} {command}", description=description, epilog=CONFIG_EPILOG
    )
    argv = list(argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise CLIError("--config needs the path of a YAML file.")
        path = argv.pop(index + 1)
        argv.pop(index)
        values = read_yaml_config(path)
        known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}
        if translate is not None:
            values = translate(values, path, known)
        values = {str(key).replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(key for key in values if key not in known)
        if unknown:
            raise CLIError(
                f"--config {path}: unknown key(s) {unknown}. Known keys: {', '.join(sorted(known))}."
            )
        parser.set_defaults_with_config(**values)
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except ValueError as err:
        raise CLIError(str(err)) from err


# --------------------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------------------


DEMO_DESCRIPTION = (
    "Run the main job on the embedded default, offline, on a CPU: generate MedPhantom cases, fit the VQ image "
    "tokenizer and the text tokenizer, pretrain the embedded MedDiff model with the SFT recipe, then evaluate it "
    "(VQA accuracy vs chance, report BLEU-1/ROUGE-L, a report-to-image grid)."
)


def _run_demo(argv: Sequence[str]) -> int:
    from .demo import DemoOptions, run_demo

    (options,) = parse_options((DemoOptions,), argv, command="demo", description=DEMO_DESCRIPTION)
    positive = ("num_cases", "max_steps", "tokenizer_steps", "eval_samples", "vqa_gen_length", "eval_steps")
    check_inputs(options, positive, output_dir=("output_dir", options.output_dir))
    summary = run_demo(options)
    return 0 if summary.get("ok", True) else 1


# --------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------

PUBLIC_SOURCES = ("iu_xray", "mimic_cxr", "vqa_rad", "slake", "omnimedvqa", "pmc_vqa", "isic")


def _add_data(sub) -> None:
    p = sub.add_parser(
        "data",
        help="make / inspect MedPhantom, convert a public set to the canonical form",
        description="Datasets in hf-meddiff's canonical form (see hf_meddiff.data.schema).",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="{make,inspect,convert}")
    dsub.required = True

    make = dsub.add_parser(
        "make",
        help="generate MedPhantom cases and save them",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Generate the embedded MedPhantom dataset (deterministic for a given seed) and save it.",
    )
    make.add_argument("--output-dir", required=True, help="where to save the dataset")
    make.add_argument("--num-cases", type=int, default=200)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--image-size", type=int, default=None, help="image side in pixels (generator default)")
    make.add_argument(
        "--format", choices=("parquet", "disk"), default="parquet", help="Parquet or save_to_disk"
    )
    make.set_defaults(func=_run_data_make)

    inspect = dsub.add_parser(
        "inspect",
        help="summarise a saved canonical dataset (counts per split/modality/question type, an example)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    inspect.add_argument("path", help="a save_to_disk folder, a Parquet file or a folder of Parquet files")
    inspect.add_argument("--num-examples", type=int, default=1, help="examples to print")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_run_data_inspect)

    convert = dsub.add_parser(
        "convert",
        help="convert a public dataset from its native files to the canonical form",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Sources: " + ", ".join(PUBLIC_SOURCES) + ". The native files are read from --input.",
    )
    convert.add_argument("source", choices=PUBLIC_SOURCES)
    convert.add_argument(
        "--input", required=True, help="the dataset's folder (or annotation file) as downloaded"
    )
    convert.add_argument("--output-dir", required=True)
    convert.add_argument("--format", choices=("parquet", "disk"), default="parquet")
    convert.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="a bad record or image: stop with an error naming it, or skip it and count it",
    )
    convert.add_argument(
        "--check-phi",
        action="store_true",
        default=True,
        help="refuse data that looks like it carries PHI (default)",
    )
    convert.add_argument(
        "--no-check-phi",
        dest="check_phi",
        action="store_false",
        help="DANGER: save without the PHI check (only for data you have de-identified and verified yourself)",
    )
    convert.set_defaults(func=_run_data_convert)


def _run_data_make(args: argparse.Namespace) -> int:
    from .evaluation import make_medphantom, save_canonical

    if args.num_cases <= 0:
        raise CLIError(f"--num-cases must be positive, got {args.num_cases}.")
    check_inputs(args, ("image_size",), output_dir=("--output-dir", args.output_dir))
    ds = make_medphantom(args.num_cases, seed=args.seed, image_size=args.image_size)
    out = save_canonical(ds, args.output_dir, fmt=args.format)
    print(f"Saved {len(ds)} MedPhantom cases to {out}")
    return 0


def _run_data_inspect(args: argparse.Namespace) -> int:
    from .evaluation import describe_dataset

    ds = load_data_or_exit(args.path, raw=True)
    summary = describe_dataset(ds, num_examples=args.num_examples)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.path}: {summary['num_rows']} rows")
    print("columns: " + ", ".join(summary["columns"]))
    for key in ("split", "modality", "question_type", "source"):
        counts = summary["counts"].get(key)
        if counts:
            print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    for name, value in summary["fields"].items():
        print(f"{name}: {value}")
    for i, example in enumerate(summary["examples"]):
        print(f"--- example {i}")
        for key, value in example.items():
            print(f"  {key}: {value}")
    return 0


def _run_data_convert(args: argparse.Namespace) -> int:
    import tempfile

    from .evaluation import save_canonical

    loader = require(
        "hf_meddiff.data", f"load_{args.source}", what=f"`hf-meddiff data convert {args.source}`"
    )
    if not Path(args.input).exists():
        raise CLIError(f"--input {args.input}: no such file or folder.")
    data_error = require("hf_meddiff.data", "DataFormatError", what="`hf-meddiff data convert`")
    try:
        ds, report = loader(args.input, on_error=args.on_error, return_report=True)
    except (data_error, FileNotFoundError) as err:
        raise CLIError(f"{args.source} from {args.input}: {err}") from err
    if hasattr(ds, "keys") and not hasattr(
        ds, "column_names"
    ):  # a DatasetDict: one table with a split column
        from .evaluation import _as_single_dataset

        ds = _as_single_dataset(ds)
    if report.num_skipped:
        print(f"Skipped and counted: {report}", file=sys.stderr)
    if len(ds) == 0:
        raise CLIError(f"{args.source} from {args.input}: no usable records ({report}).")
    out_dir = Path(args.output_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)  # the output folder itself only once the data passed
    embed_image_bytes = require(
        "hf_meddiff.data.medical_io", "embed_image_bytes", what="`hf-meddiff data convert`"
    )
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.convert-") as scratch:
        # The saved dataset holds the image bytes, never a path to the source files.
        ds = embed_image_bytes(ds, cache_file_name=str(Path(scratch) / "embedded.arrow"))
        if args.check_phi:
            check_no_phi = require("hf_meddiff.data", "check_no_phi", what="the PHI check")
            try:
                check_no_phi(ds)
            except ValueError as err:
                raise CLIError(
                    f"{args.input}: refusing to save, the data looks like it carries PHI: {err}\nIf you have "
                    "de-identified and verified it yourself, --no-check-phi skips this check."
                ) from err
        else:
            print(
                "WARNING: --no-check-phi: the PHI check is OFF. The saved dataset may carry protected health "
                "information; do not share it before you have verified it is de-identified.",
                file=sys.stderr,
            )
        out = save_canonical(ds, out_dir, fmt=args.format)
    print(f"Converted {len(ds)} records of {args.source} to {out}")
    return 0


# --------------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------------


# SFT recipe keys (trainers/*.yaml) that set a tokenizer option: recipe key -> option of `hf-meddiff tokenizer`
TOKENIZER_RECIPE_KEYS = {
    "medphantom_num_cases": "num_cases",
    "dataset_train_split": "split",
    "image_tokenizer_preset": "preset",
    "image_tokenizer_steps": "max_steps",
    "image_tokenizer_batch_size": "batch_size",
    "text_vocab_size": "text_vocab_size",
}


def sft_recipe_keys() -> set[str]:
    """Every key an SFT recipe may set: the fields of the SFT script's three argument dataclasses."""
    import dataclasses

    from trl import ModelConfig

    from .trainer.sft.config import MedDiffSFTConfig
    from .trainer.sft.script import MedDiffScriptArguments

    return {
        f.name for c in (MedDiffScriptArguments, MedDiffSFTConfig, ModelConfig) for f in dataclasses.fields(c)
    }


def _tokenizer_options_from_recipe(values: dict, config: str, dests: set[str]) -> dict:
    """`--config` of `hf-meddiff tokenizer`: its own options, or an SFT recipe. From a recipe only the tokenizer
    keys are read (`TOKENIZER_RECIPE_KEYS`, `dataset_name` / `dataset_path`, `seed`, and `output_dir` ->
    `<output_dir>/tokenizers`, where the SFT run saves the tokenizers it trains); its other keys belong to other
    stages and are ignored, also those named like a tokenizer option (`max_steps`, `learning_rate` are the SFT
    run's). A key of neither is an error that names it."""
    foreign = [key for key in values if str(key).replace("-", "_") not in dests]
    if not foreign:
        return values
    recipe_keys = sft_recipe_keys()
    unknown = sorted(str(key) for key in foreign if key not in recipe_keys)
    if unknown:
        raise CLIError(
            f"--config {config}: unknown key(s) {unknown}: neither options of `{PROG} tokenizer` nor keys of an "
            "SFT recipe (MedDiffScriptArguments, MedDiffSFTConfig, trl.ModelConfig)."
        )
    options = {key: value for key, value in values.items() if key not in recipe_keys}
    for key, option in TOKENIZER_RECIPE_KEYS.items():
        if key in values:
            options.setdefault(option, values[key])
    if "seed" in values:
        options.setdefault("seed", values["seed"])
    if values.get("output_dir"):
        options.setdefault("output_dir", str(Path(values["output_dir"]) / "tokenizers"))
    name = values.get("dataset_name", "medphantom")
    if name not in ("medphantom", "canonical"):
        raise CLIError(
            f"--config {config}: dataset_name {name!r} reads a public set's native files, which `{PROG} tokenizer` "
            f"does not; convert it first (`{PROG} data convert {name} --input ... --output-dir DIR`) and pass "
            "--data DIR."
        )
    if values.get("dataset_path"):
        options.setdefault("data", values["dataset_path"])
    return options


TOKENIZER_DESCRIPTION = (
    "Fit MedDiffImageTokenizer (a diffusers VQModel) on a dataset's images and report the reconstruction error on "
    "held-out images; with --text also train the text tokenizer on the dataset's text, and save a MedDiffProcessor "
    "that bundles both. --config takes a YAML of these options, or an SFT recipe (trainers/*.yaml), whose tokenizer "
    "keys are read (image_tokenizer_preset, image_tokenizer_steps, image_tokenizer_batch_size, text_vocab_size, "
    "medphantom_num_cases, dataset_name/dataset_path, dataset_train_split, seed) with output in "
    "<output_dir>/tokenizers/, and whose other keys are ignored."
)


@dataclass
class TokenizerOptions:
    """Options of `hf-meddiff tokenizer`."""

    data: str = field(
        default="medphantom", metadata={"help": "'medphantom' or a saved canonical dataset path."}
    )
    num_cases: int = field(default=200, metadata={"help": "MedPhantom cases when data is 'medphantom'."})
    split: str = field(default="train", metadata={"help": "Split to fit on ('all' for every row)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to save the tokenizer(s) (required)."}
    )
    preset: Literal["embedded", "embedded16", "tiny"] = field(
        default="embedded",
        metadata={
            "help": "VQ model size preset: embedded (64 px, 8x8 tokens), embedded16 (64 px, 16x16 tokens), tiny (32 px)."
        },
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Image side the tokenizer sees; unset: the preset's."}
    )
    codebook_size: int | None = field(default=None, metadata={"help": "VQ codes; unset: the preset's."})
    max_steps: int | None = field(default=None, metadata={"help": "VQ training steps; unset: the preset's."})
    batch_size: int | None = field(default=None, metadata={"help": "VQ training batch size."})
    learning_rate: float | None = field(default=None, metadata={"help": "VQ training learning rate."})
    text: bool = field(default=False, metadata={"help": "Also train the text tokenizer."})
    text_vocab_size: int | None = field(default=None, metadata={"help": "Vocabulary of the text tokenizer."})
    seed: int = field(default=0, metadata={"help": "Seed of MedPhantom cases and training."})


def _run_tokenizer(argv: Sequence[str]) -> int:
    (args,) = parse_options(
        (TokenizerOptions,),
        argv,
        command="tokenizer",
        description=TOKENIZER_DESCRIPTION,
        translate=_tokenizer_options_from_recipe,
    )
    from .evaluation import fit_tokenizers

    if not args.output_dir:
        raise CLIError("--output-dir is required (on the command line or in --config).")
    positive = (
        "num_cases",
        "image_size",
        "codebook_size",
        "max_steps",
        "batch_size",
        "learning_rate",
        "text_vocab_size",
    )
    check_inputs(args, positive, output_dir=("output_dir", args.output_dir))
    ds = load_data_or_exit(args.data, num_cases=args.num_cases, seed=args.seed, split=args.split)
    report = fit_tokenizers(
        ds,
        args.output_dir,
        preset=args.preset,
        image_size=args.image_size,
        codebook_size=args.codebook_size,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        text=args.text,
        text_vocab_size=args.text_vocab_size,
        seed=args.seed,
    )
    print(json.dumps(report, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------------


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="answer a question, write a report, or draw an image with a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate with a trained MedDiff model folder (or a Hub id).",
        epilog=(
            "examples:\n"
            "  hf-meddiff generate --model outputs/demo/model --image scan.png --question 'Which modality?' \\\n"
            "      --options CT MRI X-ray ultrasound\n"
            "  hf-meddiff generate --model outputs/demo/model --image scan.png --task report\n"
            "  hf-meddiff generate --model outputs/demo/model --prompt 'Findings: round lesion.' --output img.png"
        ),
    )
    p.add_argument("--model", required=True, help="a saved model folder (model + processor) or a Hub id")
    p.add_argument("--task", choices=("auto", "vqa", "report", "image"), default="auto")
    p.add_argument("--image", default=None, help="input image (PNG/JPEG, DICOM, NIfTI) for vqa/report")
    p.add_argument("--question", default=None, help="the question (vqa)")
    p.add_argument("--options", nargs="*", default=None, help="multiple-choice option texts (A, B, C, …)")
    p.add_argument("--prompt", default=None, help="report text to draw an image from (image task)")
    p.add_argument("--output", default=None, help="where to save a generated image (default generated.png)")
    p.add_argument("--gen-length", type=int, default=None, help="text tokens to generate")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="load a Hub model with its own code")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    task = args.task
    if task == "auto":
        task = "image" if args.prompt is not None else ("vqa" if args.question else "report")
    if task in ("vqa", "report") and not args.image:
        raise CLIError(f"--task {task} needs --image PATH.")
    if task == "vqa" and not args.question:
        raise CLIError("--task vqa needs --question TEXT.")
    if task == "image" and not args.prompt:
        raise CLIError("--task image needs --prompt 'report text'.")
    if args.image and not Path(args.image).exists():
        raise CLIError(f"--image {args.image}: no such file.")
    output_parent = str(Path(args.output or "generated.png").resolve().parent) if task == "image" else None
    check_inputs(
        args,
        ("gen_length", "steps"),
        output_dir=("--output", output_parent) if output_parent else None,
        paths=[("--model", args.model, "a saved model folder (model + processor) or a Hub id")],
    )
    from .evaluation import generate_one

    result = generate_one(
        args.model,
        task=task,
        image=args.image,
        question=args.question,
        options=args.options,
        prompt=args.prompt,
        output=args.output or "generated.png",
        gen_length=args.gen_length,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    print(result)
    return 0


# --------------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------------


EVALUATE_DESCRIPTION = (
    "VQA accuracy (overall / per modality / per question type, with chance), report BLEU-1..4, ROUGE-L, CIDEr and "
    "clinical efficacy, grounding scores when generated rationales contain boxes, optional image metrics for "
    "report-to-image. Writes results.json, results.md and PNG plots (image grids with boxes; loss and reward "
    "curves from trainer_state.json). The options are the fields of hf_meddiff.evaluation.EvaluationConfig."
)


def _comma_lists(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`--tasks vqa,report` as `--tasks vqa report` (the comma form of the list options keeps working)."""
    out: list[str] = []
    in_list = False
    for token in argv:
        if token.startswith("-"):
            in_list = token in flags
            out.append(token)
        elif in_list and "," in token:
            out.extend(part for part in token.split(",") if part)
        else:
            out.append(token)
    return out


def _run_evaluate(argv: Sequence[str]) -> int:
    from .evaluation.config import EvaluationConfig

    (config,) = parse_options(
        (EvaluationConfig,),
        _comma_lists(argv, ("--tasks",)),
        command="evaluate",
        description=EVALUATE_DESCRIPTION,
    )
    if not config.model:
        raise CLIError("--model is required (on the command line or in --config).")
    if config.max_samples is not None and config.max_samples <= 0:
        raise CLIError(f"--max-samples must be positive, got {config.max_samples}.")
    check_inputs(
        config,
        ("num_cases", "batch_size", "gen_length", "steps", "image_steps", "grid_size"),
        output_dir=("output_dir", config.resolved_output_dir()),
    )
    ds = load_data_or_exit(config.data, num_cases=config.num_cases, seed=config.seed, split=config.split)
    selected = len(ds) if config.max_samples is None else min(len(ds), config.max_samples)
    more = (
        f"; --num-cases for more MedPhantom cases than {config.num_cases}"
        if config.data == "medphantom"
        else ""
    )
    print(
        f"evaluating {selected} of {len(ds)} rows of {config.data} split {config.split!r} (--max-samples to "
        f"change{more})"
    )
    from .evaluation import evaluate_model

    config = dataclasses.replace(
        config, output_dir=config.resolved_output_dir(), dataset_name=config.dataset_name or config.data
    )
    try:
        summary = evaluate_model(config.model, ds, config)
    except OSError as err:
        from .trainer.common import looks_like_local_path

        if looks_like_local_path(config.model) and not Path(config.model).expanduser().exists():
            raise CLIError(f"--model {config.model}: no such model folder.") from err
        raise
    print(Path(summary["files"]["markdown"]).read_text(encoding="utf-8"))
    return 0


# --------------------------------------------------------------------------------------------------------
# convert (pretrained checkpoints -> MedDiff folders)
# --------------------------------------------------------------------------------------------------------


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="start from LLaDA / MMaDA / a Llama-Qwen causal LM: convert it into a MedDiff folder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Streams the checkpoint tensor by tensor (about one shard of RAM). SRC is a local folder, or a "
        "Hub id (the only case that downloads).",
    )
    p.add_argument("layout", choices=("llada", "mmada", "causal-lm"), help="the source checkpoint's family")
    p.add_argument("src", help="checkpoint folder or Hub id, e.g. GSAI-ML/LLaDA-8B-Instruct")
    p.add_argument("dst", help="new output folder")
    p.add_argument(
        "--image-tokenizer", help="MAGVIT-v2 (showlab/magvitv2) or MedDiff image tokenizer folder / id"
    )
    p.add_argument("--image-size", type=int, help="MAGVIT-v2 resolution (MMaDA: 512 -> 32x32 codes)")
    p.add_argument("--image-codebook-size", type=int, help="codes without an image tokenizer (default 8192)")
    p.add_argument(
        "--image-grid-size", type=int, help="codes per side without an image tokenizer (default 16)"
    )
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    p.add_argument("--keep-shift", action="store_true", help="causal-lm: keep the next-token shift (Dream)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new embedding rows")
    p.add_argument("--revision", help="Hub revision when SRC is a Hub id")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .models.meddiff.convert_common_meddiff import ConversionError, peak_rss_bytes

    image_tokenizer = args.image_tokenizer
    try:
        if image_tokenizer and args.image_size:
            from .models.meddiff.convert_common_meddiff import resolve_source
            from .models.meddiff.magvit_meddiff import MagvitV2ImageTokenizer

            image_tokenizer = MagvitV2ImageTokenizer.from_magvit(
                resolve_source(image_tokenizer), args.image_size
            )
        common = dict(
            image_tokenizer=image_tokenizer, dtype=args.dtype, seed=args.seed, revision=args.revision
        )
        if args.layout == "causal-lm":
            from .models.meddiff.convert_causal_lm_meddiff import convert_causal_lm

            sizes = {k: v for k, v in (("image_codebook_size", args.image_codebook_size),
                                       ("image_grid_size", args.image_grid_size)) if v}  # fmt: skip
            config = convert_causal_lm(args.src, args.dst, keep_shift=args.keep_shift, **sizes, **common)
        else:
            from .models.meddiff.convert_llada_meddiff import convert_llada

            config = convert_llada(
                args.src, args.dst, mmada=args.layout == "mmada", image_codebook_size=args.image_codebook_size,
                image_grid_size=args.image_grid_size, **common,
            )  # fmt: skip
    except (ConversionError, ValueError, OSError) as err:
        raise CLIError(str(err)) from err
    print(
        f"Wrote {args.dst}: MedDiff, {config.num_hidden_layers} layers, vocabulary {config.vocab_size} (text "
        f"{config.text_vocab_size}, image codes {config.image_token_offset}..{config.image_token_end - 1}); peak "
        f"RAM {peak_rss_bytes() / 2**30:.2f} GiB. Load with AutoModel.from_pretrained / MedDiffProcessor."
    )
    return 0


def _run_judges(argv: Sequence[str]) -> int:
    """`judges train`: the modality / finding image judges of report-to-image (hf_meddiff.evaluation.judges)."""
    usage = (
        "usage: hf-meddiff judges train [--data medphantom|PATH] [--output_dir DIR] (train --help: options)"
    )
    if list(argv[:1]) in (["--help"], ["-h"]):
        print(usage)
        return 0
    if not argv or argv[0] != "train":
        raise CLIError(usage)
    from .evaluation.judges import JudgeTrainingConfig, train_judges_command

    description = "Train the modality and finding judges on a dataset's real training images; save them."
    (config,) = parse_options(
        (JudgeTrainingConfig,), argv[1:], command="judges train", description=description
    )
    try:
        info = train_judges_command(config)
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from err
    print(json.dumps(info, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------


# Subcommands whose options are dataclasses (`parse_options`): name -> (help, run(argv) -> exit status).
CONFIGURED: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "demo": (
        "the embedded default end to end (MedPhantom -> tokenizers -> pretraining -> evaluation)",
        _run_demo,
    ),
    "tokenizer": ("fit the VQ image tokenizer (and the text tokenizer) on a dataset", _run_tokenizer),
    "evaluate": ("evaluate a trained model on a split: Markdown + JSON table and PNG plots", _run_evaluate),
    "judges": ("`judges train`: the modality / finding image judges that score report-to-image", _run_judges),
}


def build_parser() -> argparse.ArgumentParser:
    """The `hf-meddiff` argument parser (subcommands of `PASSTHROUGH` and `CONFIGURED` are listed here but parsed
    by their own dataclass parsers)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="hf-meddiff: medical multimodal discrete diffusion on the Hugging Face stack.",
        epilog="Run `hf-meddiff <command> --help` for a command's options. Not for clinical decisions.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    # listed here; parsed by their dataclass parsers (CONFIGURED) or by the recipe scripts (PASSTHROUGH)
    helps = {name: entry[0] for name, entry in CONFIGURED.items()}
    helps |= {name: entry[1] for name, entry in PASSTHROUGH.items()}
    for name in ("demo", "sft", "grpo", "ddpo", "tokenizer", "review"):
        sub.add_parser(name, help=helps[name], add_help=False)
    _add_data(sub)
    _add_generate(sub)
    _add_convert(sub)
    sub.add_parser("evaluate", help=helps["evaluate"], add_help=False)
    sub.add_parser("judges", help=helps["judges"], add_help=False)
    return parser


def run_passthrough(command: str, argv: Sequence[str]) -> int:
    """Hand `argv` to the recipe script behind `command` (`sft`, `ddpo`)."""
    module, _ = PASSTHROUGH[command]
    script_main: Callable[[list[str]], Any] = require(module, "main", what=f"`{PROG} {command}`")
    result = script_main(list(argv))
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hf-meddiff` (and `python -m hf_meddiff.cli`). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        if command in PASSTHROUGH:
            return run_passthrough(command, argv[1:])
        if command in CONFIGURED:
            return int(CONFIGURED[command][1](argv[1:]) or 0)
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"{PROG} {command or ''}: error: {err}".replace("  ", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
