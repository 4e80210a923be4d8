"""`python -m jepsen_like check`: verdict lines, --json, --expect, --html, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jepsen_like.__main__ import main

HISTORIES = Path(__file__).parent / "histories"
REPO = Path(__file__).resolve().parents[2]
N_FILES = len(list(HISTORIES.rglob("*.json")))
N_FALSE = sum(
    json.loads(p.read_text())["expected_linearizable"] is False for p in HISTORIES.rglob("*.json")
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jepsen_like", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def copy_with(tmp_path: Path, name: str, **changes: Any) -> Path:
    doc = json.loads((HISTORIES / f"{name}.json").read_text())
    doc.update(changes)
    return write(tmp_path / f"{name}.json", doc)


def test_expect_over_the_literal_histories_agrees() -> None:
    proc = run("check", str(HISTORIES), "--expect")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == N_FILES + 1  # one per history, then the summary
    assert all("agrees" in line for line in lines[:-1])
    assert lines[-1].startswith(f"{N_FILES} histories:")


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(HISTORIES), "--json", "--expect"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == N_FILES
    for doc in docs:
        assert {"name", "model", "linearizable", "seconds", "key", "window"} <= set(doc)
        assert doc["agrees"] is True
    bad = next(d for d in docs if d["name"] == "kv-violation-on-one-key")
    assert (bad["linearizable"], bad["key"], bad["window"], bad["op"]) == (False, "b", [4], 4)


def test_exit_status_without_expect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(HISTORIES / "cas-chain.json")]) == 0
    assert main(["check", str(HISTORIES / "cas-both-succeed.json")]) == 1
    out = capsys.readouterr().out
    assert "cas-chain: true (cas-register" in out
    assert "cas-both-succeed: false (cas-register" in out
    assert "op 1 cannot be linearized; window [0, 1]" in out


def test_expect_reports_disagreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = copy_with(tmp_path, "register-stale-read-after-write", expected_linearizable=True)
    assert main(["check", "--expect", str(wrong)]) == 1
    assert "[expected true: DISAGREES]" in capsys.readouterr().out


def test_expect_with_no_expectation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = copy_with(tmp_path, "cas-chain", expected_linearizable=None)
    assert main(["check", "--expect", str(good)]) == 0
    assert "[no expectation]" in capsys.readouterr().out
    # Without an expectation a violation still fails the run.
    bad = copy_with(tmp_path, "cas-both-succeed", expected_linearizable=None)
    assert main(["check", "--expect", str(bad)]) == 1


def test_unknown_fails_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 40
    ops = [
        {"process": p, "type": t, "f": "write", "key": None, "value": p, "id": p}
        for t in ("invoke", "ok")
        for p in range(n)
    ]
    ops += [
        {"process": n, "type": t, "f": "read", "key": None, "value": v, "id": n}
        for t, v in (("invoke", None), ("ok", -1))
    ]
    path = write(
        tmp_path / "slow.json",
        {
            "format": 1,
            "name": "slow",
            "model": "cas-register",
            "initial_value": 0,
            "expected_linearizable": False,
            "ops": ops,
        },
    )
    assert main(["check", "--timeout", "0.1", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["linearizable"] == "unknown"
    # Unknown never agrees with an expectation.
    assert main(["check", "--timeout", "0.1", "--expect", str(path)]) == 1
    assert "unknown" in capsys.readouterr().out


def test_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(
        tmp_path / "bad.json",
        {
            "format": 1,
            "model": "kv",
            "ops": [
                {"process": 0, "type": "invoke", "f": "read", "key": "k", "value": None, "id": 0}
            ],
        },
    )
    good = HISTORIES / "cas-chain.json"
    assert main(["check", str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert "bad.json: 1 invocation(s) never complete" in captured.err
    assert "cas-chain: true" in captured.out  # the other files are still checked
    assert main(["check", "--json", str(bad)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["linearizable"] is None and "never complete" in doc["error"]


def test_no_files_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path)]) == 2
    assert "no history files" in capsys.readouterr().err


def test_html_reports_for_violations_only(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    proc = run("check", str(HISTORIES), "--expect", "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    pages = sorted(out.glob("*.html"))
    assert len(pages) == N_FALSE
    assert (out / "kv-violation-on-one-key.html").read_text().startswith("<!doctype html>")


def test_help_lists_check() -> None:
    proc = run("--help")
    assert proc.returncode == 0 and "check" in proc.stdout
    proc = run("check", "--help")
    assert "exit status" in proc.stdout and "--expect" in proc.stdout


def test_the_checker_imports_nothing_from_raftmem() -> None:
    code = (
        "import sys\n"
        "import jepsen_like.checker, jepsen_like.cli\n"
        "import jepsen_like.checker.generate, jepsen_like.checker.bench\n"
        "bad = sorted(m for m in sys.modules if m == 'raftmem' or m.startswith('raftmem.'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
