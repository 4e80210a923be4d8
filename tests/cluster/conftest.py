from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import LocalCluster, running_cluster


@pytest.fixture
def cluster(tmp_path) -> Iterator[LocalCluster]:
    """A fresh 3-node cluster for one test (tests here kill nodes)."""
    with running_cluster(str(tmp_path / "cluster")) as c:
        yield c
