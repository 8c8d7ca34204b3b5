"""`--ray-address`: the CLI joins an existing multi-node Ray cluster (two simulated nodes of one CPU
each, ray.cluster_utils.Cluster) and still gives the local executor's bytes, for curation and dedup."""

from __future__ import annotations

import os

import pytest

from launch.cli import main
from tests.data_pipeline.executors.common import (
    DEMO,
    assert_same_output,
    curate,
    dedup_config,
    dedup_local,
    make_corpus,
    overrides,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = tmp_path_factory.mktemp("cluster")
    raw = make_corpus(root, limit=120, shard_docs=40)
    curate(raw, root / "local")
    dedup_local(raw, root / "local-dedup")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    yield root, raw, c.address
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def test_curation_and_dedup_on_a_two_node_cluster(cluster):
    root, raw, address = cluster
    assert (
        main(["data", "run", str(DEMO), *overrides(raw, root / "ray"), "--executor", "ray", "--ray-address", address])
        == 0
    )
    assert not ray.is_initialized(), "the driver should leave the cluster it joined"
    assert_same_output(root / "local", root / "ray")
    cfg = dedup_config()
    assert (
        main(
            [
                "data",
                "dedup",
                str(raw),
                "--output",
                str(root / "ray-dedup"),
                "--threshold",
                str(cfg.threshold),
                "--memory-budget",
                cfg.memory_budget,
                "--executor",
                "ray",
                "--ray-address",
                address,
            ]
        )
        == 0
    )
    assert_same_output(root / "local-dedup", root / "ray-dedup")
