"""The linearizability checker (docs/checker.md): histories in, verdicts out.

It imports nothing from `raftmem`: its model of the store is its own.
"""

from jepsen_like.checker.check import CheckResult, Violation, check_file, check_history
from jepsen_like.checker.history import History, HistoryError, load_history, parse_history
from jepsen_like.checker.report import render_html

__all__ = [
    "CheckResult",
    "History",
    "HistoryError",
    "Violation",
    "check_file",
    "check_history",
    "load_history",
    "parse_history",
    "render_html",
]
