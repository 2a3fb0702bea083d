"""Scoring on Ray Data: a predictor class for ``Dataset.map_batches``, and reading reviews
with each row's global input position.

    import ray, scorer.engines.ray.predictor as sr
    model = ray.put(sr.ModelBundle.read("model/"))      # the driver reads the model once
    ds = sr.read_reviews("s3://bucket/reviews/", ["Title", "Review Text", "id"])
    scored = ds.map_batches(
        sr.RatingPredictor,
        fn_constructor_kwargs={"model": model, "keep_columns": ["id"]},
        compute=ray.data.ActorPoolStrategy(size=4),
        num_gpus=1,                                      # or num_cpus=... on CPU nodes
        batch_format="pyarrow",
        batch_size=None,
    )

The predictor runs the same steps as ``scorer run`` (``scorer.runtime.scoring``: the checked model
directory, the tokenizer kernel, the same ``OnnxScorer`` and ``OutputSpec``), so a row gets
the same numbers either way. Ray's own ``read_parquet`` cannot tell a row its position in
the input, so ``read_reviews`` plans read units of known rows on the driver and reads them
in Ray tasks through ``scorer.io.source`` (the reader ``scorer run`` uses): any input it
takes, local or in an object store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.engines.ray import attempts
from scorer.io.source import Source, open_source
from scorer.runtime.model_dir import CONFIG, FINGERPRINT, VOCAB, ModelDir

ROW = "__scorer_row"  # a row's global input position, carried from the read to the output
LOSSY = "__scorer_lossy"  # whether the row held invalid UTF-8 (kept only when asked for)


@dataclass(frozen=True)
class ModelBundle:
    """A model directory's files as bytes: put in Ray's object store once by the driver, so
    workers need no shared filesystem. Each worker writes it to a local temporary directory
    and opens it with every check ``scorer run`` makes."""

    name: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: Path | str) -> ModelBundle:
        directory = ModelDir.open(Path(path))
        names = [CONFIG, VOCAB, *directory.card.graphs]
        if (directory.path / FINGERPRINT).is_file():
            names.append(FINGERPRINT)
        files = {}
        for name in names:
            if (directory.path / name).is_file():
                files[name] = (directory.path / name).read_bytes()
        return cls(directory.path.name, files)

    def materialize(self) -> Path:
        target = Path(tempfile.mkdtemp(prefix=f"scorer-model-{self.name}-"))
        for name, data in self.files.items():
            (target / name).write_bytes(data)
        return target


class RatingPredictor:
    """A callable class for ``Dataset.map_batches(..., batch_format="pyarrow")``.

    ``model``: a ``ModelBundle`` (or an ``ObjectRef`` to one, resolved here), or a model
    directory path the workers can read. A batch needs the text columns (and the kept ones);
    the result has the columns of ``scorer run``'s output: the kept columns, ``row`` (the
    input position when the dataset comes from ``read_reviews``, else null),
    ``predicted_rating``, ``expected_rating`` and ``prob_<label>``.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str = "auto",
        precision: str = "auto",
        text_columns: Sequence[str] | None = None,
        keep_columns: Sequence[str] = (),
        threads: int | None = None,
        batch_size: int | None = None,
        chunk_rows: int = 50_000,
        report_lossy: bool = False,
        decoded_lossily: bool = False,
        attempts_dir: str | None = None,
    ) -> None:
        from scorer.runtime.output import OutputSpec
        from scorer.runtime.scoring import open_model

        if type(model).__name__ == "ObjectRef":
            import ray

            model = ray.get(model)
        path = model.materialize() if isinstance(model, ModelBundle) else Path(model)
        self.model = open_model(path, device, precision, threads, batch_size)
        self.text_columns = tuple(text_columns or self.model.card.text_columns)
        self.keep = tuple(keep_columns)
        self.chunk_rows = chunk_rows
        self.report_lossy = report_lossy
        self.decoded_lossily = decoded_lossily  # CSV input: count the rows holding U+FFFD
        self._spec: OutputSpec | None = None
        self._OutputSpec = OutputSpec
        self.attempts_dir = attempts_dir  # where each batch's attempt is recorded (the engine's)
        if attempts_dir is not None and _reconstructed():
            attempts.record_restart(attempts_dir)

    @property
    def device(self) -> str:
        return self.model.scorer.device

    def __call__(self, batch: pa.Table) -> pa.Table:
        from scorer.runtime.scoring import Chunk, encode_chunk, infer_chunk

        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if self._spec is None:
            kept = pa.schema([_large(batch.schema.field(c)) for c in self.keep])
            self._spec = self._OutputSpec.create(
                kept, self.model.card, self.model.scorer, text_columns=tuple(self.text_columns)
            )
        rows = batch.column(ROW).to_numpy() if ROW in batch.column_names else None
        if rows is not None and len(rows):
            attempts.record(self.attempts_dir, "score", int(rows[0]))
        outputs, lossy = [], []
        # Slices of chunk_rows bound the ids matrix however large a block is.
        for start in range(0, max(batch.num_rows, 1), self.chunk_rows):
            piece = batch.slice(start, self.chunk_rows)
            chunk = Chunk(0, piece, piece.num_rows)
            chunk = infer_chunk(
                encode_chunk(
                    chunk,
                    self.text_columns,
                    self.keep,
                    self.model,
                    decoded_lossily=self.decoded_lossily,
                ),
                self.model,
            )
            positions = rows[start : start + piece.num_rows] if rows is not None else None
            outputs.append(self._spec.table(chunk.table, chunk.probs, chunk.expected, positions))
            lossy.append(chunk.lossy_flags)
        table = pa.concat_tables(outputs)
        if self.report_lossy:
            table = table.append_column(LOSSY, pa.array(np.concatenate(lossy)))
        return table


