"""DataTrove's MinHash dedup (4 stages, tasks=2) for benchmarks/dedup.py; runs in benchmarks/.venv-peers.

    benchmarks/.venv-peers/bin/python benchmarks/dedup_peers.py INPUT_FOLDER OUTPUT_FOLDER

Writes OUTPUT/clusters.json: {id: cluster id} for every document DataTrove put in a cluster.
A helper of benchmarks/dedup.py, not a benchmark of its own: without arguments it prints this.
"""

import json
import os
import sys
from pathlib import Path

# benchmarks/tokenize.py shadows the stdlib module: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

TASKS = 2


def main(inp: str, out: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    out = Path(out)
    cfg = MinhashConfig(hash_config=HashConfig(precision=64), n_grams=5, num_buckets=14, hashes_per_bucket=8)
    work = out / "work"
    common = dict(logging_dir=str(out / "logs"), skip_completed=False)
    LocalPipelineExecutor(
        [JsonlReader(inp), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)],
        tasks=TASKS,
        workers=TASKS,
        **common,
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)],
        tasks=cfg.num_buckets,
        workers=TASKS,
        **common,
    ).run()
    LocalPipelineExecutor(
        [
            MinhashDedupCluster(
                input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=cfg, save_cluster_id=True
            )
        ],
        tasks=1,
        **common,
    ).run()
    LocalPipelineExecutor(
        [
            JsonlReader(inp),
            MinhashDedupFilter(
                input_folder=str(work / "remove"),
                load_cluster_ids=True,
                exclusion_writer=JsonlWriter(str(out / "removed")),
            ),
            JsonlWriter(str(out / "kept")),
        ],
        tasks=TASKS,
        workers=TASKS,
        **common,
    ).run()
    import gzip

    clusters = {}
    for f in sorted((out / "kept").glob("*.jsonl.gz")) + sorted((out / "removed").glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            for line in fh:
                rec = json.loads(line)
                cid = rec.get("metadata", {}).get("minhash_cluster_id", -1)
                if cid != -1:
                    clusters[rec["id"]] = cid
    (out / "clusters.json").write_text(json.dumps(clusters))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 1 else 2)
    main(*sys.argv[1:3])
