"""The output table: schema, per-chunk part files, and the final assembled Parquet file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scorer import __version__
from scorer.errors import UserError
from scorer.io.files import atomic_path
from scorer.runtime.config import ModelCard

ROW_GROUP = 131_072
_PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet$")
LOSSY_KEY = b"scorer.lossy_rows"


RESERVED = ("row", "predicted_rating", "expected_rating")
# Written with --id-col: the 64-bit hash of each row's joined text
# (scorer.text.encode.row_hashes), which lets a later run (--since) keep unchanged rows' scores.
TEXT_HASH = "text_hash"
META_TEXT_COLUMNS = "scorer.text_columns"
META_ID_COLUMN = "scorer.id_column"


@dataclass(frozen=True)
class OutputSpec:
    """The output schema: kept input columns, then ``row``, the prediction and the
    probabilities (and, with an id column, ``text_hash``), with the model's sha256, its card
    and the text columns in the Parquet metadata."""

    keep_columns: tuple[str, ...]
    labels: tuple[float, ...]
    schema: pa.Schema
    id_column: str | None = None

    @classmethod
    def create(
        cls,
        kept: pa.Schema,
        card: ModelCard,
        scorer,
        *,
        text_columns: tuple[str, ...] = (),
        id_column: str | None = None,
    ) -> OutputSpec:
        labels = tuple(card.labels)
        names = [*RESERVED, *(prob_name(v) for v in labels)]
        if id_column is not None:
            names.append(TEXT_HASH)
        clash = [c for c in kept.names if c in names]
        if clash:
            raise UserError(
                f"kept column {clash[0]!r} has the name of an output column ({', '.join(names)}); "
                "rename it in the input or leave it out with --keep-col"
            )
        integral = all(float(v).is_integer() for v in labels)
        fields = [
            *kept,
            pa.field("row", pa.int64()),
            pa.field("predicted_rating", pa.int64() if integral else pa.float64()),
            pa.field("expected_rating", pa.float32()),
            *(pa.field(prob_name(v), pa.float32()) for v in labels),
        ]
        if id_column is not None:
            fields.append(pa.field(TEXT_HASH, pa.uint64()))
        metadata = {
            "scorer.version": __version__,
            "scorer.model_file": scorer.path.name,
            "scorer.model_sha256": scorer.sha256,
            "scorer.model_precision": scorer.precision,
            "scorer.model_card": card.embedded_json(),
            META_TEXT_COLUMNS: json.dumps(list(text_columns)),
        }
        if id_column is not None:
            metadata[META_ID_COLUMN] = id_column
        schema = pa.schema(fields, metadata={k: v.encode() for k, v in metadata.items()})
        return cls(tuple(kept.names), labels, schema, id_column)

    def table(
        self,
        kept: pa.Table,
        probs: np.ndarray,
        expected: np.ndarray,
        rows: int | np.ndarray | None,
        hashes: np.ndarray | None = None,
    ) -> pa.Table:
        """The output rows of a chunk: ``rows`` is the first row's input position (rows are
        consecutive), each row's position, or None where positions are unknown (null);
        ``hashes``, the rows' text hashes, with an id column."""
        values = np.asarray(self.labels)
        predicted = values[probs.argmax(axis=1)] if len(probs) else values[:0]
        n = len(probs)
        columns = [kept.column(c) for c in self.keep_columns]
        integral = pa.types.is_integer(self.schema.field("predicted_rating").type)
        if rows is None:
            positions = pa.nulls(n, pa.int64())
        elif isinstance(rows, int | np.integer):
            positions = pa.array(np.arange(rows, rows + n, dtype=np.int64))
        else:
            positions = pa.array(np.asarray(rows, dtype=np.int64))
        columns += [
            positions,
            pa.array(predicted.astype(np.int64) if integral else predicted),
            pa.array(expected.astype(np.float32)),
            *(pa.array(probs[:, k].astype(np.float32)) for k in range(len(self.labels))),
        ]
        if self.id_column is not None:
            assert hashes is not None, "an output with an id column needs the text hashes"
            columns.append(pa.array(np.asarray(hashes, dtype=np.uint64)))
        return pa.Table.from_arrays(columns, schema=self.schema)


def prob_name(label: float) -> str:
    return f"prob_{label:g}"


def part_name(start: int, rows: int) -> str:
    return f"part-{start:012d}-{start + rows:012d}.parquet"


@dataclass(frozen=True, order=True)
class Part:
    start: int
    end: int
    path: Path


def read_parts(directory: Path) -> list[Part]:
    """Finished parts, checked to cover rows 0..end without a gap (for assembling)."""
    parts = _listed(directory)
    expected = 0
    for part in parts:
        if part.start != expected:
            raise PartsError(f"{directory}: part files have a gap at row {expected}")
        expected = part.end
    return parts


class PartsError(Exception):
    """Parts that should be complete are not: an internal error, kept for --resume."""


def _listed(directory: Path) -> list[Part]:
    return sorted(
        Part(int(m.group(1)), int(m.group(2)), p)
        for p in directory.iterdir()
        if (m := _PART.match(p.name))
    )


def trusted_parts(directory: Path) -> tuple[list[Part], list[Path]]:
    """The longest run of parts from row 0 that are whole (a readable footer and the rows
    their name promises), and the files after it, which a resumed run rewrites: a crash can
    leave a renamed part truncated or empty, or parts written out of order with a gap."""
    trusted: list[Part] = []
    parts = _listed(directory)
    expected = 0
    for index, part in enumerate(parts):
        if part.start != expected or not _whole(part):
            return trusted, [p.path for p in parts[index:]]
        trusted.append(part)
        expected = part.end
    return trusted, []


def _whole(part: Part) -> bool:
    try:
        return pq.ParquetFile(part.path).metadata.num_rows == part.end - part.start
    except (pa.ArrowException, OSError):
        return False


def write_part(path: Path, table: pa.Table, *, lossy_rows: int = 0, interim: bool = False) -> None:
    """One chunk's rows, written under a temporary name, fsynced, then renamed. An
    ``interim`` part (the local engine's, read once by ``assemble``) is written with lz4 and
    no dictionaries, about 4x faster than zstd; the final bytes do not depend on it."""
    meta = dict(table.schema.metadata or {})
    meta[LOSSY_KEY] = str(lossy_rows).encode()
    options = (
        {"compression": "lz4", "use_dictionary": False} if interim else {"compression": "zstd"}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, **options)


def assemble(directory: Path, out: Path, spec: OutputSpec) -> tuple[int, int]:
    """Concatenate the parts into ``out`` with fixed-size row groups; (rows, lossy rows)."""
    rows = lossy = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    with (
        atomic_path(out) as tmp,
        pq.ParquetWriter(tmp, spec.schema, compression="zstd") as writer,
    ):
        for part in read_parts(directory):
            file = pq.ParquetFile(part.path)
            lossy += int((file.schema_arrow.metadata or {}).get(LOSSY_KEY, b"0"))
            table = file.read().replace_schema_metadata(spec.schema.metadata)
            pending.append(table)
            pending_rows += table.num_rows
            while pending_rows >= ROW_GROUP:
                merged = pa.concat_tables(pending)
                writer.write_table(merged.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                pending = [merged.slice(ROW_GROUP)]
                pending_rows -= ROW_GROUP
                rows += ROW_GROUP
        if pending_rows:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
            rows += pending_rows
        if rows == 0:
            writer.write_table(spec.schema.empty_table())
    return rows, lossy
