"""`scorer run --engine ray`: the same scoring, on a Ray cluster (or a local Ray instance).

Read units (runs of ``--chunk-rows`` input rows, planned on the driver) flow through
read tasks -> an actor pool of ``scorer.engines.ray.predictor.RatingPredictor`` -> write
tasks. Each write task
publishes its part under ``.OUT.partial/`` atomically, named by the input rows it holds, as
the local engine does; when every input row is covered, the directory is renamed to ``OUT``
(a Parquet directory) and the manifest written beside it. A killed actor is restarted and its
batch retried (``max_restarts`` / ``max_task_retries`` set explicitly); ``--resume`` reruns
only the read units whose parts are not all there.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scorer.engines.local.run import RunJob, RunSummary, output_beside, partial_dir
from scorer.engines.ray.output import (
    already_complete,
    lossy_in_parts,
    pending_units,
    publish,
    write_manifest,
    write_parts,
)
from scorer.engines.ray.predictor import ModelBundle, RatingPredictor, read_reviews
from scorer.errors import UserError
from scorer.io.files import lock_output
from scorer.io.source import (
    check_columns,
    default_keep_columns,
    open_source,
    resolve_text_columns,
)
from scorer.runtime.cpus import available_cpus
from scorer.runtime.model_dir import ModelDir, resolve_model_dir
from scorer.runtime.output import trusted_parts

# A pipeline that makes no progress this long is stuck (e.g. a cluster without the resources
# the pool asked for): fail it with Ray's timeout error rather than hang a nightly job.
NO_PROGRESS_TIMEOUT_S = 900
# How long a run waits at its start for CPUs that a job just ended is still releasing.
SETTLE_S = 10.0


@dataclass(frozen=True)
class Sizing:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int


def size_pool(node_cpus: Sequence[float], gpus: float, device: str, workers: int | None) -> Sizing:
    """Actors and what each asks for, from the free CPUs of each node, so that read and
    write tasks (1 CPU each) always find a whole CPU on some node.

    A pool whose actors hold every CPU deadlocks the pipeline: the first read task never gets
    a CPU (ray-project/ray#44687; measured here: 2 actors x 1 CPU on a 2-CPU instance hang,
    2 x 0.5 run). On several nodes Ray Data spreads the actors, so fractional actors can
    leave every node short of a whole CPU (seen: 2 nodes x 1 CPU, a 0.5-CPU actor on each,
    the read task pending forever); whole-CPU actors stall instead when a node is lost (the
    restarted actor takes the CPU the tasks need). So there actors reserve no CPU: one fewer
    than the whole free CPUs, the tasks always schedule, and a lost node's actor restarts on
    any node.
    """
    whole = [math.floor(c + 1e-9) for c in node_cpus]
    free = sum(whole)
    if free < 1:
        shown = ", ".join(f"{c:g}" for c in node_cpus) or "none"
        raise UserError(
            f"the Ray cluster has no whole free CPU on any node (free CPUs per node: {shown}); "
            "scorer needs one for its read and write tasks"
        )
    one_node = len(node_cpus) == 1
    cpus = float(node_cpus[0]) if one_node else float(free)
    if device == "cuda":
        if gpus < 1:
            raise UserError("--device cuda: the Ray cluster has no GPU")
        actors = min(workers or int(gpus), int(gpus))
        if one_node:
            per_cpu = min(1.0, max(cpus - 1.0, 0.0) / actors)
        else:
            per_cpu = 1.0 if free - 1 >= actors else 0.0
        return Sizing(actors, per_cpu, 1.0, 1)
    if not one_node:
        cap = max(free - 1, 1)
        return Sizing(min(workers or cap, cap), 0.0, 0.0, 1)
    per_cpu = 1.0 if cpus >= 3 else (0.5 if cpus >= 2 else 0.0)
    cap = max(1, math.floor((cpus - 1) / per_cpu)) if per_cpu else 1
    actors = min(workers or cap, cap)
    return Sizing(actors, per_cpu, 0.0, max(1, math.floor(per_cpu)))


def free_cpus_per_node(ray, settle_s: float = SETTLE_S) -> list[float]:
    """Each alive node's free CPUs before this job asks for any. Waits up to ``settle_s``
    for them to reach the nodes' totals: a job that just ended may still be releasing its
    actors; on a cluster busy with other work, what is free after that is what counts."""
    try:
        from ray._private.state import (
            available_resources_per_node,
            total_resources_per_node,
        )
    except ImportError:
        return _node_totals(ray)
    deadline = time.monotonic() + settle_s
    while True:
        try:
            per_node = available_resources_per_node()
            totals = total_resources_per_node()
        except Exception:  # Ray Client (ray://): these need a local worker
            return _node_totals(ray)
        free = {k: float(r.get("CPU", 0.0)) for k, r in per_node.items()}
        total = {k: float(r.get("CPU", 0.0)) for k, r in totals.items()}
        if all(free.get(k, 0.0) >= c for k, c in total.items()) or time.monotonic() > deadline:
            return list(free.values())
        time.sleep(0.25)


def start_ray(address: str | None):
    """Connect to ``address`` (``auto``, ``ray://...``) or start a local instance sized to
    this machine; quiet, without a dashboard."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    warnings.filterwarnings("ignore", module="ray")
    import ray
    import ray.data

    if not ray.is_initialized():
        options = {"log_to_driver": False, "logging_level": logging.ERROR}
        # ray.init installs a SIGTERM handler that exits at once; keep the scorer's, which
        # ends the run like Ctrl-C (exit 130, partial output resumable).
        on_term = signal.getsignal(signal.SIGTERM)
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=available_cpus(), include_dashboard=False, **options)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.execution_no_progress_timeout_s = NO_PROGRESS_TIMEOUT_S
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _unwrap(error: BaseException) -> BaseException:
    seen = 0
    while seen < 10 and getattr(error, "cause", None) is not None:
        error, seen = error.cause, seen + 1
    return error


