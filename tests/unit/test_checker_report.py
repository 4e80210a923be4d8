"""The HTML report: self-contained, shows the failing key's operations and the window."""

from __future__ import annotations

import re
from pathlib import Path

from jepsen_like.checker.check import check_history
from jepsen_like.checker.generate import corrupt, generate_history
from jepsen_like.checker.history import load_history, parse_history
from jepsen_like.checker.report import render_html

HISTORIES = Path(__file__).parent / "histories"


def test_report_shows_the_failing_key_and_window() -> None:
    history = load_history(HISTORIES / "kv-violation-on-one-key.json")
    result = check_history(history)
    page = render_html(history, result)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "linearizable = false" in page
    assert "<svg" in page and "<style>" in page
    # Self-contained: no scripts, stylesheets, images or fonts from elsewhere.
    assert not re.search(r"<script|<link|<img|@import|url\(http|src=", page)
    # The failing op (id 4, a read of null on key b) is in the timeline and the table.
    assert "id 4, process 1: read -&gt; null -&gt; ok" in page
    assert "✗ 4: r null" in page
    assert 'class="stuck"' in page
    # Only key b's operations are drawn: b's write (1) and read (4), not a's or c's.
    drawn = set(re.findall(r"<title>id (\d+),", page))
    assert drawn == {"1", "4"}


def test_report_marks_info_and_fail() -> None:
    history = load_history(HISTORIES / "info-write-takes-effect-once.json")
    page = render_html(history, check_history(history))
    assert 'fill="url(#open)"' in page  # the info write's bar is open-ended
    assert "-&gt; info" in page
    history = load_history(HISTORIES / "fail-write-value-read.json")
    page = render_html(history, check_history(history))
    assert "write 5 -&gt; fail" in page
    assert 'opacity="0.5"' in page  # the failed write takes no part


def test_report_escapes_names_and_values() -> None:
    doc = {
        "format": 1,
        "name": "<script>alert(1)</script>",
        "model": "cas-register",
        "initial_value": "<b>",
        "ops": [
            {"process": 0, "type": "invoke", "f": "read", "key": None, "value": None, "id": 0},
            {"process": 0, "type": "ok", "f": "read", "key": None, "value": "<i>", "id": 0},
        ],
    }
    history = parse_history(doc)
    page = render_html(history, check_history(history))
    assert "<script>" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page


def test_report_crops_long_histories() -> None:
    raw = corrupt(generate_history(ops=600, processes=4, model="cas-register", seed=5), 1, 5)
    history = parse_history(raw)
    result = check_history(history)
    assert result.violation is not None
    page = render_html(history, result)
    assert "operations on this key shown" in page
    assert f"<title>id {result.violation.op}," in page
    assert len(re.findall(r"<title>id \d+,", page)) < 200


def test_report_without_a_violation() -> None:
    history = load_history(HISTORIES / "cas-chain.json")
    page = render_html(history, check_history(history))
    assert "linearizable = true" in page and "No violation" in page
