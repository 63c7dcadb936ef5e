"""Local clusters: N node processes behind HAProxy, for `boxoffice cluster`, the multi-node tests and the rush runner.

- `local`: the nodes (`LocalCluster`: start, stop, kill and restart one, wait until HAProxy routes to it);
- `haproxy`: the one `haproxy.cfg`, the environment that fills it in, HAProxy's start and its stats;
- `command`: `boxoffice cluster` in the foreground, and the services of a local cluster (`cluster_services`);
- `probe`: the error, the repository root and the probes of a process that may be starting or dying.
"""

from server.cluster.command import cluster_banner, cluster_services, run_cluster
from server.cluster.haproxy import MAX_NODES, haproxy_config_path
from server.cluster.local import LOAD_TEST_LIMITS, SERVICE_URLS, LocalCluster
from server.cluster.probe import ROOT, ClusterError

__all__ = [
    "LOAD_TEST_LIMITS", "MAX_NODES", "ROOT", "SERVICE_URLS", "ClusterError", "LocalCluster", "cluster_banner",
    "cluster_services", "haproxy_config_path", "run_cluster",
]
