"""The `hf-meddiff` command: help everywhere, clear errors, `data make` / `inspect` on a few cases."""

from __future__ import annotations

import json
import runpy
import sys

import pytest

from hf_meddiff import cli

SUBCOMMANDS = ["demo", "tokenizer", "data", "generate", "evaluate", "sft", "ddpo"]


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo"],
        ["tokenizer"],
        ["data"],
        ["data", "make"],
        ["data", "inspect"],
        ["data", "convert"],
        ["generate"],
        ["evaluate"],
    ],
)
def test_every_builtin_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-meddiff " + " ".join(argv))
    assert "--" in out  # documents at least one option


@pytest.mark.parametrize("command", ["sft", "ddpo"])
def test_passthrough_help_goes_to_the_recipe_script_or_says_what_is_missing(command, capsys):
    module, _ = cli.PASSTHROUGH[command]
    try:
        __import__(module)
    except ModuleNotFoundError:
        assert cli.main([command, "--help"]) == 2
        assert module in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: hf-meddiff" in capsys.readouterr().out


def test_unknown_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_module_runs_as_a_script_for_accelerate_launch(monkeypatch, capsys):
    # `accelerate launch -m hf_meddiff.cli …` runs the module as __main__: the guard must call main().
    monkeypatch.setattr(sys, "argv", ["hf_meddiff.cli", "--version"])
    monkeypatch.delitem(sys.modules, "hf_meddiff.cli", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hf_meddiff.cli", run_name="__main__", alter_sys=False)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("hf-meddiff ")


def test_data_make_then_inspect(tmp_path, capsys):
    out = tmp_path / "phantom"
    assert cli.main(["data", "make", "--output-dir", str(out), "--num-cases", "6", "--image-size", "32"]) == 0
    assert (out / "data.parquet").is_file()
    assert "Saved 6 MedPhantom cases" in capsys.readouterr().out

    assert cli.main(["data", "inspect", str(out), "--json", "--num-examples", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_rows"] == 6
    assert sum(summary["counts"]["split"].values()) == 6
    assert {"image", "modality", "question", "answer", "boxes"} <= set(summary["columns"])
    assert summary["examples"][0]["image"].endswith("(32, 32)")

    assert cli.main(["data", "inspect", str(out / "data.parquet")]) == 0
    text = capsys.readouterr().out
    assert "6 rows" in text and "modality:" in text


def test_data_make_save_to_disk_roundtrips(tmp_path, capsys):
    out = tmp_path / "disk"
    assert (
        cli.main(
            [
                "data",
                "make",
                "--output-dir",
                str(out),
                "--num-cases",
                "3",
                "--image-size",
                "32",
                "--format",
                "disk",
            ]
        )
        == 0
    )
    assert (out / "dataset_info.json").is_file()
    capsys.readouterr()
    assert cli.main(["data", "inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_rows"] == 3


def test_missing_data_and_split_are_clear_errors(tmp_path, capsys):
    assert cli.main(["data", "inspect", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert (
        cli.main(
            ["data", "make", "--output-dir", str(tmp_path / "d"), "--num-cases", "3", "--image-size", "32"]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli.main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "d"), "--split", "dev"]) == 2
    )
    assert "no rows with split 'dev'; available splits" in capsys.readouterr().err


def test_bad_values_give_clear_errors(tmp_path, capsys):
    assert cli.main(["data", "make", "--output-dir", str(tmp_path), "--num-cases", "0"]) == 2
    assert "--num-cases must be positive" in capsys.readouterr().err
    assert cli.main(["generate", "--model", str(tmp_path), "--task", "vqa"]) == 2
    assert "needs --image" in capsys.readouterr().err
    assert cli.main(["evaluate", "--tasks", "vqa"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_yaml_config_supplies_defaults_and_rejects_unknown_keys(tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("tasks: vqa,bogus\nmodel: somewhere\n")
    assert cli.main(["evaluate", "--config", str(config)]) == 2
    assert "task(s) ['bogus']" in capsys.readouterr().err
    config.write_text("not_an_option: 1\n")
    assert cli.main(["evaluate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['not_an_option']" in err and str(config) in err


def _iu_xray_folder(root, report="Heart size is normal. No pleural effusion."):
    from PIL import Image

    (root / "images" / "CXR1").mkdir(parents=True)
    Image.new("L", (40, 40), 90).save(root / "images" / "CXR1" / "0.png")
    annotation = {"train": [{"id": "CXR1", "report": report, "image_path": ["CXR1/0.png"], "split": "train"}]}
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root


def test_data_convert_iu_xray_to_canonical(tmp_path, capsys):
    src = _iu_xray_folder(tmp_path / "iu")
    out = tmp_path / "canonical"
    assert (
        cli.main(["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out), "--check-phi"])
        == 0
    )
    assert "Converted 1 records of iu_xray" in capsys.readouterr().out
    assert cli.main(["data", "inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["source"] == {"iu_xray": 1} and summary["counts"]["modality"] == {"xray": 1}


def test_data_convert_refuses_phi_and_missing_input(tmp_path, capsys):
    src = _iu_xray_folder(tmp_path / "iu", report="Patient's Name: DOE^JOHN. Heart size is normal.")
    out = tmp_path / "canonical"
    assert (
        cli.main(["data", "convert", "iu_xray", "--input", str(src), "--output-dir", str(out), "--check-phi"])
        == 2
    )
    assert "PHI" in capsys.readouterr().err and not out.exists()
    assert (
        cli.main(["data", "convert", "slake", "--input", str(tmp_path / "nope"), "--output-dir", str(out)])
        == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_tokenizer_command_from_yaml_config_reports_reconstruction_error(tmp_path, capsys):
    config = tmp_path / "tok.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'tok'}\nnum_cases: 12\npreset: tiny\nimage_size: 32\nmax_steps: 2\n"
        "batch_size: 4\ntext: true\ntext_vocab_size: 300\nsplit: all\n"
    )
    assert cli.main(["tokenizer", "--config", str(config), "--codebook-size", "16"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{") :])
    assert report == json.loads((tmp_path / "tok" / "tokenizer_report.json").read_text())
    assert report["image_tokenizer"]["codebook_size"] == 16  # the flag overrides the YAML defaults
    heldout = report["image_tokenizer"]["heldout"]
    assert heldout["num_images"] == 1 and 0 < heldout["mse"] < 1 and heldout["psnr"] > 0
    assert report["text_tokenizer"]["vocab_size"] <= 300
    assert (tmp_path / "tok" / "image_tokenizer" / "config.json").is_file()
    assert (tmp_path / "tok" / "reconstructions.png").is_file()
    from hf_meddiff import MedDiffImageTokenizer

    assert MedDiffImageTokenizer.from_pretrained(tmp_path / "tok" / "image_tokenizer").codebook_size == 16


@pytest.fixture
def demo_calls(monkeypatch):
    """`run_demo` replaced by one that records the options it gets."""
    import hf_meddiff.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda options: calls.append(options) or {"ok": True})
    return calls


def test_demo_options_come_from_yaml_and_flags_win(demo_calls, tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("num_cases: 12\nquick: true\nstages: [data, tokenizers]\noutput_dir: somewhere\n")
    assert cli.main(["demo", "--config", str(config), "--num-cases", "9", "--output_dir", str(tmp_path)]) == 0
    options = demo_calls[-1]
    assert (options.num_cases, options.quick, options.stages) == (9, True, ["data", "tokenizers"])
    assert options.output_dir == str(tmp_path)


def test_demo_config_errors_name_the_key_or_value(demo_calls, tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text("num_casez: 12\n")
    assert cli.main(["demo", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['num_casez']" in err and str(config) in err
    assert cli.main(["demo", "--stages", "data", "deploy"]) == 2
    assert "Unknown demo stage(s) ['deploy']" in capsys.readouterr().err
    assert cli.main(["demo", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not demo_calls
