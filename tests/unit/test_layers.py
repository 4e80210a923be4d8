"""The import arrows of docs/architecture.md, checked on the source (imports point down only)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    base = ROOT / package.replace(".", "/")
    module = base.with_suffix(".py")
    for path in [module] if module.is_file() else base.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f}: {m}" for f, ms in imports_of(package).items() for m in sorted(ms)
            if any(m == p or m.startswith(p + ".") for p in forbidden)]


@pytest.mark.parametrize("package,forbidden", [
    ("raftmem.statemachine", ("raftmem.shardgroups", "raftmem.node", "raftmem.placement", "api",
                              "pysyncobj", "aiohttp", "jepsen_like")),
    ("raftmem.placement", ("raftmem.statemachine", "raftmem.shardgroups", "raftmem.node", "api",
                           "pysyncobj", "aiohttp", "jepsen_like")),
    ("raftmem.shardgroups", ("raftmem.node", "api", "aiohttp", "jepsen_like")),
    # The key space sits below the state machine and the router alike.
    ("raftmem.keyspace", ("raftmem.statemachine", "raftmem.placement", "raftmem.shardgroups",
                          "raftmem.node", "raftmem.commands", "api", "apsw", "jepsen_like")),
    ("jepsen_like", ("raftmem", "api")),
])
def test_imports_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == []


def test_only_shardgroups_imports_pysyncobj() -> None:
    for package in ("raftmem", "api"):
        bad = [o for o in offenders(package, ("pysyncobj",)) if not o.startswith("raftmem/shardgroups/")]
        assert bad == []


def test_the_checker_catches_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    # The test above must be able to fail: a module importing upwards is reported.
    pkg = ROOT / "raftmem" / "placement"
    probe = pkg / "_probe_upward_import.py"
    probe.write_text("import raftmem.node\n")
    try:
        assert offenders("raftmem.placement", ("raftmem.node",)) == [
            "raftmem/placement/_probe_upward_import.py: raftmem.node"]
    finally:
        probe.unlink()
