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
import os
import signal
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

from scorer.engines.local.run import RunJob, RunSummary, output_beside, partial_dir
from scorer.engines.ray import attempts
from scorer.engines.ray.output import (
    already_complete,
    lossy_in_parts,
    pending_units,
    publish,
    write_manifest,
    write_parts,
)
from scorer.engines.ray.predictor import ModelBundle, RatingPredictor, read_reviews
from scorer.engines.ray.sizing import NodeCycle, actor_nodes, free_cpus_per_node, size_pool
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
    dataset,
    ray,
    bundle,
    device,
    job,
    text_columns,
    keep,
    sizing,
    predictor,
    decoded_lossily,
    attempts_dir,
    placed,
):
    """Read units -> the predictor's actor pool (what each actor asks for: ``sizing``; on
    several nodes, where each goes: ``placed``)."""
    spread = {"ray_remote_args_fn": NodeCycle(placed)} if placed else {}
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
            "attempts_dir": attempts_dir,
        },
        compute=ray.data.ActorPoolStrategy(size=sizing.actors),
        num_cpus=sizing.cpus_per_actor,
        num_gpus=sizing.gpus_per_actor,
        memory=sizing.memory_per_actor or None,
        batch_size=None,
        batch_format="pyarrow",
        # Ray Data's defaults today; set so that a killed actor is always restarted and its
        # batch retried, whatever the defaults become.
        max_restarts=-1,
        max_task_retries=-1,
        **spread,
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
        attempts.clear(parts_dir)  # an interrupted run's attempts are not this run's
        ray = start_ray(address)
        resources = ray.cluster_resources()
        device = _device(job, resources)
        graph = _graph(model_dir, device, job.precision)
        free = free_cpus_per_node(ray)
        node_cpus = list(free.values())
        sizing = size_pool(node_cpus, resources.get("GPU", 0.0), device, job.workers)
        placed = actor_nodes(free, sizing.actors) if len(free) > 1 and device == "cpu" else []
        bundle = ray.put(ModelBundle.read(model_dir))
        columns = list(dict.fromkeys([*keep, *text_columns]))
        shared = str(parts_dir)
        with warnings.catch_warnings():
            # Passing max_restarts / max_task_retries explicitly, and ray_remote_args_fn, is
            # reported as deprecated (nothing replaces them yet in 2.60; pinned below 2.64).
            warnings.simplefilter("ignore", DeprecationWarning)
            scored = _pipeline(
                read_reviews(source, columns, text_columns, units=units, attempts_dir=shared),
                ray, bundle, device, job, text_columns, keep, sizing, predictor,
                source.kind == "csv", shared, placed,
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
                    f"{' + 1 MiB of memory' if sizing.memory_per_actor else ''}"
                    " and a whole free CPU on some node for read and write tasks; free CPUs "
                    f"per node at the start: {', '.join(f'{c:g}' for c in node_cpus)}"
                ) from None
            raise
        # Every task of the run has ended: what a dead writer left is no longer being written.
        retries = {
            **attempts.tally(parts_dir),
            "half_written_parts_removed": attempts.remove_half_written(parts_dir),
        }
        attempts.clear(parts_dir)
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
        retried=sum(retries[f"{stage}_retries"] for stage in attempts.STAGES),
    )
    # As planned; None where Ray places the actors (several nodes with CUDA).
    per_node = (
        sorted(Counter(placed).values(), reverse=True)
        if placed
        else ([sizing.actors] if len(free) == 1 else None)
    )
    write_manifest(job, out, files, model_dir, summary, sizing, graph, retries, per_node)
    return summary


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
