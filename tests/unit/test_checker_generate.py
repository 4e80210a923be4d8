"""The history generator: valid, linearizable by construction, realistic outcomes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from jepsen_like.checker.check import check_history
from jepsen_like.checker.generate import corrupt, generate_history, main
from jepsen_like.checker.history import load_history, parse_history


def test_generated_history_is_linearizable_and_realistic() -> None:
    raw = generate_history(ops=2000, keys=20, processes=10, seed=7, p_info=0.02)
    history = parse_history(raw)  # valid: pairs, one open op per process, time order
    assert len(history.operations) == 2000
    kinds = Counter(op.type for op in history.operations)
    assert kinds["ok"] > 1000 and kinds["fail"] > 0 and kinds["info"] > 0
    assert {op.f for op in history.operations} == {"read", "write", "cas", "append"}
    # An info op retires its process, Jepsen-style.
    assert len({op.process for op in history.operations}) == 10 + kinds["info"]
    result = check_history(history)
    assert result.linearizable is True
    assert result.partitions == 20


def test_corrupt_breaks_linearizability() -> None:
    raw = generate_history(ops=500, keys=5, processes=5, seed=3)
    broken = corrupt(raw, reads=1, seed=3)
    assert broken["expected_linearizable"] is False
    result = check_history(parse_history(broken))
    assert result.linearizable is False
    assert raw["ops"] != broken["ops"]


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "h.json"
    assert main(["--model", "cas-register", "--ops", "50", "--processes", "3", "-o", str(out)]) == 0
    history = load_history(out)
    assert history.model == "cas-register" and len(history.operations) == 50
    assert json.loads(out.read_text())["expected_linearizable"] is True
