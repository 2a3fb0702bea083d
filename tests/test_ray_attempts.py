"""What the Ray engine's manifest says was retried, from the attempts each task recorded
(no Ray needed: the records are files)."""

from __future__ import annotations

import pytest

from scorer.engines.ray import attempts


@pytest.mark.parametrize(
    ("made", "restarts", "expected"),
    [
        ([], 0, {"read": 0, "score": 0, "write": 0, "units": 0}),
        ([("read", 0), ("score", 0), ("write", 0)], 0, {"read": 0, "score": 0, "units": 0}),
        # a lost actor: unit 500's batch scored twice, the restarted actor counted once
        ([("score", 0), ("score", 500), ("score", 500)], 1, {"score": 1, "units": 1}),
        # a lost node: two units read again (their blocks were lost), one three times
        (
            [("read", 0), ("read", 0), ("read", 7), ("read", 7), ("read", 7)],
            0,
            {"read": 3, "units": 2},
        ),
        (
            [("read", 0), ("read", 0), ("write", 0), ("write", 0)],
            2,
            {"read": 1, "write": 1, "units": 1},
        ),
    ],
)
def test_retries_are_attempts_beyond_each_units_first(tmp_path, made, restarts, expected):
    for stage, first_row in made:
        attempts.record(tmp_path, stage, first_row)
    for _ in range(restarts):
        attempts.record_restart(tmp_path)
    got = attempts.tally(tmp_path)
    assert got == {
        **{f"{stage}_retries": expected.get(stage, 0) for stage in attempts.STAGES},
        "units_retried": expected.get("units", 0),
        "actor_restarts": restarts,
    }
    attempts.clear(tmp_path)
    assert not (tmp_path / attempts.ATTEMPTS).exists()
    assert set(attempts.tally(tmp_path).values()) == {0}


def test_nothing_is_recorded_without_a_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    attempts.record(None, "read", 0)
    attempts.record_restart(None)
    assert list(tmp_path.iterdir()) == []


def test_half_written_parts_are_removed_and_whole_ones_kept(tmp_path) -> None:
    whole = tmp_path / "part-000000000000-000000000500.parquet"
    whole.write_bytes(b"PAR1")
    for name in (".part-000000000500-000000001000.parquet.1a2b3c.tmp", ".part-x.parquet.9.tmp"):
        (tmp_path / name).write_bytes(b"PAR")
    (tmp_path / "state.json").write_text("{}")
    assert attempts.remove_half_written(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [whole.name, "state.json"]
