"""Streaming input: Parquet (file, directory or glob), CSV, NDJSON, as Arrow record batches.

Text bytes are passed through unvalidated (pyarrow's CSV reader with ``check_utf8=False``;
its Parquet and NDJSON readers do not validate), so invalid UTF-8 reaches the tokenizer
kernel, which reads it exactly as a lossy decode would and flags the row.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from scorer.errors import UserError

PARQUET = (".parquet", ".pq")
CSV = (".csv",)
NDJSON = (".ndjson", ".jsonl")
# Read blocks for CSV and NDJSON: large enough to amortize, small enough to stay flat.
BLOCK_BYTES = 16 << 20
# When the model's text columns are absent, one of these (any case) is taken, if unambiguous.
COMMON_TEXT_NAMES = ("text", "review", "review_text", "body", "content")
ID_NAMES = ("id", "review_id", "reviewid")


@dataclass(frozen=True)
class InputFile:
    path: Path
    bytes: int
    mtime_ns: int

    def fingerprint(self) -> dict[str, object]:
        return {"path": str(self.path.resolve()), "bytes": self.bytes, "mtime_ns": self.mtime_ns}

    def changed(self) -> bool:
        """Whether the file on disk differs (size or mtime) from when it was opened."""
        try:
            stat = self.path.stat()
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != (self.bytes, self.mtime_ns)


def is_text_type(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


def _castable_to_text(kind: pa.DataType) -> bool:
    """Types whose string form loses nothing (numbers, booleans, dates, dictionary text)."""
    if pa.types.is_dictionary(kind):
        return is_text_type(kind.value_type)
    return (
        is_text_type(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_decimal(kind)
    )


@dataclass(frozen=True)
class Source:
    """One logical table over one or more files of the same format and schema."""

    files: tuple[InputFile, ...]
    kind: str
    schema: pa.Schema

    def batches(
        self,
        columns: Sequence[str],
        text_columns: Sequence[str],
        *,
        chunk_rows: int,
        skip_rows: int = 0,
    ) -> Iterator[pa.Table]:
        """Tables of exactly ``chunk_rows`` rows (the last may be shorter) holding
        ``columns``, in input order, after the first ``skip_rows`` rows. Text columns, and
        kept columns holding text, come as ``large_string``; others as in the first file."""
        target = pa.schema(
            [
                pa.field(name, pa.large_string())
                if name in text_columns or is_text_type(self.schema.field(name).type)
                else self.schema.field(name)
                for name in columns
            ]
        )
        try:
            raw = self._raw_batches(list(columns), skip_rows)
            yield from _rechunk((_conform(b, target) for b in raw), chunk_rows)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read {self.describe()}: {_first_line(exc)}") from None

    def _raw_batches(self, columns: list[str], skip: int) -> Iterator[pa.RecordBatch]:
        for file in self.files:
            if self.kind == "parquet":
                reader = pq.ParquetFile(file.path, pre_buffer=False)
                # Whole row groups before the resume point are never read.
                groups, skip = _groups_after(reader.metadata, skip)
                if not groups:
                    continue
                batches = reader.iter_batches(batch_size=65_536, row_groups=groups, columns=columns)
            else:
                batches = iter(_open_text_file(self.kind, file.path, columns))
            for batch in batches:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                yield batch.select(columns)

    def count_rows(self) -> int | None:
        """Rows in the input when cheap to know (Parquet footers), else None."""
        if self.kind != "parquet":
            return None
        try:
            return sum(pq.ParquetFile(f.path).metadata.num_rows for f in self.files)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read {self.describe()}: {_first_line(exc)}") from None

    def describe(self) -> str:
        if len(self.files) == 1:
            return str(self.files[0].path)
        return f"{len(self.files)} {self.kind} files under {self.files[0].path.parent}"


def _groups_after(metadata, skip: int) -> tuple[list[int], int]:
    """Row groups from the one holding row ``skip`` on, and the rows left to skip in it."""
    groups = []
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if not groups and skip >= rows:
            skip -= rows
            continue
        groups.append(index)
    return groups, skip


def _open_text_file(kind: str, path: Path, columns: list[str] | None):
    if kind == "csv":
        return pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns,
                check_utf8=False,
                strings_can_be_null=True,
            ),
        )
    return pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES))


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """One schema for every file's batches (e.g. string and large_string alike)."""
    if batch.schema.equals(schema):
        return batch
    return pa.RecordBatch.from_arrays(
        [column.cast(field.type) for column, field in zip(batch.columns, schema, strict=True)],
        schema=schema,
    )


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


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


