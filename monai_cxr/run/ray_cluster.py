"""``monai-cxr run --executor ray``: each unfinished cell a Ray task on a cluster.

A task runs ``run_cell`` on whichever node Ray picks: the same command, lock and
files as the local executor, so the study directory must be on storage every node mounts
at the same path (the generated configs hold absolute paths). Ray only places the cells:
``num_gpus`` per task makes Ray set ``CUDA_VISIBLE_DEVICES`` for the cell's process(es); a fraction
(``--gpus-per-cell 0.25``) places several small cells on one GPU, which Ray counts but does not partition.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.run.cell import run_cell

log = logging.getLogger(__name__)

__all__ = ["ray_outcomes", "start_ray"]

# A local Ray for a study only passes cell names and outcomes around: a small object store.
LOCAL_OBJECT_STORE_BYTES = 100 * 2**20


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CxrError("--executor ray needs Ray: pip install monai-cxr[ray]") from None
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the cluster at ``address``, or start a local Ray on loopback; return ``ray``."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    return ray


def ray_outcomes(
    cell_paths: list[Path],
    jobs: int | None = None,
    address: str | None = None,
    gpus_per_cell: float | None = None,
    cpus_per_cell: float = 1,
    nproc_per_node: int = 1,
):
    """Run the cells as Ray tasks, at most ``jobs`` at a time; yield their outcomes as they end.

    The Ray started here is shut down at the end; a cluster given by ``address`` is only
    disconnected from.
    """
    if not cell_paths:
        return
    if nproc_per_node > 1 and gpus_per_cell and gpus_per_cell != nproc_per_node:
        raise CxrError(
            f"--gpus-per-cell {gpus_per_cell} differs from --nproc-per-node {nproc_per_node}; "
            f"a multi-GPU cell runs one process per GPU"
        )
    owned = not _import_ray().is_initialized()  # a Ray the caller set up stays up
    ray = start_ray(address)
    try:
        if gpus_per_cell is None:
            gpus_per_cell = nproc_per_node if ray.cluster_resources().get("GPU", 0) > 0 else 0
        threads = max(1, int(cpus_per_cell // nproc_per_node) or 1)
        log.info(
            f"ray: {len(cell_paths)} cells, {gpus_per_cell:g} GPU and {cpus_per_cell:g} CPU each "
            f"(cluster: {_resources(ray)})"
        )
        task = ray.remote(run_cell).options(num_gpus=gpus_per_cell, num_cpus=cpus_per_cell, max_retries=0)
        queue = [str(path) for path in cell_paths]
        running = []
        limit = int(jobs) if jobs else len(queue)
        try:
            while queue or running:
                while queue and len(running) < limit:
                    running.append(task.remote(queue.pop(0), threads, nproc_per_node))
                done, running = ray.wait(running, num_returns=1)
                yield ray.get(done[0])
        except BaseException:
            for ref in running:  # KeyboardInterrupt in the task: run_cell stops the cell's process
                ray.cancel(ref)
            raise
    finally:
        if owned:
            ray.shutdown()


def _resources(ray) -> str:
    total = ray.cluster_resources()
    return ", ".join(f"{total.get(key, 0):g} {key}" for key in ("CPU", "GPU"))
