"""Scoring on Ray Data: a predictor class for ``Dataset.map_batches``, and reading reviews
with each row's global input position.

    import ray, scorer.ray as sr
    model = ray.put(sr.ModelBundle.read("model/"))      # the driver reads the model once
    ds = sr.read_reviews(["s3://bucket/reviews/"], ["Title", "Review Text", "id"])
    scored = ds.map_batches(
        sr.RatingPredictor,
        fn_constructor_kwargs={"model": model, "keep_columns": ["id"]},
        compute=ray.data.ActorPoolStrategy(size=4),
        num_gpus=1,                                      # or num_cpus=... on CPU nodes
        batch_format="pyarrow",
        batch_size=None,
    )

The predictor runs the same steps as ``scorer run`` (``scorer.scoring``: the checked model
directory, the tokenizer kernel, the same ``OnnxScorer`` and ``OutputSpec``), so a row gets
the same numbers either way. Ray's own ``read_parquet`` cannot tell a row its position in
the input, so ``read_reviews`` plans one read unit per Parquet row group from the footers
(on the driver) and reads the units with pyarrow in Ray tasks: any path, directory, glob or
URI pyarrow understands (``s3://``, ``gs://``, ``hdfs://``).
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scorer.errors import UserError
from scorer.model_dir import CONFIG, FINGERPRINT, VOCAB, ModelDir

ROW = "__scorer_row"  # a row's global input position, carried from the read to the output
LOSSY = "__scorer_lossy"  # whether the row held invalid UTF-8 (kept only when asked for)
PARQUET = (".parquet", ".pq")


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
    ) -> None:
        from scorer.output import OutputSpec
        from scorer.scoring import open_model

        if type(model).__name__ == "ObjectRef":
            import ray

            model = ray.get(model)
        path = model.materialize() if isinstance(model, ModelBundle) else Path(model)
        self.model = open_model(path, device, precision, threads, batch_size)
        self.text_columns = tuple(text_columns or self.model.card.text_columns)
        self.keep = tuple(keep_columns)
        self.chunk_rows = chunk_rows
        self.report_lossy = report_lossy
        self._spec: OutputSpec | None = None
        self._OutputSpec = OutputSpec

    @property
    def device(self) -> str:
        return self.model.scorer.device

    def __call__(self, batch: pa.Table) -> pa.Table:
        from scorer.scoring import Chunk, encode_chunk, infer_chunk

        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if self._spec is None:
            kept = pa.schema([_large(batch.schema.field(c)) for c in self.keep])
            self._spec = self._OutputSpec.create(kept, self.model.card, self.model.scorer)
        rows = batch.column(ROW).to_numpy() if ROW in batch.column_names else None
        outputs, lossy = [], []
        # Slices of chunk_rows bound the ids matrix however large a block is.
        for start in range(0, max(batch.num_rows, 1), self.chunk_rows):
            piece = batch.slice(start, self.chunk_rows)
            chunk = Chunk(0, piece, piece.num_rows)
            chunk = infer_chunk(
                encode_chunk(chunk, self.text_columns, self.keep, self.model), self.model
            )
            positions = rows[start : start + piece.num_rows] if rows is not None else None
            outputs.append(self._spec.table(chunk.table, chunk.probs, chunk.expected, positions))
            lossy.append(chunk.lossy_flags)
        table = pa.concat_tables(outputs)
        if self.report_lossy:
            table = table.append_column(LOSSY, pa.array(np.concatenate(lossy)))
        return table


def _large(field: pa.Field) -> pa.Field:
    kind = field.type
    if pa.types.is_string(kind) or pa.types.is_string_view(kind):
        return field.with_type(pa.large_string())
    return field


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A Parquet file on any pyarrow filesystem, with its footer facts."""

    uri: str
    path: str
    bytes: int
    mtime_ns: int
    rows: int
    row_groups: tuple[int, ...]

    def fingerprint(self) -> dict[str, object]:
        return {"path": self.uri, "bytes": self.bytes, "mtime_ns": self.mtime_ns}


