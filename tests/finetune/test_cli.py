import pytest

from llmloop.cli import main as llmloop

SUBCOMMANDS = ["sft", "dpo", "kto", "merge", "quantize"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        llmloop(["finetune", command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"llmloop finetune {command}" in out and len(out) > 300


def test_sft_help_documents_every_knob(capsys):
    with pytest.raises(SystemExit):
        llmloop(["finetune", "sft", "--help"])
    out = capsys.readouterr().out
    for flag in [
        "--data",
        "--output",
        "--base",
        "--method",
        "--max-steps",
        "--epochs",
        "--config",
        "--r",
        "--lora-alpha",
        "--packing",
        "--eval-fraction",
        "--bad-rows",
        "--resume",
        "--warmup-steps",
        "--gradient-accumulation-steps",
        "--seed",
        "--save-steps",
    ]:
        assert flag in out, flag
    assert "accelerate launch" in out


def test_dpo_help_has_beta(capsys):
    with pytest.raises(SystemExit):
        llmloop(["finetune", "dpo", "--help"])
    assert "--beta" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "x"], "--data is required"),
        (["--data", "missing.jsonl", "--output", "x"], "--data missing.jsonl: no such file"),
        (["--data", "d", "--output", "x", "--method", "full"], "--method must be one of"),
        (["--data", "d", "--output", "x", "--config", "nope.yaml"], "--config nope.yaml"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(
    argv, message, capsys, isolated_home, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert llmloop(["finetune", "sft", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_merge_of_an_unknown_artifact_says_where_to_look(capsys, isolated_home):
    assert llmloop(["finetune", "merge", "no-such-adapter"]) == 1
    assert "llmloop models list" in capsys.readouterr().err
