"""The embedded recipe runs on the base install: a logger of the `logging` extra that is not installed is dropped
with one line naming the extra; `hf-meddiff tokenizer --config <SFT recipe>` reads the recipe's tokenizer keys."""

import logging
from pathlib import Path

import pytest

import hf_meddiff.trainer.sft.config as sft_config
from hf_meddiff import cli
from hf_meddiff.trainer.sft.config import MedDiffSFTConfig

RECIPE = Path(__file__).resolve().parents[1] / "trainers" / "pretrain_embedded.yaml"


@pytest.fixture
def no_logging_extra(monkeypatch):
    monkeypatch.setattr(sft_config, "logger_installed", lambda name: False)


def test_a_logger_that_is_not_installed_is_dropped_with_one_line(no_logging_extra, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=sft_config.__name__):
        args = MedDiffSFTConfig(output_dir=str(tmp_path), report_to=["tensorboard", "trackio"])
    assert args.report_to == []
    lines = [r.getMessage() for r in caplog.records if r.name == sft_config.__name__]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "['tensorboard', 'trackio']" in lines[0] and 'pip install "hf-meddiff[logging]"' in lines[0]


def test_installed_loggers_and_none_are_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(sft_config, "logger_installed", lambda name: name == "tensorboard")
    assert MedDiffSFTConfig(output_dir=str(tmp_path), report_to=["tensorboard"]).report_to == ["tensorboard"]
    assert MedDiffSFTConfig(output_dir=str(tmp_path)).report_to == [], "the default logs nowhere"


def test_embedded_recipe_trains_without_the_logging_extra(no_logging_extra, tmp_path):
    from transformers.integrations import get_reporting_integration_callbacks

    from hf_meddiff.trainer.sft.script import make_parser

    _, training_args, _ = make_parser().parse_args_and_config(
        ["--config", str(RECIPE), "--output_dir", str(tmp_path)]
    )
    assert training_args.report_to == []
    assert get_reporting_integration_callbacks(training_args.report_to) == []


@pytest.fixture
def fit_calls(monkeypatch):
    import hf_meddiff.evaluation as evaluation

    calls = []

    def fit_tokenizers(ds, output_dir, **kwargs):
        calls.append({"output_dir": str(output_dir), "rows": len(ds), **kwargs})
        return {"image_tokenizer": {}}

    monkeypatch.setattr(evaluation, "fit_tokenizers", fit_tokenizers)
    return calls


def test_tokenizer_reads_the_tokenizer_keys_of_the_sft_recipe(fit_calls, capsys):
    assert cli.main(["tokenizer", "--config", str(RECIPE), "--num-cases", "30"]) == 0
    call = fit_calls[-1]
    assert (call["preset"], call["max_steps"], call["batch_size"]) == ("embedded", 150, 16)
    assert call["text_vocab_size"] == 1024
    assert call["learning_rate"] is None, "the recipe's learning_rate is the SFT run's"
    assert Path(call["output_dir"]) == Path("outputs/meddiff-embedded/tokenizers")


def test_tokenizer_flags_still_win_over_the_recipe(fit_calls, tmp_path):
    argv = ["tokenizer", "--config", str(RECIPE), "--num-cases", "30", "--max-steps", "3"]
    assert cli.main([*argv, "--output-dir", str(tmp_path)]) == 0
    assert fit_calls[-1]["max_steps"] == 3 and fit_calls[-1]["output_dir"] == str(tmp_path)


def test_tokenizer_rejects_keys_unknown_to_every_stage(fit_calls, tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text(RECIPE.read_text() + "\nbogus_key: 1\n")
    assert cli.main(["tokenizer", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "['bogus_key']" in err and str(config) in err
    assert not fit_calls
