"""The one reader: every input is a polars lazy scan.

Parquet, CSV and NDJSON; a file, a folder (hive partitions included), a glob, or an
object-store URL (``s3://``, ``gs://``, ``az://``, ``https://``) with the credentials polars
finds in the usual places (environment, profile files, instance metadata). Training, the
vocabulary, ``scorer eval``, ``scorer run`` and the Ray engine all read through ``Source``,
so they see the same rows, types and text.

Text is decoded one way: polars decodes CSV lossily (an invalid byte sequence becomes
U+FFFD), and scoring counts the rows whose text holds U+FFFD. Parquet and JSON are UTF-8 by
their specifications; polars refuses a file that breaks this, and so does ``Source``, in one
line naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from scorer.errors import UserError
from scorer.io.files import file_sha256

PARQUET = (".parquet", ".pq")
CSV = (".csv",)
NDJSON = (".ndjson", ".jsonl")
SUFFIXES = {"parquet": PARQUET, "csv": CSV, "ndjson": NDJSON}
# Rows polars reads to infer a CSV or NDJSON column's type.
INFER_ROWS = 10_000
# When the model's text columns are absent, one of these (any case) is taken, if unambiguous.
COMMON_TEXT_NAMES = ("text", "review", "review_text", "body", "content")
ID_NAMES = ("id", "review_id", "reviewid")
_PATH_COLUMN = "__scorer_file"
# What polars raises for a file it cannot read (a panic is a BaseException, so named here).
_READ_ERRORS = (pl.exceptions.PolarsError, OSError, pl.exceptions.PanicException)


@dataclass(frozen=True)
class InputFile:
    """One file (or, for an object-store CSV or NDJSON input, the URL polars expands)."""

    location: str
    bytes: int | None = None
    mtime_ns: int | None = None
    rows: int | None = None

    @property
    def remote(self) -> bool:
        return is_url(self.location)

    @property
    def path(self) -> Path:
        return Path(self.location)

    def fingerprint(self) -> dict[str, object]:
        """What a resumed run checks: size and mtime locally; row count in an object store,
        where they are not known without another client."""
        if self.remote:
            return {"path": self.location, "rows": self.rows}
        return {"path": self.location, "bytes": self.bytes, "mtime_ns": self.mtime_ns}


def is_url(spec: str) -> bool:
    return "://" in spec


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


def arrow_schema(schema: pl.Schema) -> pa.Schema:
    """polars' schema as the Arrow types the batches arrive in (text as large_string)."""
    empty = pl.DataFrame(schema=schema)
    return empty.to_arrow(compat_level=pl.CompatLevel.oldest()).schema


