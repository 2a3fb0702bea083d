"""Incremental scoring: keep an earlier output's scores for rows whose id and text are the
same, score only new and edited rows.

An output written with ``--id-col`` holds each row's id and ``text_hash``, the 64-bit hash of
the text the model read (``scorer.text.encode.row_hashes``), and names its model, text
columns and id column in its Parquet metadata. ``scorer run --since THAT --id-col ID``:

1. checks THAT was scored by this very graph (its sha256), from the same text columns and
   with the same id column, else refuses (``--rescore-all`` scores every row instead);
2. loads its ids and hashes as sorted 64-bit keys (integer ids as they are, text ids
   hashed; a text id is compared in full before its scores are used, so a collision with
   an earlier id only costs a rescore);
3. per input chunk, in order: hashes the text, looks each id up, and takes the earlier
   scores of rows whose hash is unchanged, reading the earlier output one row group at a
   time through a small cache (a table kept in the same order reads each group once).

With the fp32 graph a row's scores do not depend on the rows batched with it
(``OnnxScorer.score``), so the output equals a full run's: same rows, same order, same bytes.
The int8 graph's do (dynamic quantization), so it is refused here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scorer.errors import UserError
from scorer.io.source import Source, is_text_type
from scorer.runtime.output import (
    META_ID_COLUMN,
    META_TEXT_COLUMNS,
    TEXT_HASH,
    OutputSpec,
    prob_name,
)
from scorer.runtime.scoring import Chunk, Counts, text_hashes
from scorer.text.encode import TextColumns, row_hashes

CACHED_GROUPS = 4  # decoded row groups of the earlier output kept at least (a few MB each)
ID_BATCH = 1_000_000


def id_keys(column: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    """64-bit keys of an id column: integers as they are, text by its hash."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise UserError(f"--id-col {name}: {column.null_count:,} rows have no id (null)")
    kind = column.type
    if pa.types.is_integer(kind):
        return column.to_numpy().astype(np.int64).view(np.uint64)
    if _is_text_id(kind):
        if pa.types.is_string_view(kind):
            column = column.cast(pa.large_string())
        return row_hashes(TextColumns((column,)))
    raise UserError(f"--id-col {name}: ids must be integers or text, the column is {kind}")


def _is_text_id(kind: pa.DataType) -> bool:
    return is_text_type(kind) and not pa.types.is_null(kind)


def check_id_column(source: Source, name: str) -> None:
    if name not in source.schema.names:
        raise UserError(
            f"--id-col {name}: {source.describe()} has no such column "
            f"(columns: {', '.join(source.schema.names)})"
        )
    kind = source.schema.field(name).type
    if not (pa.types.is_integer(kind) or _is_text_id(kind)):
        raise UserError(f"--id-col {name}: ids must be integers or text, the column is {kind}")


def check_unique_ids(source: Source, name: str) -> None:
    """Refuse an input whose id column repeats a value. Ids that ascend through the input
    (the usual table) are checked as they stream by; others are sorted."""
    last: int | None = None
    for table in source.batches([name], (), chunk_rows=ID_BATCH):
        keys = id_keys(table.column(name), name)
        if not len(keys):
            continue
        if (last is not None and keys[0] <= last) or not bool(np.all(keys[1:] > keys[:-1])):
            break
        last = int(keys[-1])
    else:
        return
    ordered = np.sort(
        np.concatenate(
            [id_keys(t.column(name), name) for t in source.batches([name], (), chunk_rows=ID_BATCH)]
        )
    )
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated):
        raise UserError(
            f"--id-col {name}: ids are not unique in {source.describe()} "
            f"({_repeats(source, name, ordered[repeated])})"
        )


def _repeats(source: Source, name: str, keys: np.ndarray) -> str:
    """The repeated ids, for the message (text ids: found again by their keys)."""
    kind = source.schema.field(name).type
    if pa.types.is_integer(kind):
        shown = [str(int(k)) for k in np.unique(keys.view(np.int64))[:3]]
    else:
        wanted, shown = set(np.unique(keys).tolist()), []
        for table in source.batches([name], (), chunk_rows=ID_BATCH):
            column = table.column(name).combine_chunks()
            hits = np.isin(id_keys(column, name), list(wanted))
            shown += [repr(v) for v in column.filter(pa.array(hits)).to_pylist()]
            if len(set(shown)) >= 3:
                break
        shown = list(dict.fromkeys(shown))[:3]
    return f"repeated: {', '.join(shown)}"


