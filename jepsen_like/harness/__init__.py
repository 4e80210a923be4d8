"""The fault-injection harness: `python -m jepsen_like run` (see docs/jepsen.md).

* `cluster` — real node processes on 127.0.0.11.., started and stopped by PID
* `api` — the HTTP client and the one table sorting replies into ok / fail / info
* `recorder` — the history, in real-time order (history-format v1)
* `runner` — the phases: setup → chaos → heal → recovery → final reads → check
* `report`, `timeline` — results.json statistics and timeline.html
* `cli` — `add_run_parser(subparsers)` for the package's command line
"""
