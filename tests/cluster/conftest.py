"""The multi-host tests' cluster (tests/cluster/hosts.py): built once per module, removed whatever happens.

They need root (network namespaces, a bridge, mounts): elsewhere they skip, saying so (`needs_root` in
hosts.py). As root, a missing tool is an error, not a skip: CI runs as root and must run them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.hosts import Cluster, missing_tools


@pytest.fixture(scope="module")
def empty_cluster() -> Iterator[Cluster]:
    """A bridge and the database host (PostgreSQL, Redis, the migrated database); add the hosts you need."""
    if missing := missing_tools():
        pytest.fail(f"the cluster tests need {', '.join(missing)} (Debian: apt-get install iproute2 util-linux)")
    with Cluster.create() as cluster:
        cluster.start_database()
        yield cluster
