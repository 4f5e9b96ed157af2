"""The task runner of the flows' parallel parts (per-target drift checks), chosen by
settings: Prefect's thread pool of `EDGELOOP_TASK_WORKERS` threads by default; with
`EDGELOOP_TASK_RUNNER=dask`, a `distributed.LocalCluster` of `EDGELOOP_TASK_WORKERS`
worker processes on loopback, started and stopped with each flow run, or the
scheduler at `EDGELOOP_DASK_ADDRESS` (a cluster run elsewhere; every worker needs
this project installed)."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from stack.settings import Settings, get_settings


def task_runner(settings: Settings | None = None) -> TaskRunner:
    settings = settings or get_settings()
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.task_workers)
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.task_workers,
            "threads_per_worker": 1,  # one check per process: the GIL is not shared
            "processes": True,
            "host": settings.host,
            "dashboard_address": None,
        },
    )
