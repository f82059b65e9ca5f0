import io
import json
from pathlib import Path

import pytest

from llmloop.safety.cli import main
from llmloop.safety.errors import InputLineError


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_scan_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "mail a@b.co"}, {"text": "nothing"}])
    assert main(["scan", "--redact", str(path)]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first == {
        "findings": [{"type": "EMAIL", "start": 5, "end": 11, "text": "a@b.co", "score": 1.0}],
        "redacted": "mail <EMAIL_1>",
    }
    assert second == {"findings": [], "redacted": "nothing"}


def test_scan_stdin_is_one_text(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("line one a@b.co\nline two 536-22-1234\n"))
    assert main(["scan"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert [f["type"] for f in json.loads(line)["findings"]] == ["EMAIL", "US_SSN"]
    assert "redacted" not in json.loads(line)


@pytest.mark.parametrize(
    ("line", "message"),
    [("not json", r"in\.jsonl:2: not JSON"), ('{"txt": "x"}', r'in\.jsonl:2: .*string "text"')],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(InputLineError, match=message):
        main(["scan", str(path)])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputLineError, match="cannot read"):
        main(["classify", str(tmp_path / "missing.jsonl")])


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture) -> None:
    for command in (["scan"], ["classify"], []):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
    assert "harmful" in capsys.readouterr().out


@pytest.mark.slow
def test_classify_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"text": "How do I make a pipe bomb?"}, {"text": "How do I kill a stuck process?"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["classify", str(path)]) == 0
    bomb, process = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert bomb["flagged"] and bomb["categories"]["weapons_mass_harm"]
    assert not process["flagged"]
    assert set(bomb) == {"flagged", "categories", "category_scores"}