def file_schema(kind: str, path: Path) -> pa.Schema:
    try:
        if kind == "parquet":
            return pq.read_schema(path)
        return _open_text_file(kind, path, None).schema
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {path}: {_first_line(exc)}") from None


def open_source(spec: str | Path) -> Source:
    """The input's files (sorted), format and schema (the first file's; others are checked
    against it by ``check_columns``)."""
    paths = _expand(str(spec))
    kinds = {_kind(p) for p in paths}
    if len(kinds) > 1:
        raise UserError(f"{spec}: mixes file types {sorted(kinds)}")
    kind = kinds.pop()
    files = tuple(InputFile(p, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return Source(files, kind, file_schema(kind, files[0].path))


def resolve_text_columns(
    schema: pa.Schema, wanted: Sequence[str], *, explicit: bool
) -> tuple[tuple[str, ...], str | None]:
    """The text columns to read, and a note when they differ from ``wanted``.

    When none of the model's text columns is in the input (and they were not given with
    ``--text-col``), one unambiguous common name is used instead.
    """
    names = schema.names
    present = [c for c in wanted if c in names]
    if len(present) == len(wanted):
        return tuple(wanted), None
    strings = [f.name for f in schema if is_text_type(f.type)]
    if not present and not explicit:
        common = [n for n in strings if n.lower() in COMMON_TEXT_NAMES]
        if len(common) == 1:
            note = (
                f"the model's text columns {_quoted(wanted)} are not in the input; "
                f"scoring column {common[0]!r} (choose with --text-col)"
            )
            return (common[0],), note
    missing = [c for c in wanted if c not in names]
    choices = " ".join(f"--text-col {_shell(n)}" for n in strings[:2]) or "--text-col NAME"
    raise UserError(
        f"no column {_quoted(missing)} in the input; its string columns are "
        f"{_quoted(strings) or 'none'}: pass the review text with e.g. {choices}"
    )


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _shell(name: str) -> str:
    return name if name.replace("_", "").isalnum() else repr(name)


def check_columns(source: Source, text_columns: Sequence[str], keep_columns: Sequence[str]):
    """Every file has the text columns (as text) and the kept columns with one type each;
    the first file that does not is named, before anything is written."""

    def schemas():
        yield str(source.files[0].path), source.schema
        for file in source.files[1:]:
            yield str(file.path), file_schema(source.kind, file.path)

    check_schemas(schemas(), text_columns, keep_columns)


def check_schemas(
    schemas: Iterable[tuple[str, pa.Schema]],
    text_columns: Sequence[str],
    keep_columns: Sequence[str],
) -> None:
    """``check_columns`` over (file name, schema) pairs, the first one setting the types."""
    first: tuple[str, pa.Schema] | None = None
    for where, schema in schemas:
        missing = [c for c in [*text_columns, *keep_columns] if c not in schema.names]
        if missing:
            raise UserError(
                f"{where}: no column {_quoted(missing)}; columns are: {_quoted(schema.names)}"
            )
        if first is None:
            first = (where, schema)
        name0, schema0 = first
        short = Path(name0).name
        for name in text_columns:
            kind = schema.field(name).type
            if not _castable_to_text(kind):
                raise UserError(f"{where}: text column {name!r} has type {kind}, not text")
            want = schema0.field(name).type
            if _family(kind) != _family(want):
                raise UserError(
                    f"{where}: text column {name!r} has type {kind}, but {short} has {want}"
                )
        for name in keep_columns:
            kind, want = schema.field(name).type, schema0.field(name).type
            if kind != want and not (_family(kind) == _family(want) == "text"):
                raise UserError(f"{where}: column {name!r} has type {kind}, but {short} has {want}")


def _family(kind: pa.DataType) -> str:
    return "text" if is_text_type(kind) else str(kind)


def default_keep_columns(schema: pa.Schema) -> list[str]:
    """An id column is kept by default when the input has one."""
    return [name for name in schema.names if name.lower() in ID_NAMES]
