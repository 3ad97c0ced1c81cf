"""Connect to the Ray cluster in RAY_ADDRESS, or start a local one kept on 127.0.0.1.

Secure defaults for the local cluster:
- every server binds to loopback. Ray picks the node IP from the machine's external interface
  and binds its gRPC servers to it (`_node_ip_address="127.0.0.1"` alone is not enough in Ray
  2.60); with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray treats the machine as a single-node
  cluster and resolves the node IP to 127.0.0.1, which every server then binds to. Ray reads
  it when it is imported, so it is set before the first `import ray`.
- Ray 2.60's token authentication stays on (its default); the token lives in ~/.ray/auth_token.
- the dashboard listens on 127.0.0.1 only (reach it from elsewhere with an SSH tunnel).
"""

from __future__ import annotations

import os
import sys

LOOPBACK = "127.0.0.1"
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect(*, num_cpus: int | None = None, dashboard: bool = True) -> str:
    """Initialise Ray once for this process; return a description of the cluster used."""
    address = os.environ.get("RAY_ADDRESS")
    if not address and "ray" not in sys.modules:
        os.environ.setdefault(_SINGLE_NODE_ENV, "0")
    import ray

    if ray.is_initialized():
        return "already connected"
    if address:
        ray.init(address=address, log_to_driver=True)
        return f"Ray cluster at {address}"
    context = ray.init(
        num_cpus=num_cpus,
        _node_ip_address=LOOPBACK,
        include_dashboard=dashboard,
        dashboard_host=LOOPBACK,
        log_to_driver=True,
    )
    where = f"local Ray cluster on {LOOPBACK} (gcs {context.address_info.get('gcs_address')})"
    if dashboard and context.dashboard_url:
        url = context.dashboard_url
        where += f", dashboard {url if url.startswith('http') else 'http://' + url}"
    return where


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
