"""Every `hf-meddiff` command turns a bad input into one line naming the problem and exit status 2, before any long
work starts: a missing or malformed recipe, an unknown key, a bad value, a non-writable output folder, a model or
data path that does not exist, `max_steps 0`, `num_epochs 0`, `--codebook-size 0`."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_meddiff import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {
        "unknown": "output_dir: out\nnot_an_option: 3\n",
        "malformed": "output_dir: [out\n",
        "not_a_mapping": "- a\n- b\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(text)
    paths["missing"] = tmp_path / "missing.yaml"
    paths["a_file"] = tmp_path / "a_file"
    paths["a_file"].write_text("x")
    return paths


def run(argv: list[str], capsys) -> tuple[int, str]:
    if argv[0] == "grpo":  # GRPOConfig defaults to bf16, which a CPU-only machine refuses first
        argv = [*argv, "--use_cpu", "true", "--bf16", "false"]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("hf-meddiff "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


TRAINING = ("sft", "grpo", "ddpo")


@pytest.mark.parametrize("command", TRAINING)
@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("missing", "no such file"),
        ("unknown", "not_an_option"),
        ("malformed", "not valid YAML"),
        ("not_a_mapping", "mapping"),
    ],
)
def test_training_commands_name_recipe_problems(command, kind, needle, bad_files, capsys):
    code, err = run([command, "--config", str(bad_files[kind])], capsys)
    assert_one_line(code, err, needle)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sft", "--max_steps", "0"], "max_steps=0"),
        (["sft", "--max_steps", "-1", "--num_train_epochs", "0"], "num_train_epochs=0"),
        (["sft", "--model_name_or_path", "./no/such/model"], "model_name_or_path"),
        (["sft", "--processor_path", "/no/such/processor"], "processor_path"),
        (["sft", "--dataset_name", "canonical", "--dataset_path", "/no/such/data"], "dataset_path"),
        (["sft", "--text_vocab_size", "0"], "text_vocab_size=0"),
        (["sft", "--resume_from_checkpoint", "/no/such/checkpoint"], "resume_from_checkpoint"),
        (["grpo"], "policy_path is required"),
        (["grpo", "--policy_path", "/no/such/policy"], "policy_path"),
        (["ddpo", "--num_epochs", "0"], "num_epochs=0"),
        (["ddpo", "--pretrained_model", "./no/such/pipeline"], "pretrained_model"),
        (["ddpo", "--sample_batch_size", "0"], "sample_batch_size=0"),
        (["ddpo", "--vae_steps", "0"], "vae_steps=0"),
        (["ddpo", "--resume_from_checkpoint", "/no/such/checkpoint"], "resume_from_checkpoint"),
        (["ddpo", "--dataset_path", "/no/such/data"], "dataset_path"),
        (["ddpo", "--rewards", "brightness"], "rewards must be"),
    ],
)
def test_training_commands_name_bad_values(argv, needle, tmp_path, capsys):
    code, err = run([*argv, "--output_dir", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, needle)


@pytest.mark.parametrize("command", TRAINING)
def test_training_commands_refuse_a_non_writable_output_dir(command, bad_files, capsys):
    argv = [command, "--output_dir", str(bad_files["a_file"] / "sub")]
    if command == "grpo":
        argv += ["--policy_path", str(bad_files["a_file"].parent)]
    code, err = run(argv, capsys)
    assert_one_line(code, err, "output_dir", "not a writable folder")


@pytest.mark.parametrize("command", TRAINING)
def test_bad_flag_values_exit_2(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--seed", "abc"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["tokenizer", "--codebook-size", "0"], "codebook_size=0"),
        (["tokenizer", "--max-steps", "0"], "max_steps=0"),
        (["tokenizer", "--image-size", "-8"], "image_size=-8"),
        (["tokenizer", "--config", "MISSING"], "no such file"),
        (["tokenizer", "--config", "MALFORMED"], "not valid YAML"),
        (["tokenizer", "--config", "UNKNOWN"], "not_an_option"),
        (["tokenizer", "--output-dir", "NOT_WRITABLE"], "not a writable folder"),
        (["demo", "--max-steps", "0"], "max_steps=0"),
        (["demo", "--num-cases", "0"], "num_cases=0"),
        (["demo", "--output-dir", "NOT_WRITABLE"], "not a writable folder"),
        (["demo", "--config", "NOT_A_MAPPING"], "mapping"),
        (["evaluate", "--model", "m", "--batch-size", "0"], "batch_size"),
        (["evaluate", "--model", "m", "--output-dir", "NOT_WRITABLE"], "not a writable folder"),
        (["evaluate", "--config", "MISSING"], "no such file"),
        (["generate", "--model", "./no/such/model", "--prompt", "x"], "--model"),
        (["generate", "--model", "m", "--image", "/no/such.png"], "--image"),
        (["generate", "--model", "m", "--prompt", "x", "--steps", "0"], "steps=0"),
        (["data", "make", "--output-dir", "NOT_WRITABLE"], "not a writable folder"),
        (["data", "make", "--output-dir", "OUT", "--num-cases", "0"], "--num-cases"),
        (["data", "inspect", "/no/such/dataset"], "/no/such/dataset"),
    ],
)
def test_other_commands_name_bad_values(argv, needle, bad_files, tmp_path, capsys):
    names = {
        "MISSING": bad_files["missing"],
        "MALFORMED": bad_files["malformed"],
        "UNKNOWN": bad_files["unknown"],
        "NOT_A_MAPPING": bad_files["not_a_mapping"],
        "NOT_WRITABLE": bad_files["a_file"] / "sub",
        "OUT": tmp_path / "out",
    }
    argv = [str(names.get(a, a)) for a in argv]
    if argv[0] == "tokenizer" and "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "tok")]
    code, err = run(argv, capsys)
    assert_one_line(code, err, needle)
