"""The students' map: names to recipe changes, which students share a graph (and so a speed),
which one a graph draws, and the Pareto front."""

from __future__ import annotations

import pytest

from benchmarks.students import KD, changes_of, drawn, graph_of, pareto


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("h32", {"hidden_dim": 32}),
        ("h48@e12", {"hidden_dim": 48, "epochs": 12}),
        ("h64+kd", {"hidden_dim": 64, **KD}),
        (
            "h32+kd@t4w8e12",
            {"hidden_dim": 32, "distill_weight": 0.8, "distill_temperature": 4.0, "epochs": 12},
        ),
        (
            "h32-no-blend+kd@t4w8e12",
            {
                "hidden_dim": 32,
                "blend": False,
                "distill_weight": 0.8,
                "distill_temperature": 4.0,
                "epochs": 12,
            },
        ),
    ],
)
def test_a_students_name_gives_its_changes(name: str, changes: dict) -> None:
    assert changes_of(name) == changes


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("h32", "h32+kd@t4w8e12", True),  # a teacher and epochs change the weights only
        ("h32@e12", "h32+kd", True),
        ("h128", "h128-e12", True),
        ("h32", "h48", False),
        ("h32", "h32-no-blend", False),
        ("h32-len60", "h32-len80", False),
        ("h32", "h32-e50", False),
    ],
)
def test_students_share_a_graph_only_when_its_settings_match(a: str, b: str, same: bool) -> None:
    assert (graph_of(a) == graph_of(b)) is same


def _record(name: str, loss: float | None, lstm_loss: float, seed: int = 0) -> dict:
    return {"name": name, "seed": seed, "val_loss": loss, "val_loss_lstm": lstm_loss}


def test_each_graph_draws_its_lowest_validation_loss_with_and_without_a_teacher() -> None:
    records = [
        _record("h32", 1.19, 1.2),
        _record("h32@e12", 1.16, 1.2),
        _record("h32+kd", 1.16, 1.2),
        _record("h32+kd@t4w8e12", 1.13, 1.2),
        _record("h32+kd@t4w8e16", 1.0, 1.2, seed=1),  # another seed is not drawn
        _record("h32-no-blend+kd@t4w8e12", None, 1.135),  # no blend: its model's loss
        _record("h48+kd", 1.14, 1.2),
    ]
    assert [r["name"] for r in drawn(records)] == [
        "h32+kd@t4w8e12",
        "h32-no-blend+kd@t4w8e12",
        "h32@e12",
        "h48+kd",
    ]


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ({"a": (1.0, 0.6), "b": (2.0, 0.5), "c": (0.5, 0.5)}, ["b", "a"]),
        ({"a": (1.0, 0.6), "b": (2.0, 0.7)}, ["b"]),
        ({"a": (1.0, 0.6), "b": (1.0, 0.6)}, ["a", "b"]),  # ties both stay
        ({"a": (1.0, 0.6), "b": (1.0, 0.5)}, ["a"]),
        ({"a": (3.0, 0.1), "b": (2.0, 0.2), "c": (1.0, 0.3)}, ["a", "b", "c"]),
    ],
)
def test_the_pareto_front_keeps_what_nothing_beats_on_both(points: dict, front: list) -> None:
    assert pareto(points) == front


def test_a_student_takes_the_speed_of_another_with_its_graph() -> None:
    from benchmarks.students import speed_of

    speeds = {"h32+kd/fp32": {"rate": 1}, "h32+kd/int8": {"rate": 2}, "bundled/fp32": {}}
    assert speed_of("h32@e12", "fp32", speeds) == {"rate": 1}
    assert speed_of("h32", "int8", speeds) == {"rate": 2}
    assert speed_of("h48", "fp32", speeds) is None  # another graph; "bundled" is no student
    assert speed_of("h32-no-blend", "fp32", speeds) is None