class PreviousScores:
    """An earlier output's scores, found by id and text hash (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        spec: OutputSpec,
        text_columns: tuple[str, ...],
        id_column: str,
        *,
        cache_groups: int = CACHED_GROUPS,
    ) -> None:
        self.path = Path(path)
        self.id_column = id_column
        # At least one group per chunk in flight, so a table in order decodes each once.
        self._cache_groups = max(CACHED_GROUPS, cache_groups)
        try:
            self._file = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"--since {path}: cannot read it as Parquet: {exc}") from None
        self._check(spec, text_columns)
        meta = self._file.metadata
        self.rows = meta.num_rows
        self._starts = np.cumsum(
            [0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        )
        self._probs = [prob_name(v) for v in spec.labels]
        self._text_ids = not pa.types.is_integer(self._file.schema_arrow.field(id_column).type)
        self._cache: OrderedDict[int, dict[str, np.ndarray | pa.Array]] = OrderedDict()
        self._lock = threading.Lock()  # chunks are matched on several threads at once
        self._load_index()

    def _check(self, spec: OutputSpec, text_columns: tuple[str, ...]) -> None:
        schema = self._file.schema_arrow
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        what = f"--since {self.path}"
        rescore = "; pass --rescore-all to score every row"
        mine = {k.decode(): v.decode() for k, v in (spec.schema.metadata or {}).items()}
        if "scorer.model_sha256" not in meta:
            raise UserError(f"{what} is not a scorer output (no scorer metadata){rescore}")
        if meta.get(META_ID_COLUMN) != self.id_column or TEXT_HASH not in schema.names:
            raise UserError(
                f"{what} was not scored with --id-col {self.id_column} (it has no ids and text "
                f"hashes to match){rescore}"
            )
        if meta["scorer.model_sha256"] != mine["scorer.model_sha256"]:
            raise UserError(
                f"{what} was scored by another model ({meta.get('scorer.model_file')} "
                f"sha256 {meta['scorer.model_sha256'][:12]}, this run "
                f"{mine['scorer.model_file']} {mine['scorer.model_sha256'][:12]}){rescore}"
            )
        if json.loads(meta.get(META_TEXT_COLUMNS, "null") or "null") != list(text_columns):
            raise UserError(
                f"{what} was scored from other text columns "
                f"({meta.get(META_TEXT_COLUMNS)}, this run {json.dumps(list(text_columns))})"
                f"{rescore}"
            )
        earlier_int = pa.types.is_integer(schema.field(self.id_column).type)
        if earlier_int != pa.types.is_integer(spec.schema.field(self.id_column).type):
            kinds = ("integers", "text") if earlier_int else ("text", "integers")
            raise UserError(
                f"{what}: its {self.id_column} ids are {kinds[0]}, this input's are {kinds[1]} "
                f"(no id would match){rescore}"
            )
        missing = [p for p in (prob_name(v) for v in spec.labels) if p not in schema.names]
        if missing or "expected_rating" not in schema.names:
            raise UserError(f"{what} lacks the columns {missing or ['expected_rating']}{rescore}")

    def _load_index(self) -> None:
        """Where each earlier id sits. Ids that ascend through the file (the usual table):
        each row group's first and last id, and the group's ids read with its scores, so
        memory does not grow with the table. Otherwise every id as a sorted key and its
        position (12 bytes a row)."""
        meta = self._file.metadata
        nonempty = [g for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
        first = np.zeros(len(nonempty), np.uint64)
        last = np.zeros(len(nonempty), np.uint64)
        ascending, previous = not self._text_ids, None
        for i, group in enumerate(nonempty if ascending else []):
            keys = id_keys(self._file.read_row_group(group, [self.id_column]).column(0), "")
            if (previous is not None and keys[0] <= previous) or not bool(
                np.all(keys[1:] > keys[:-1])
            ):
                ascending = False
                break
            first[i], last[i], previous = keys[0], keys[-1], keys[-1]
        self._ranges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (
            (first, last, np.asarray(nonempty, dtype=np.int64)) if ascending else None
        )
        self._keys: np.ndarray | None = None
        self._order: np.ndarray | None = None
        if ascending:
            return
        keys = np.empty(self.rows, np.uint64)
        start = 0
        for batch in self._file.iter_batches(
            batch_size=ID_BATCH, columns=[self.id_column], use_threads=True
        ):
            end = start + batch.num_rows
            keys[start:end] = id_keys(batch.column(0), self.id_column)
            start = end
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if bool(np.any(keys[1:] == keys[:-1])):
            raise UserError(
                f"--since {self.path}: its {self.id_column} ids are not unique; "
                "pass --rescore-all to score every row"
            )
        self._keys = keys
        self._order = order.astype(np.uint32 if self.rows < 2**32 else np.int64)

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, position in the earlier file) of each key (call under the lock)."""
        found = np.zeros(len(keys), dtype=np.bool_)
        positions = np.zeros(len(keys), dtype=np.int64)
        if not self.rows or not len(keys):
            return found, positions
        if self._ranges is None:
            assert self._keys is not None and self._order is not None
            at = np.searchsorted(self._keys, keys)
            inside = at < self.rows
            found[inside] = self._keys[at[inside]] == keys[inside]
            positions[found] = self._order[at[found]]
            return found, positions
        first, last, numbers = self._ranges
        slots = np.searchsorted(first, keys, side="right") - 1
        inside = (slots >= 0) & (keys <= last[np.maximum(slots, 0)])
        for slot in np.unique(slots[inside]):
            rows = np.flatnonzero(inside & (slots == slot))
            group = int(numbers[slot])
            ids = self._group(group)["keys"]
            at = np.minimum(np.searchsorted(ids, keys[rows]), len(ids) - 1)
            hit = ids[at] == keys[rows]
            found[rows[hit]] = True
            positions[rows[hit]] = self._starts[group] + at[hit]
        return found, positions

    def match(self, chunk: Chunk, text_columns: tuple[str, ...]) -> Chunk:
        """The chunk with its text hashes, which rows keep earlier scores, and those scores."""
        hashes = text_hashes(chunk.table, text_columns)
        ids = chunk.table.column(self.id_column)
        keys = id_keys(ids, self.id_column)
        same = np.zeros(len(keys), dtype=np.bool_)
        probs = np.zeros((chunk.rows, len(self._probs)), dtype=np.float32)
        expected = np.zeros(chunk.rows, dtype=np.float32)
        with self._lock:
            found, positions = self._locate(keys)
            picked = np.flatnonzero(found)
            got = self._fetch(positions[picked]) if len(picked) else None
        if got is not None:
            keep = got["hash"] == hashes[picked]
            if self._text_ids:
                # Text ids' keys are hashes: an id equal in full, or it is a new row.
                mine = ids.combine_chunks().take(pa.array(picked)).cast(pa.large_string())
                equal = np.asarray(
                    pc.equal(mine, got["ids"]).fill_null(False).to_numpy(zero_copy_only=False),
                    dtype=np.bool_,
                )
                found[picked[~equal]] = False
                keep &= equal
            rows = picked[keep]
            same[rows] = True
            probs[rows], expected[rows] = got["probs"][keep], got["expected"][keep]
        counts = Counts(
            reused=int(same.sum()),
            edited=int((found & ~same).sum()),
            new=int((~found).sum()),
        )
        return replace(
            chunk, hashes=hashes, reused=same, probs=probs, expected=expected, counts=counts
        )

    def _fetch(self, positions: np.ndarray) -> dict[str, np.ndarray | pa.Array]:
        """probs, expected, hash (and text ids) of the earlier output's rows at
        ``positions``, in that order."""
        groups = np.searchsorted(self._starts, positions, side="right") - 1
        n = len(positions)
        got: dict = {
            "probs": np.empty((n, len(self._probs)), dtype=np.float32),
            "expected": np.empty(n, dtype=np.float32),
            "hash": np.empty(n, dtype=np.uint64),
        }
        ids: list[pa.Array] = []
        order: list[np.ndarray] = []
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            local = positions[rows] - self._starts[group]
            cached = self._group(int(group))
            for name in ("probs", "expected", "hash"):
                got[name][rows] = cached[name][local]
            if self._text_ids:
                ids.append(cached["ids"].take(pa.array(local)))
                order.append(rows)
        if self._text_ids:
            merged = pa.concat_arrays([a.cast(pa.large_string()) for a in ids])
            inverse = np.empty(n, dtype=np.int64)
            inverse[np.concatenate(order)] = np.arange(n)
            got["ids"] = merged.take(pa.array(inverse))
        return got

    def _group(self, group: int) -> dict:
        if group in self._cache:
            self._cache.move_to_end(group)
            return self._cache[group]
        columns = ["expected_rating", TEXT_HASH, *self._probs]
        if self._text_ids or self._ranges is not None:
            columns.append(self.id_column)
        table = self._file.read_row_group(group, columns=columns)
        entry: dict = {
            "expected": table.column("expected_rating").to_numpy(),
            "hash": table.column(TEXT_HASH).to_numpy(),
            "probs": np.stack([table.column(p).to_numpy() for p in self._probs], axis=1),
        }
        if self._text_ids:
            entry["ids"] = table.column(self.id_column).combine_chunks()
        elif self._ranges is not None:
            entry["keys"] = id_keys(table.column(self.id_column), self.id_column)
        self._cache[group] = entry
        if len(self._cache) > self._cache_groups:
            self._cache.popitem(last=False)
        return entry

    def close(self) -> None:
        self._cache.clear()
        self._file.close() if hasattr(self._file, "close") else None


def hash_chunk(chunk: Chunk, text_columns: tuple[str, ...]) -> Chunk:
    """A full run with an id column: every row is scored; the text hashes go to the output."""
    return replace(chunk, hashes=text_hashes(chunk.table, text_columns))


def fingerprint(path: Path) -> dict[str, object]:
    """What a resumed run checks the earlier output by."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
