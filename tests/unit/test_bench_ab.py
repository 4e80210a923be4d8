"""The pure parts of ``python -m bench ab``: points, round orders, the median table."""

from __future__ import annotations

import pytest

from bench import ab


def test_points_parse_with_default_tier() -> None:
    assert ab.parse_points("write:64, get:16:eventual") == [
        ab.Point("write", 64), ab.Point("get", 16, "eventual")]
    assert [p.label for p in ab.parse_points("write:1,get:16:eventual")] == [
        "write c1", "get eventual c16"]


@pytest.mark.parametrize("bad", ["", "write", "fly:3", "get:x", "get:16:strong", "write:0",
                                 "get:1:eventual:x"])
def test_bad_points_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ab.parse_points(bad)


def test_rounds_alternate_the_order() -> None:
    assert ab.orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]


def test_table_shows_medians_and_every_round() -> None:
    rows = [{"point": "write c64", "commit": c, "ops_per_s": v}
            for c, v in [("a", 700.0), ("a", 760.0), ("a", 710.0), ("b", 800.0)]]
    md = ab.table(rows, ["a", "b"])
    assert "| write c64 | 710 (700 / 760 / 710) | 800 (800) |" in md
    assert ab.medians(rows) == {"write c64": {"a": 710.0, "b": 800.0}}
