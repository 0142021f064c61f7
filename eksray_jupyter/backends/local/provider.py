"""The Ray autoscaler's node provider for local clusters.

Ray's own autoscaler (v1, running in the head's monitor process) decides when to add
or remove workers; this provider only carries out its decisions by starting and
stopping ``ray start`` processes on this machine. It keeps no state of its own: the
node list is the cluster's ``nodes.json``, shared with the backend (which starts the
initial replicas and applies manual scaling), all under the cluster directory's lock.

Configured in ``autoscaler.yaml`` as ``provider: {type: external, module:
eksray_jupyter.backends.local.provider.LocalNodeProvider, cluster_dir: ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from .autoscaler_config import HEAD_NODE_TYPE
from .ray_start import HEAD_NODE_ID
from .state import ClusterDir
from .workers import launch_worker, live_workers, prune_dead_workers, stop_worker


class LocalNodeProvider(NodeProvider):
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.cluster_dir = ClusterDir(Path(provider_config["cluster_dir"]))

    def _tags(self, node_id: str, entry: dict[str, Any]) -> dict[str, str]:
        return {
            TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
            TAG_RAY_USER_NODE_TYPE: entry["group"],
            TAG_RAY_NODE_NAME: node_id,
            TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
            **entry.get("tags", {}),
        }

    def _all_tags(self) -> dict[str, dict[str, str]]:
        prune_dead_workers(self.cluster_dir)
        tags = {nid: self._tags(nid, entry) for nid, entry in live_workers(self.cluster_dir).items()}
        tags[HEAD_NODE_ID] = {
            TAG_RAY_NODE_KIND: NODE_KIND_HEAD,
            TAG_RAY_USER_NODE_TYPE: HEAD_NODE_TYPE,
            TAG_RAY_NODE_NAME: HEAD_NODE_ID,
            TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
        }
        return tags

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        return [
            nid
            for nid, tags in self._all_tags().items()
            if all(tags.get(k) == v for k, v in tag_filters.items())
        ]

    def is_running(self, node_id: str) -> bool:
        return node_id in self._all_tags()

    def is_terminated(self, node_id: str) -> bool:
        return not self.is_running(node_id)

    def node_tags(self, node_id: str) -> dict[str, str]:
        return self._all_tags().get(node_id, {})

    def internal_ip(self, node_id: str) -> str:
        # With use_node_id_as_ip the autoscaler keys nodes by id: every node here is 127.0.0.1.
        return node_id

    def external_ip(self, node_id: str) -> str:
        return node_id

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.cluster_dir.locked():
            nodes = self.cluster_dir.read_nodes()
            if node_id in nodes:
                nodes[node_id].setdefault("tags", {}).update(tags)
                self.cluster_dir.write_nodes(nodes)

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        group = tags[TAG_RAY_USER_NODE_TYPE]
        for _ in range(count):
            node_id = launch_worker(self.cluster_dir, group, launched_by="autoscaler")
            self.set_node_tags(node_id, dict(tags))

    def terminate_node(self, node_id: str) -> None:
        stop_worker(self.cluster_dir, node_id)

    @staticmethod
    def bootstrap_config(cluster_config: dict[str, Any]) -> dict[str, Any]:
        return cluster_config
