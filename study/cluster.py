"""Connect to the Ray cluster in RAY_ADDRESS, or start a local one kept on 127.0.0.1.

Secure defaults for the local cluster:
- every server binds to loopback. Ray picks the node IP from the machine's external interface
  and binds its gRPC servers to it (`_node_ip_address="127.0.0.1"` alone is not enough in Ray
  2.60); with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray treats the machine as a single-node
  cluster and resolves the node IP to 127.0.0.1, which every server then binds to. Ray reads
  it when it is imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER), so where `ray` was
  imported first (a test session, a notebook) the value it read is set too.
- Ray 2.60's token authentication stays on (its default); the token lives in ~/.ray/auth_token.
- the dashboard listens on 127.0.0.1 only (reach it from elsewhere with an SSH tunnel).
- without RAY_ADDRESS it always starts a new cluster (`address="local"`): a bare `ray.init()`
  would attach to the last `ray start` cluster of this machine (its address file,
  /tmp/ray/ray_current_cluster), with that cluster's settings and CPUs, and refuse `num_cpus`.
  Set RAY_ADDRESS (an address, or `auto`) to use a running cluster.
"""

from __future__ import annotations

import os
import sys

LOOPBACK = "127.0.0.1"
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect(*, num_cpus: int | None = None, dashboard: bool = True) -> str:
    """Initialise Ray once for this process; return a description of the cluster used."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        _single_node_on_loopback()
    import ray

    if ray.is_initialized():
        return "already connected"
    if address:
        ray.init(address=address, log_to_driver=True)
        return f"Ray cluster at {address}"
    context = ray.init(
        address="local",
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


def _single_node_on_loopback() -> None:
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for this process and the Ray processes it starts,
    unless the user set it otherwise."""
    if os.environ.setdefault(_SINGLE_NODE_ENV, "0") != "0":
        return
    if "ray" in sys.modules:  # too late for the environment variable: set what Ray read from it
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
