from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import LocalCluster


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    """A fresh 3-node cluster for one test (tests here kill nodes)."""
    c = LocalCluster(str(tmp_path / "cluster"))
    c.start()
    try:
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.stop()
