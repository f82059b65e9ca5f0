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


def test_hugging_face_flag_names_set_the_same_fields():
    from llmloop.finetune.cli import build_parser

    hf_names = ["--model-name-or-path", "m", "--output-dir", "o", "--num-train-epochs", "3"]
    hf_names += ["--per-device-train-batch-size", "4", "--lora-r", "8"]
    ours_names = ["--base", "m", "--output", "o", "--epochs", "3", "--batch-size", "4", "--r", "8"]
    hf = build_parser().parse_args(["sft", "--data", "d", *hf_names])
    ours = build_parser().parse_args(["sft", "--data", "d", *ours_names])
    assert vars(hf) == vars(ours)
    assert (ours.epochs, ours.batch_size, ours.r) == (3, 4, 8)


def test_unset_flags_stay_unset_so_defaults_can_be_computed():
    from llmloop.finetune.cli import build_parser

    args = build_parser().parse_args(["sft", "--data", "d", "--output", "o"])
    assert not {"learning_rate", "r", "epochs", "eval_fraction"} & set(vars(args))


def test_report_to_a_missing_tracker_fails_before_loading_a_model(capsys, isolated_home, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    argv = ["--data", str(data), "--output", str(tmp_path / "o"), "--report-to", "tensorboard"]
    assert llmloop(["finetune", "sft", *argv]) == 1
    assert "pip install tensorboard" in capsys.readouterr().err