def _pipeline(
    dataset, ray, bundle, device, job, text_columns, keep, sizing, predictor, decoded_lossily
):
    """Read units -> the predictor's actor pool (what each actor asks for: ``sizing``)."""
    return dataset.map_batches(
        predictor,
        fn_constructor_kwargs={
            "model": bundle,
            "device": device,
            "precision": job.precision,
            "text_columns": text_columns,
            "keep_columns": keep,
            "threads": sizing.threads,
            "batch_size": job.batch_size,
            "chunk_rows": job.chunk_rows,
            "report_lossy": True,
            "decoded_lossily": decoded_lossily,
        },
        compute=ray.data.ActorPoolStrategy(size=sizing.actors),
        num_cpus=sizing.cpus_per_actor,
        num_gpus=sizing.gpus_per_actor,
        batch_size=None,
        batch_format="pyarrow",
        # Ray Data's defaults today; set so that a killed actor is always restarted and its
        # batch retried, whatever the defaults become.
        max_restarts=-1,
        max_task_retries=-1,
    )


def run_on_ray(
    job: RunJob, address: str | None = None, predictor: type = RatingPredictor
) -> RunSummary:
    """Score ``job.input`` on Ray into a Parquet directory (see the module docstring).
    ``predictor``: a ``RatingPredictor`` subclass (tests inject faults with one)."""
    began = time.perf_counter()
    if job.chunk_rows < 1:
        raise UserError("--chunk-rows must be >= 1")
    source = open_source(job.input)
    files = source.files
    if job.out is None:
        if files[0].remote:
            raise UserError("--engine ray with a URI input needs --out (a shared filesystem path)")
        out = output_beside(job.input, files[0].path)
    else:
        out = Path(job.out)
    if "://" in str(job.out or ""):
        raise UserError("--out must be a path on a filesystem the Ray workers share")
    if not out.parent.is_dir():
        raise UserError(f"output directory {out.parent} does not exist")
    if job.resume and job.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not job.overwrite:
        if job.resume and not (partial_dir(out) / "state.json").exists():
            return already_complete(out, began)
        raise UserError(f"{out} already exists; pass --overwrite (or --resume)")
    model_dir = resolve_model_dir(job.model_dir)
    card = ModelDir.open(model_dir).card
    schema = source.schema
    text_columns, note = resolve_text_columns(
        schema, job.text_columns or card.text_columns, explicit=bool(job.text_columns)
    )
    if note:
        print(f"scorer: {note}", flush=True)
    keep = tuple(job.keep_columns if job.keep_columns is not None else default_keep_columns(schema))
    check_columns(source, text_columns, keep)
    total = sum(source.file_rows())
    parts_dir = partial_dir(out)
    with lock_output(parts_dir, label=out, directory=True):
        units = pending_units(job, parts_dir, source, model_dir)
        ray = start_ray(address)
        resources = ray.cluster_resources()
        device = _device(job, resources)
        graph = _graph(model_dir, device, job.precision)
        node_cpus = free_cpus_per_node(ray)
        sizing = size_pool(node_cpus, resources.get("GPU", 0.0), device, job.workers)
        bundle = ray.put(ModelBundle.read(model_dir))
        columns = list(dict.fromkeys([*keep, *text_columns]))
        with warnings.catch_warnings():
            # Passing max_restarts / max_task_retries explicitly is reported as deprecated
            # (the named parameters that replace them do not exist yet in 2.60).
            warnings.simplefilter("ignore", DeprecationWarning)
            scored = _pipeline(
                read_reviews(source, columns, text_columns, units=units), ray, bundle, device, job,
                text_columns, keep, sizing, predictor, source.kind == "csv",
            )  # fmt: skip
        written = scored.map_batches(
            write_parts,
            fn_kwargs={"directory": str(parts_dir)},
            batch_size=None,
            batch_format="pyarrow",
        )
        try:
            results = written.take_all() if units else []
        except Exception as exc:  # Ray wraps what the tasks raised
            cause = _unwrap(exc)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            if type(cause).__name__ == "ExecutionTimeoutError":
                raise UserError(
                    f"the Ray pipeline made no progress for {_no_progress_s(ray):g} s: it "
                    f"needs {sizing.actors} actor(s) x {sizing.cpus_per_actor:g} CPU"
                    f"{f' + {sizing.gpus_per_actor:g} GPU' if sizing.gpus_per_actor else ''}"
                    " and a whole free CPU on some node for read and write tasks; free CPUs "
                    f"per node at the start: {', '.join(f'{c:g}' for c in node_cpus)}"
                ) from None
            raise
        trusted, stale = trusted_parts(parts_dir)
        covered = trusted[-1].end if trusted else 0
        if stale or covered != total:
            raise RuntimeError(f"{parts_dir}: parts cover rows 0..{covered} of {total}")
        del results  # each part recorded its own rows and lossy count
        lossy = lossy_in_parts(parts_dir)
        publish(parts_dir, out, job.overwrite)
    summary = RunSummary(
        out=out,
        rows=total,
        seconds=time.perf_counter() - began,
        device=device,
        provider=f"Ray, {sizing.actors} actors",
        precision=graph[2],
        model=f"{model_dir.name}/{graph[0]}",
        resumed_rows=total - sum(int(u["rows"]) for u in units),
        lossy_rows=lossy,
    )
    write_manifest(job, out, files, model_dir, summary, sizing, graph)
    return summary


def _node_totals(ray) -> list[float]:
    """Each alive node's CPUs (``ray.nodes()`` works through Ray Client too)."""
    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def _no_progress_s(ray) -> float:
    return float(ray.data.DataContext.get_current().execution_no_progress_timeout_s)


def _graph(model_dir: Path, device: str, precision: str) -> tuple[str, str, str]:
    """(file, sha256, precision) of the graph the actors run on ``device``."""
    from scorer.runtime.session import choose_precision, graph_file

    chosen = choose_precision(model_dir, device, precision)
    path = graph_file(model_dir, device, chosen)
    entry = ModelDir.open(model_dir).card.graphs.get(path.name)
    if entry is None:
        raise UserError(f"{model_dir} has no {path.name}: run `scorer export`")
    return path.name, str(entry.get("sha256")), chosen


def _device(job: RunJob, resources: dict) -> str:
    if job.device == "auto":
        return "cuda" if resources.get("GPU", 0) >= 1 and job.precision != "int8" else "cpu"
    return job.device
