"""The one Ray bootstrap. Everything that needs Ray (the rollout pool, the COMET scorer actor)
joins the cluster here, so every process of a run (each rank of an ``accelerate launch``)
ends up in the same cluster and finds the same named actors.

The cluster is ``rollout.ray_address`` / $RAY_ADDRESS when given, else a local one that the
first rank starts. ``ray.init("auto")`` cannot find a cluster started that way, so that rank
leaves its address in a file named after the launch (the launcher process is the common
parent of a launch's ranks on one node) and the other ranks wait for it. Ray 2.60 gives a new
local cluster token authentication (token in ~/.ray/auth_token) but never turns it on for a
client that joins by an explicit address, so the file carries the creator's auth mode too."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

NAMESPACE = "r1t1"
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def init_ray(address: str | None = None) -> bool:
    """Join ``address`` / $RAY_ADDRESS, else start a local cluster; nothing if this process is
    already connected. Returns whether this call initialised Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    return True


def launch_name() -> str:
    """A name shared by the ranks of one launch (and distinct between concurrent launches)."""
    return f"rollout-{os.environ.get('MASTER_ADDR', 'local')}-{os.environ.get('MASTER_PORT', '0')}".replace(".", "_")


def launch_address_file() -> Path:
    return Path(tempfile.gettempdir()) / f"r1t1-{launch_name()}-{os.getppid()}.ray-address"


def join_launch_cluster(ray_address: str | None, create: bool, timeout_s: float = 600) -> tuple[bool, Path | None]:
    """Connect this rank to its launch's cluster before anything creates actors in it.
    ``create`` (rank 0) joins ``ray_address`` / $RAY_ADDRESS or starts a local cluster and
    writes its address file; other ranks join the given address or wait for that file.
    Returns (whether this call initialised Ray, the address file this rank wrote or None)."""
    import ray

    address = ray_address or os.environ.get("RAY_ADDRESS")
    if create:
        owns = init_ray(address)
        if address or int(os.environ.get("WORLD_SIZE", "1")) == 1:  # nobody to tell
            return owns, None
        path = launch_address_file()
        path.write_text(json.dumps({"address": ray.get_runtime_context().gcs_address,
                                    "auth_mode": os.environ.get(AUTH_MODE_ENV)}))
        return owns, path
    path, deadline = launch_address_file(), time.monotonic() + timeout_s
    while address is None and not path.is_file():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster of this launch did not appear within {timeout_s:.0f} s: "
                               f"rank 0 writes its address to {path}")
        time.sleep(1.0)
    if address is None:
        address, auth_mode = read_address_file(path)
        if auth_mode and os.environ.get(AUTH_MODE_ENV) is None:  # same user and node: the same token file
            _set_auth_mode(auth_mode)
    return init_ray(address), None


def read_address_file(path: Path) -> tuple[str, str | None]:
    """(cluster address, the creator's RAY_AUTH_MODE) from a launch's address file."""
    data = json.loads(path.read_text())
    return data["address"], data.get("auth_mode")


def _set_auth_mode(mode: str) -> None:
    """Ray reads RAY_AUTH_MODE into a config cached at import; re-reading it is what Ray's own
    ``_enable_token_auth`` does (ray/_private/authentication, Ray 2.60)."""
    from ray._raylet import Config

    os.environ[AUTH_MODE_ENV] = mode
    Config.initialize("")