def _reconstructed() -> bool:
    """Whether this process is a Ray actor restarted after its first process died."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().was_current_actor_reconstructed


def _large(field: pa.Field) -> pa.Field:
    kind = field.type
    if pa.types.is_string(kind) or pa.types.is_string_view(kind):
        return field.with_type(pa.large_string())
    return field


# --- inputs ----------------------------------------------------------------------------------


def read_units(source: Source, unit_rows: int) -> list[dict[str, object]]:
    """Read units over the input's rows, each with its first row's global position: Parquet
    files in runs of ``unit_rows`` (polars skips to a run's row group), other files whole
    (a CSV slice would parse everything before it)."""
    units, offset = [], 0
    for index, rows in enumerate(source.file_rows()):
        step = unit_rows if source.kind == "parquet" else max(rows, 1)
        for begin in range(0, rows, step):
            count = min(step, rows - begin)
            units.append({"file": index, "begin": begin, "start": offset + begin, "rows": count})
        offset += rows
    return units


def read_unit_batch(
    units: pa.Table,
    source: Source,
    columns: Sequence[str],
    text_columns: Sequence[str],
    attempts_dir: str | None = None,
) -> pa.Table:
    """Read units (a map_batches task): their columns through the input's ``Source``, plus
    ``ROW``."""
    tables = []
    for unit in units.to_pylist():
        attempts.record(attempts_dir, "read", unit["start"])
        table = source.read_range(unit["file"], unit["begin"], unit["rows"], columns, text_columns)
        start = unit["start"]
        positions = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
        tables.append(table.append_column(ROW, positions))
    return pa.concat_tables(tables, promote_options="permissive")


def read_reviews(
    source: Source | str,
    columns: Sequence[str],
    text_columns: Sequence[str] = (),
    *,
    units: list[dict[str, object]] | None = None,
    unit_rows: int = 50_000,
    attempts_dir: str | None = None,
):
    """A Ray Dataset of the input's ``columns`` plus ``ROW``, one block per read unit
    (``units``: only these, e.g. those a resumed run still needs; ``attempts_dir``: where
    each read attempt is recorded, see ``scorer.engines.ray.attempts``)."""
    import ray.data

    source = open_source(source) if isinstance(source, str) else source
    units = read_units(source, unit_rows) if units is None else units
    return ray.data.from_items(units, override_num_blocks=max(len(units), 1)).map_batches(
        read_unit_batch,
        fn_kwargs={
            "source": source,
            "columns": list(columns),
            "text_columns": list(text_columns),
            "attempts_dir": attempts_dir,
        },
        batch_format="pyarrow",
        batch_size=None,
    )
