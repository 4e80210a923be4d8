"""The linearizability checker (docs/checker.md): histories in, verdicts out; and the
session and convergence checkers of the weaker read tiers (docs/jepsen.md).

It imports nothing from `raftmem`: its model of the store is its own.
"""

from jepsen_like.checker.check import CheckResult, Violation, check_file, check_history
from jepsen_like.checker.convergence import agreement
from jepsen_like.checker.history import History, HistoryError, load_history, parse_history
from jepsen_like.checker.report import render_html
from jepsen_like.checker.session import check_sessions

__all__ = [
    "CheckResult",
    "History",
    "HistoryError",
    "Violation",
    "agreement",
    "check_file",
    "check_history",
    "check_sessions",
    "load_history",
    "parse_history",
    "render_html",
]