@dataclass(frozen=True)
class Source:
    """One logical table over one or more files of one format; ``schema`` is the first
    file's (others are checked against it by ``check_columns``)."""

    spec: str
    kind: str
    files: tuple[InputFile, ...]
    schema: pa.Schema
    hive: bool = False

    def scan(
        self, files: Sequence[InputFile] | None = None, text: Sequence[str] = ()
    ) -> pl.LazyFrame:
        """A lazy scan of ``files`` (default: all), in order; CSV ``text`` columns are read
        as text whatever they look like. Files may differ in columns nobody reads (those are
        checked per file by ``check_columns``)."""
        chosen = list(files if files is not None else self.files)
        local = not chosen[0].remote
        if self.kind == "parquet":
            # Local names are literal (a "[" in a name is no pattern).
            target = [f.location for f in chosen]
            return pl.scan_parquet(
                target[0] if len(target) == 1 else target,
                hive_partitioning=self.hive or None,
                glob=not local,
                extra_columns="ignore",
                missing_columns="insert",
            )
        scans = [self._scan_text(f.location, text, glob=not local) for f in chosen]
        return scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal_relaxed")

    def _scan_text(self, location: str, text: Sequence[str], *, glob: bool) -> pl.LazyFrame:
        if self.kind == "csv":
            return pl.scan_csv(
                location,
                encoding="utf8-lossy",
                infer_schema_length=INFER_ROWS,
                schema_overrides=dict.fromkeys(text, pl.String) or None,
                glob=glob,
            )
        return pl.scan_ndjson(location, infer_schema_length=INFER_ROWS)

    def _select(self, lazy: pl.LazyFrame, columns: Sequence[str], text: Sequence[str]):
        """``columns``, the text ones (and kept text) as String, others as they are."""
        exprs = []
        for name in columns:
            kind = self.schema.field(name).type
            exprs.append(
                pl.col(name).cast(pl.String) if name in text or is_text_type(kind) else pl.col(name)
            )
        return lazy.select(exprs)

    def frame(self, columns: Sequence[str] | None = None, text: Sequence[str] = ()) -> pl.DataFrame:
        """The whole input (training and the vocabulary read it so); ``text`` columns are read
        as text, as ``batches`` reads them for scoring (a CSV's "007" stays "007")."""
        wanted = list(columns) if columns is not None else self.schema.names
        require_columns(self.schema.names, [*wanted, *text], self.describe())
        lazy = self._select(self.scan(text=text), wanted, text)
        return self._collect(lambda: lazy.collect())

    def batches(
        self,
        columns: Sequence[str],
        text_columns: Sequence[str],
        *,
        chunk_rows: int,
        skip_rows: int = 0,
    ) -> Iterator[pa.Table]:
        """Tables of ``chunk_rows`` rows (the last may be shorter) holding ``columns``, in
        input order, after the first ``skip_rows`` rows (Parquet skips whole row groups
        unread). Text columns, and kept columns holding text, come as ``large_string``."""
        lazy = self._select(self.scan(text=text_columns), columns, text_columns)
        if self.kind == "parquet":
            # One query per chunk, sliced at the footers: nothing is decoded ahead of what
            # scoring asks for (a streaming query decodes ahead and raises the peak RSS).
            total = self.count_rows() or 0
            for start in range(skip_rows, total, chunk_rows):
                frame = self._collect(lambda s=start: lazy.slice(s, chunk_rows).collect())
                yield frame.to_arrow(compat_level=pl.CompatLevel.oldest())
            return
        if skip_rows:
            lazy = lazy.slice(skip_rows)
        frames = self._collect(
            lambda: lazy.collect_batches(chunk_size=chunk_rows, maintain_order=True)
        )
        while True:
            frame = self._collect(lambda: next(frames, None))
            if frame is None:
                return
            yield frame.to_arrow(compat_level=pl.CompatLevel.oldest())

    def read_range(
        self, index: int, start: int, rows: int, columns: Sequence[str], text: Sequence[str]
    ) -> pa.Table:
        """Rows ``start .. start + rows`` of file ``index`` (a Ray read unit)."""
        lazy = self._select(self.scan([self.files[index]], text), columns, text)
        frame = self._collect(lambda: lazy.slice(start, rows).collect())
        return frame.to_arrow(compat_level=pl.CompatLevel.oldest())

    def file_rows(self) -> list[int]:
        """Each file's rows (Parquet: from the footers; otherwise by reading it)."""
        if all(f.rows is not None for f in self.files):
            return [int(f.rows) for f in self.files]  # type: ignore[arg-type]
        return [
            self._collect(lambda f=f: self.scan([f]).select(pl.len()).collect().item())
            for f in self.files
        ]

    def count_rows(self) -> int | None:
        """Rows in the input when cheap to know (Parquet footers), else None."""
        if self.kind != "parquet":
            return None
        return sum(self.file_rows())

    def file_schemas(self, text: Sequence[str] = ()) -> Iterator[tuple[str, pa.Schema]]:
        """Each file's schema as it is read (CSV ``text`` columns as text)."""
        for file in self.files:
            if file is self.files[0] and not (text and self.kind == "csv"):
                yield file.location, self.schema
                continue
            yield file.location, arrow_schema(self._collect(self.scan([file], text).collect_schema))

    def sha256(self) -> str:
        """What the input holds: one local file's sha256; for several files, the sha256 of
        each one's name and sha256 (an object store's: its fingerprint), in order."""
        if len(self.files) == 1 and not self.files[0].remote:
            return file_sha256(self.files[0].path)
        digest = hashlib.sha256()
        for file in self.files:
            if file.remote:
                part = json.dumps(file.fingerprint(), sort_keys=True)
            else:
                part = f"{file.path.name}\t{file_sha256(file.path)}"
            digest.update(part.encode("utf-8") + b"\n")
        return digest.hexdigest()

    def describe(self) -> str:
        if len(self.files) == 1:
            return self.files[0].location
        return f"{len(self.files)} {self.kind} files under {self.spec}"

    def _collect(self, read):
        try:
            return read()
        except _READ_ERRORS as exc:
            raise UserError(f"cannot read {self.describe()}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(location: str) -> str | None:
    lower = location.lower()
    for kind, suffixes in SUFFIXES.items():
        if lower.endswith(suffixes):
            return kind
    return None


def _local_files(spec: str) -> tuple[list[Path], bool]:
    """The files of a local path, folder (recursive: hive partitions) or glob, sorted; and
    whether the folder is hive-partitioned (``key=value`` folders)."""
    path = Path(spec)
    if path.is_dir():
        # Hidden and "_" entries at any depth are another tool's (Spark's _temporary/,
        # _SUCCESS; .ipynb_checkpoints/), never input rows.
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and _kind(p.name)
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not found:
            raise UserError(f"{path}: folder holds no Parquet, CSV or NDJSON files")
        hive = any("=" in part for p in found for part in p.relative_to(path).parts[:-1])
        return found, hive
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not found:
            raise UserError(f"{spec}: no file matches")
        return found, False
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return [path], False


def _remote_files(spec: str, kind: str) -> tuple[InputFile, ...]:
    """An object-store input's files as polars lists them, with their rows (Parquet, from
    the footers); CSV and NDJSON stay one URL that polars expands when reading."""
    if kind != "parquet":
        return (InputFile(spec),)
    try:
        listed = (
            pl.scan_parquet(spec, include_file_paths=_PATH_COLUMN)
            .group_by(_PATH_COLUMN, maintain_order=True)
            .len()
            .collect()
        )
    except _READ_ERRORS as exc:
        raise UserError(f"cannot read {spec}: {_first_line(exc)}") from None
    if not listed.height:
        raise UserError(f"{spec}: no Parquet files")
    return tuple(
        InputFile(location, rows=int(rows))
        for location, rows in zip(listed[_PATH_COLUMN], listed["len"], strict=True)
    )


def open_source(spec: str | Path) -> Source:
    """The input's files (sorted), format and schema, checked readable before any work."""
    spec = str(spec)
    if is_url(spec):
        kind = _kind(spec.rstrip("/")) or "parquet"  # a folder URL: Parquet, as polars reads
        files = _remote_files(spec, kind)
        hive = False
    else:
        paths, hive = _local_files(spec)
        kinds = {_kind(p.name) for p in paths}
        if None in kinds:
            bad = next(p for p in paths if _kind(p.name) is None)
            raise UserError(
                f"{bad}: unsupported input type {bad.suffix!r} (Parquet, CSV or NDJSON)"
            )
        if len(kinds) > 1:
            raise UserError(f"{spec}: mixes file types {sorted(kinds)}")  # type: ignore[type-var]
        kind = kinds.pop()  # type: ignore[assignment]
        files = tuple(_local_file(p, kind) for p in paths)
    probe = Source(spec, kind, files[:1], pa.schema([]), hive)
    schema = probe._collect(probe.scan().collect_schema)
    return Source(spec, kind, files, arrow_schema(schema), hive)


def _local_file(path: Path, kind: str) -> InputFile:
    stat = path.stat()
    rows = None
    if kind == "parquet":
        try:
            rows = pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()
        except _READ_ERRORS as exc:
            raise UserError(f"cannot read {path}: {_first_line(exc)}") from None
    return InputFile(str(path.resolve()), stat.st_size, stat.st_mtime_ns, rows)


def require_columns(available: Sequence[str], wanted: Sequence[str], source: Path | str) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise UserError(
            f"{source}: no column {_quoted(missing)}; columns are: {_quoted(available)}"
        )


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
    check_schemas(source.file_schemas(text_columns), text_columns, keep_columns)


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
        short = name0.rsplit("/", 1)[-1]
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
