"""The `check` subcommand: ``python -m jepsen_like check FILE_OR_DIR...``.

One verdict per history. Exit status (also in `--help`):

* 0: every verdict is true (with `--expect`: every history with an expectation
  got it, and every other one is true);
* 1: some verdict is false or unknown (with `--expect`: some history disagrees
  with its `expected_linearizable`, or one without an expectation is not true);
* 2: a file could not be read or is not a valid history, no history file was
  found, or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from jepsen_like.checker.check import DEFAULT_TIMEOUT, CheckResult, Violation, check_history
from jepsen_like.checker.history import History, HistoryError, load_history
from jepsen_like.checker.report import render_html
from jepsen_like.checker.session import check_sessions

EXIT_OK = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_ERROR = 2

_EPILOG = """\
exit status: 0 if every verdict is true; 1 if any is false or unknown; 2 if a
file is not a readable history or none was found. With --expect, a history whose
expected_linearizable is true/false counts as good iff its verdict equals it (an
expected false that is found false is good; unknown never is); one without an
expectation is judged as without --expect.
"""


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `check` on an argparse subparsers object; its `func` returns the exit status."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="decide whether histories are linearizable",
        description=(
            "Check histories (history-format.md) for linearizability: one verdict per "
            "history, true, false or unknown (time limit reached)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="FILE_OR_DIR",
        help="history files; directories are searched recursively for *.json",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"time limit per history in seconds, then unknown (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per line and history"
    )
    parser.add_argument(
        "--expect",
        action="store_true",
        help="compare each verdict with the file's expected_linearizable",
    )
    parser.add_argument(
        "--session",
        action="store_true",
        help="judge read-your-writes and monotonic reads per session (the session checker, "
        "for histories of --consistency session runs) instead of linearizability",
    )
    parser.add_argument(
        "--html",
        type=Path,
        metavar="DIR",
        help="write an HTML report into DIR for each non-linearizable history",
    )
    parser.set_defaults(func=run_check)
    return parser


def history_files(paths: list[Path]) -> list[Path]:
    """The files named, and every *.json under the directories named, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            files.append(path)
    return files


def run_session_check(files: list[Path], as_json: bool) -> int:
    """The session checker on each file: exit 0 iff every verdict is true."""
    status = EXIT_OK
    for path in files:
        try:
            history = load_history(path)  # validates the format
            doc = orjson.loads(path.read_bytes())
        except (HistoryError, orjson.JSONDecodeError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            status = EXIT_ERROR
            continue
        verdict = check_sessions(doc["ops"])
        if verdict["valid"] is not True and status == EXIT_OK:
            status = EXIT_NOT_LINEARIZABLE
        if as_json:
            _emit({"file": str(path), "name": history.name, **verdict})
        else:
            detail = f" — {verdict['reason']}" if verdict.get("reason") else ""
            print(
                f"{history.name}: session {_verdict_text(verdict['valid'])} "
                f"({verdict['sessions']} sessions, {verdict['reads_checked']} reads){detail}",
                flush=True,
            )
    return status


def _verdict_text(v: Any) -> str:
    return "unknown" if v == "unknown" else json.dumps(v)


def run_check(args: argparse.Namespace) -> int:
    files = history_files(args.paths)
    if getattr(args, "session", False) and files:
        return run_session_check(files, args.json)
    status = EXIT_OK
    counts = {"true": 0, "false": 0, "unknown": 0, "error": 0, "disagree": 0}
    html_names: set[str] = set()
    if not files:
        print("error: no history files (*.json) found", file=sys.stderr)
        return EXIT_ERROR
    for path in files:
        try:
            history = load_history(path)
        except HistoryError as exc:
            counts["error"] += 1
            status = EXIT_ERROR
            if args.json:
                _emit(
                    {"name": path.stem, "file": str(path), "linearizable": None, "error": str(exc)}
                )
            else:
                print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        result = check_history(history, args.timeout)
        counts[_verdict(result)] += 1
        expected = history.expected_linearizable if args.expect else None
        if expected is not None:
            good = result.linearizable == expected
            if not good:
                counts["disagree"] += 1
        else:
            good = result.linearizable is True
        if not good and status == EXIT_OK:
            status = EXIT_NOT_LINEARIZABLE
        report = None
        if args.html is not None and result.linearizable is False:
            report = _write_html(args.html, history, result, html_names)
        if args.json:
            doc = {"file": str(path), **result.to_json()}
            if args.expect:
                doc["expected"] = history.expected_linearizable
                doc["agrees"] = None if expected is None else good
            if report is not None:
                doc["html"] = str(report)
            _emit(doc)
        else:
            print(_line(history, result, args.expect, report), flush=True)
    if not args.json:
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        print(
            f"{sum(counts[k] for k in ('true', 'false', 'unknown', 'error'))} "
            f"histories: {summary or 'none'}",
            flush=True,
        )
    return status


def _verdict(result: CheckResult) -> str:
    return "unknown" if result.linearizable == "unknown" else json.dumps(result.linearizable)


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def _line(history: History, result: CheckResult, expect: bool, report: Path | None) -> str:
    text = f"{history.name}: {_verdict(result)} ({history.model}, {result.seconds:.3f}s)"
    if result.violation is not None:
        text += " " + _violation_text(result.violation)
    if result.reason:
        text += f" [{result.reason}]"
    if expect:
        exp = history.expected_linearizable
        if exp is None:
            text += " [no expectation]"
        elif result.linearizable == exp:
            text += f" [expected {json.dumps(exp)}: agrees]"
        else:
            text += f" [expected {json.dumps(exp)}: DISAGREES]"
    if report is not None:
        text += f" [report: {report}]"
    return text


def _violation_text(v: Violation) -> str:
    key = (
        ""
        if v.key is None
        else f"key {json.dumps(list(v.key) if isinstance(v.key, tuple) else v.key)}: "
    )
    prefix = v.prefix if len(v.prefix) <= 8 else ["...", *v.prefix[-8:]]
    shown = ", ".join(map(str, prefix))
    return (
        f"{key}op {v.op} cannot be linearized; window [{', '.join(map(str, v.window))}]; "
        f"after a linearizable prefix of {len(v.prefix)} op(s) [{shown}] "
        f"in state {json.dumps(v.state)}"
    )


def _write_html(directory: Path, history: History, result: CheckResult, taken: set[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", history.name).strip("._") or "history"
    name, n = f"{stem}.html", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.html"
    taken.add(name)
    path = directory / name
    path.write_text(render_html(history, result), encoding="utf-8")
    return path
