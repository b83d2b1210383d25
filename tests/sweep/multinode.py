"""A multi-node Ray cluster on this machine for tests, in its own process.

`python -m tests.sweep.multinode TEMP_DIR WORKERS` starts a head and WORKERS worker nodes with Ray's
`ray.cluster_utils.Cluster` (1 CPU each, the token of RAY_AUTH_MODE/RAY_AUTH_TOKEN from the
environment), prints one JSON line {"address", "head", "workers"} (node ids), then answers one
JSON line per command read from stdin:

    add               a new worker node            -> {"node": id}
    remove <node id>  kill that worker's processes -> {"removed": id}
    quit              shut the cluster down        -> {"quit": true}

The test process itself never imports Ray's global state, never writes Ray's machine-wide
"current cluster" file (`ray.init()` elsewhere on this machine must not find this cluster) and
never touches ~/.ray. If this process dies, Ray's reaper processes end the nodes.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    # answers go to the original stdout; whatever Ray and its processes print goes to stderr
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    # Cluster writes and deletes /tmp/ray/ray_current_cluster, which other Ray users on this
    # machine read (`ray.init()`, `--address auto`): this cluster is reached by its address only.
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    ray._common.utils.reset_ray_address = lambda *args, **kwargs: None

    temp_dir, workers = argv[0], int(argv[1])
    node_args = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node_args, "include_dashboard": False, "temp_dir": temp_dir})
    nodes = {cluster.head_node.node_id: cluster.head_node}
    for _ in range(workers):
        node = cluster.add_node(**node_args)
        nodes[node.node_id] = node
    cluster.wait_for_nodes()

    def say(value) -> None:
        print(json.dumps(value), file=answers, flush=True)

    say({"address": cluster.address, "head": cluster.head_node.node_id,
         "workers": [n for n in nodes if n != cluster.head_node.node_id]})
    try:
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "add":
                node = cluster.add_node(**node_args)
                nodes[node.node_id] = node
                cluster.wait_for_nodes()
                say({"node": node.node_id})
            elif command == "remove":
                # a crash, not a drain: every process of the node is killed at once
                cluster.remove_node(nodes.pop(rest[0]), allow_graceful=False)
                say({"removed": rest[0]})
            elif command == "quit":
                break
            else:
                say({"error": f"unknown command {command!r}"})
    finally:
        cluster.shutdown()
    say({"quit": True})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
