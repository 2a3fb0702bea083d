"""Streaming input: Parquet (file, directory or glob), CSV, NDJSON, read in bounded chunks."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from scorer.data import require_columns, text_expr
from scorer.errors import UserError

PARQUET = (".parquet", ".pq")
CSV = (".csv",)
NDJSON = (".ndjson", ".jsonl")
INVALID_UTF8_MARK = "\ufffd"


@dataclass(frozen=True)
class InputFile:
    path: Path
    bytes: int
    mtime_ns: int

    def fingerprint(self) -> dict[str, object]:
        return {"path": str(self.path.resolve()), "bytes": self.bytes, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Source:
    """One logical table over one or more files of the same format."""

    files: tuple[InputFile, ...]
    kind: str
    schema: pl.Schema

    def _scan(self) -> pl.LazyFrame:
        paths = [str(f.path) for f in self.files]
        if self.kind == "parquet":
            return pl.scan_parquet(paths)
        if self.kind == "csv":
            # Invalid UTF-8 is replaced by U+FFFD (and counted) rather than failing the run.
            return pl.scan_csv(paths, encoding="utf8-lossy", infer_schema_length=10_000)
        return pl.scan_ndjson(paths, infer_schema_length=10_000)

    def batches(
        self,
        text_columns: Sequence[str],
        keep_columns: Sequence[str],
        *,
        chunk_rows: int,
        skip_rows: int = 0,
    ) -> Iterator[pl.DataFrame]:
        """Frames of at most ``chunk_rows`` rows: the kept columns and ``text``, in order."""
        select = [*keep_columns, text_expr(text_columns, self.schema)]
        try:
            if self.kind == "parquet":
                yield from self._parquet_batches(select, chunk_rows, skip_rows)
                return
            frame = self._scan().select(*select)
            if skip_rows:
                frame = frame.slice(skip_rows)
            for batch in frame.collect_batches(chunk_size=chunk_rows):
                yield from _split(batch, chunk_rows)
        except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read {self.describe()}: {_first_line(exc)}") from None

    def _parquet_batches(
        self, select: list, chunk_rows: int, skip_rows: int
    ) -> Iterator[pl.DataFrame]:
        """Row group by row group with pyarrow: memory stays bounded whatever the file size."""
        needed = _referenced(select, self.schema)
        columns = [name for name in self.schema.names() if name in needed]
        for file in self.files:
            # pre_buffer keeps every coalesced read of the file alive until the file is closed,
            # so memory grew with the input; without it, it stays flat.
            parquet = pq.ParquetFile(file.path, pre_buffer=False)
            rows = parquet.metadata.num_rows
            if skip_rows >= rows:
                skip_rows -= rows
                continue
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                if skip_rows:
                    take = min(skip_rows, len(frame))
                    frame, skip_rows = frame.slice(take), skip_rows - take
                if len(frame):
                    yield frame.select(select)

    def count_rows(self) -> int:
        """Rows in the input (Parquet: from footers; CSV and NDJSON: one streaming pass)."""
        try:
            return int(self._scan().select(pl.len()).collect(engine="streaming").item())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UserError(f"cannot read {self.describe()}: {_first_line(exc)}") from None

    def describe(self) -> str:
        if len(self.files) == 1:
            return str(self.files[0].path)
        return f"{len(self.files)} {self.kind} files under {self.files[0].path.parent}"


def _referenced(select: list, schema: pl.Schema) -> set[str]:
    """Input columns the selection reads (text columns and kept columns)."""
    names: set[str] = set()
    for expr in select:
        if isinstance(expr, str):
            names.add(expr)
        else:
            names |= set(expr.meta.root_names())
    return names & set(schema.names())


def _split(batch: pl.DataFrame, rows: int) -> Iterator[pl.DataFrame]:
    for start in range(0, len(batch), rows):
        yield batch.slice(start, rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    for kind, suffixes in (("parquet", PARQUET), ("csv", CSV), ("ndjson", NDJSON)):
        if suffix in suffixes:
            return kind
    raise UserError(f"{path}: unsupported input type {suffix!r} (Parquet, CSV or NDJSON)")


def _expand(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in PARQUET)
        if not found:
            raise UserError(f"{path}: directory holds no Parquet files")
        return found
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not found:
            raise UserError(f"{spec}: no file matches")
        return found
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return [path]


def open_source(spec: str | Path) -> Source:
    paths = _expand(str(spec))
    kinds = {_kind(p) for p in paths}
    if len(kinds) > 1:
        raise UserError(f"{spec}: mixes file types {sorted(kinds)}")
    kind = kinds.pop()
    files = tuple(InputFile(p, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    source = Source(files, kind, pl.Schema())
    try:
        schema = source._scan().collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"cannot read {source.describe()}: {_first_line(exc)}") from None
    return Source(files, kind, schema)


def check_columns(source: Source, text_columns: Sequence[str], keep_columns: Sequence[str]):
    require_columns(list(source.schema), [*text_columns, *keep_columns], source.describe())
    text_expr(text_columns, source.schema)  # refuses non-text types with one line


def default_keep_columns(schema: pl.Schema) -> list[str]:
    """An id column is kept by default when the input has one."""
    return [name for name in schema if name.lower() in ("id", "review_id", "reviewid")]
