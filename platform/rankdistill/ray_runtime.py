"""Connecting to Ray: a given cluster address, the job's ``RAY_ADDRESS``, or a local instance.

A local instance binds to 127.0.0.1 only (this is also what ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
does, which is set for the processes it starts so that Ray Train's ``MASTER_ADDR`` is loopback too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: environment of Ray worker processes that train in a thread other than the main one (Ray Train
#: v2's training thread). glibc gives each such thread its own malloc arena, which hands activation
#: and gradient memory back to the kernel and page-faults it in again every step: measured on a
#: MiniLM training step (CPU, 1 thread), twice the minor page faults and 0.85x the throughput of the
#: same loop in a main thread; with one arena, 0.98x. (Inference, forward only, showed no such cost.)
THREADED_TORCH_ENV = {"MALLOC_ARENA_MAX": "1"}


@dataclass
class RayConfig:
    """Where to run. ``address: null`` → ``$RAY_ADDRESS`` (set by ``ray job submit``) or a local Ray."""

    address: str | None = None
    num_cpus: int | None = None  # local instance only
    num_gpus: int | None = None  # local instance only
    include_dashboard: bool = False  # local instance only
    metrics_export_port: int | None = None  # local instance only: Prometheus endpoint of Ray's metrics agent
    shutdown_at_exit: bool = True  # shut a local instance down when the job ends


#: the address of the local instance :func:`init_ray` started, while it runs (``RAY_ADDRESS`` names it)
_STARTED_ADDRESS: str | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _forget_started_address() -> None:
    """``RAY_ADDRESS`` back as it was before :func:`init_ray` started a local instance."""
    global _STARTED_ADDRESS
    if _STARTED_ADDRESS is not None and os.environ.get("RAY_ADDRESS") == _STARTED_ADDRESS:
        del os.environ["RAY_ADDRESS"]
    _STARTED_ADDRESS = None


def init_ray(config: RayConfig | None = None) -> bool:
    """Initialise Ray once; returns True when this call started a local instance.

    A local instance is started on a GCS port chosen here, and every process of it (the driver,
    and through the job's runtime environment every worker) gets ``RAY_ADDRESS`` pointing at it
    while it runs: Ray internals that look for "the" local cluster (Ray Train's
    PlacementGroupCleaner asks the state API) would otherwise find two when another job runs on
    the same machine, and fail with ``Found multiple active Ray instances``."""
    import sys

    global _STARTED_ADDRESS
    config = config or RayConfig()
    already = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if not already:
        _forget_started_address()  # an instance this process started and shut down (ray.shutdown())
    address = config.address or os.environ.get("RAY_ADDRESS")
    local = not address
    if local:
        # a single machine: keep Ray on loopback, and let Ray Train poll its one local worker group
        # every second (its 2 s default makes every report wait up to 2 s; each poll runs in the
        # worker and takes the GIL from the training thread: at 0.2 s, 4 % of a CPU step's
        # throughput). A job that joins a cluster keeps the cluster's settings.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1.0")
    import ray

    if ray.is_initialized():
        return False
    if local:
        port = _free_port()
        own = f"127.0.0.1:{port}"
        previous = os.environ.get("RAY_GCS_SERVER_PORT")
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # read by the GCS this init starts
        try:
            ray.init(
                num_cpus=config.num_cpus,
                num_gpus=config.num_gpus,
                include_dashboard=config.include_dashboard,
                _node_ip_address="127.0.0.1",
                **({"_metrics_export_port": config.metrics_export_port} if config.metrics_export_port else {}),
                runtime_env={"env_vars": {"RAY_ADDRESS": own}},
                log_to_driver=True,
                configure_logging=False,
            )
        finally:
            if previous is None:
                os.environ.pop("RAY_GCS_SERVER_PORT", None)
            else:
                os.environ["RAY_GCS_SERVER_PORT"] = previous
        started = ray.get_runtime_context().gcs_address
        if started == own:
            os.environ["RAY_ADDRESS"] = own
            _STARTED_ADDRESS = own
    else:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    return local


def shutdown_ray(started_locally: bool, config: RayConfig | None = None) -> None:
    import ray

    if started_locally and (config is None or config.shutdown_at_exit) and ray.is_initialized():
        ray.shutdown()
        _forget_started_address()


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")] if ray.is_initialized() else []


def _sees(path: str) -> bool:
    return os.path.exists(path)


def check_shared_folder(folder: str | os.PathLike, key: str) -> None:
    """On a Ray cluster of several nodes, fail early (:class:`ConfigError` naming ``key``) when the
    local folder ``folder`` is not the same folder on every node (a shared mount is; the driver's
    own disk is not). A marker file written here is looked for by a task on each node. URIs pass."""
    from rankdistill.errors import ConfigError
    from rankdistill.storage import is_uri

    nodes = alive_nodes()
    if is_uri(folder) or len(nodes) < 2:
        return
    import secrets
    from pathlib import Path

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(folder) / f".rankdistill-shared-{secrets.token_hex(6)}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(marker)) for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] + " " + n["NodeID"][:8] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise ConfigError(f"'{folder}' is a folder on this node's disk, which {len(blind)} of the cluster's {len(nodes)} "
                          f"nodes cannot see ({', '.join(blind)}): set {key} to a storage URI (s3://..., gs://...) "
                          "or a shared mount that every node sees", key)


@dataclass
class ResourceRequest:
    """What one stage asks the cluster for: ``units`` × ``per_unit`` (``{"CPU": (2.0,
    "training.cpus_per_worker")}``: an amount and the config key that set it), all at once;
    ``units_key`` names the key that set ``units``."""

    what: str  # "training worker", "encoder actor", ...
    per_unit: dict[str, tuple[float, str]]
    units: int = 1
    units_key: str | None = None


def _autoscaling_limits() -> dict[str, float] | None:
    """The most the cluster can grow to, when an autoscaler manages it (else None)."""
    try:
        from ray._private import state as ray_state

        return ray_state.state.get_max_resources_from_cluster_config() or None
    except Exception:  # noqa: BLE001 - no autoscaler config (a local instance, a fixed cluster)
        return None


def check_resources(requests: list[ResourceRequest]) -> None:
    """Before any work: every request fits the cluster (each unit on one node, all units at once),
    else a :class:`ConfigError` naming the key. Ray would otherwise wait, or retry, forever (Ray
    Train's placement group never schedules) after the teachers were already paid. A cluster run by
    an autoscaler that could grow to fit the request only logs a warning that says so."""
    import logging

    import ray

    from rankdistill.errors import ConfigError

    nodes = [n.get("Resources", {}) for n in alive_nodes()]
    total = ray.cluster_resources()
    limits = _autoscaling_limits()
    for request in requests:
        for name, (amount, key) in request.per_unit.items():
            if amount <= 0:
                continue
            largest = max((float(n.get(name, 0)) for n in nodes), default=0.0)
            whole = float(total.get(name, 0))
            if amount > largest:
                problem, where = (f"each {request.what} asks for {amount:g} {name}, but the largest node has "
                                  f"{largest:g}"), key
            elif amount * request.units > whole:
                problem, where = (f"{request.units} {request.what}s × {amount:g} {name} = "
                                  f"{amount * request.units:g} {name}, but the cluster has {whole:g}"), \
                    request.units_key or key
            else:
                continue
            if limits and float(limits.get(name, 0)) >= amount * request.units:
                logging.getLogger(__name__).warning(
                    "%s: %s; the cluster autoscales (up to %g %s), so the job waits for it to grow", where,
                    problem, float(limits.get(name, 0)), name)
                continue
            raise ConfigError(f"{problem}: it could never be scheduled", where)