def _filesystem(spec: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, URI prefix) for a local path or a URI."""
    if "://" in spec:
        try:
            fs, path = pafs.FileSystem.from_uri(spec)
        except (pa.ArrowException, ValueError) as exc:
            raise UserError(f"{spec}: {str(exc).splitlines()[0]}") from None
        return fs, path, spec[: spec.index("://") + 3]
    return pafs.LocalFileSystem(), os.path.abspath(spec), ""


def list_parquet(specs: Sequence[str]) -> tuple[pafs.FileSystem, list[RemoteFile]]:
    """The Parquet files of paths, directories, globs or URIs, in sorted order per spec, with
    their footers read (a corrupt footer is a one-line error, before anything runs)."""
    found: list[RemoteFile] = []
    filesystem: pafs.FileSystem | None = None
    for spec in specs:
        fs, path, scheme = _filesystem(str(spec))
        filesystem = filesystem or fs
        pattern = path if any(ch in path for ch in "*?[") else None
        base = path[: min(path.index(ch) for ch in "*?[" if ch in path)] if pattern else path
        info = fs.get_file_info(base.rsplit("/", 1)[0] if pattern else base)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"{spec}: no such file or directory")
        if pattern or info.type == pafs.FileType.Directory:
            root = base.rsplit("/", 1)[0] if pattern else base
            entries = fs.get_file_info(pafs.FileSelector(root, recursive=pattern is None))
            paths = sorted(
                e.path
                for e in entries
                if e.type == pafs.FileType.File
                and (fnmatch.fnmatch(e.path, pattern) if pattern else e.path.endswith(PARQUET))
            )
        else:
            paths = [path]
        if not paths:
            raise UserError(f"{spec}: no Parquet files")
        for item in paths:
            found.append(_footer(fs, item, scheme))
    assert filesystem is not None
    return filesystem, found


def _footer(fs: pafs.FileSystem, path: str, scheme: str) -> RemoteFile:
    info = fs.get_file_info(path)
    uri = f"{scheme}{path}" if scheme else path
    if not path.lower().endswith(PARQUET):
        raise UserError(f"{uri}: --engine ray reads Parquet files only")
    try:
        with fs.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {uri}: {str(exc).strip().splitlines()[0]}") from None
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return RemoteFile(uri, path, info.size or 0, mtime, metadata.num_rows, groups)


def file_schema(fs: pafs.FileSystem, file: RemoteFile) -> pa.Schema:
    with fs.open_input_file(file.path) as handle:
        return pq.ParquetFile(handle).schema_arrow


def read_units(files: Sequence[RemoteFile]) -> list[dict[str, object]]:
    """One unit per row group: which file, which group, and its first row's global position."""
    units, offset = [], 0
    for index, file in enumerate(files):
        for group, rows in enumerate(file.row_groups):
            if rows:
                units.append({"file": index, "group": group, "start": offset, "rows": rows})
            offset += rows
    return units


def read_unit_batch(
    units: pa.Table, fs: pafs.FileSystem, paths: Sequence[str], columns: Sequence[str]
) -> pa.Table:
    """Read units (a map_batches task): each row group's columns plus ``ROW``."""
    tables = []
    for unit in units.to_pylist():
        with fs.open_input_file(paths[unit["file"]]) as handle:
            table = pq.ParquetFile(handle).read_row_group(unit["group"], columns=list(columns))
        start = unit["start"]
        positions = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
        tables.append(table.append_column(ROW, positions))
    return pa.concat_tables(tables, promote_options="permissive")


def read_reviews(inputs: Sequence[str] | str, columns: Sequence[str], *, units=None):
    """A Ray Dataset of the inputs' ``columns`` plus ``ROW``, one block per row group
    (``units``: only these read units, e.g. those a resumed run still needs)."""
    import ray.data

    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    fs, files = list_parquet(specs)
    units = read_units(files) if units is None else units
    return ray.data.from_items(units, override_num_blocks=max(len(units), 1)).map_batches(
        read_unit_batch,
        fn_kwargs={"fs": fs, "paths": [f.path for f in files], "columns": list(columns)},
        batch_format="pyarrow",
        batch_size=None,
    )
