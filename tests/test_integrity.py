"""A model directory is checked at load: every graph must be the one config.json vouches for."""

from __future__ import annotations

import json

import onnx
import pytest

from scorer.cli import INTERNAL, main
from scorer.export.onnx_export import export_model
from scorer.io.files import file_sha256
from scorer.runtime.contract import META_CARD, META_FORMAT_VERSION
from scorer.runtime.model_dir import ModelDir
from scorer.runtime.onnx_file import read_facts
from tests.helpers import make_model_dir, write_reviews


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("data") / "r.parquet", n=50)


@pytest.fixture
def model(tmp_path):
    directory = make_model_dir(tmp_path / "m", variant="packed")
    export_model(directory.path)
    return directory.path


def _run(model, reviews, tmp_path) -> int:
    out = tmp_path / "o.parquet"
    # The CPU graph is the one tampered with; --device cpu loads it on a CUDA host too.
    argv = ["run", str(reviews), "--model", str(model), "--out", str(out), "--quiet"]
    return main([*argv, "--device", "cpu"])


def _edit_metadata(path, edit) -> None:
    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    edit(meta)
    del graph.metadata_props[:]
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _vouch(model, name: str = "model.onnx") -> None:
    """Record the file's new sha256, as if config.json had been edited to match it."""
    ModelDir.open(model).record_graphs({name: {"sha256": file_sha256(model / name)}})


def _card_edit(key, value):
    def edit(meta):
        card = json.loads(meta[META_CARD])
        card["tokenizer" if key != "labels" else "labels"] = (
            {**card["tokenizer"], key: value} if key != "labels" else value
        )
        meta[META_CARD] = json.dumps(card)

    return edit


def test_export_records_every_graph_in_config_json(model) -> None:
    graphs = json.loads((model / "config.json").read_text())["graphs"]
    assert set(graphs) == {"model.onnx", "model.cuda.onnx"}
    for name, entry in graphs.items():
        assert entry["sha256"] == file_sha256(model / name)
    assert graphs["model.onnx"]["device"] == "cpu" and graphs["model.cuda.onnx"]["graph"] == "fused"
    # The card inside a graph never holds graph hashes (a file cannot hold its own hash).
    assert "graphs" not in json.loads(read_facts(model / "model.onnx").metadata[META_CARD])


def _append_byte(model) -> None:
    path = model / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")


def _vouched(edit):
    def tamper(model) -> None:
        _edit_metadata(model / "model.onnx", edit)
        _vouch(model)

    return tamper


def _old_format(meta) -> None:
    meta[META_FORMAT_VERSION] = "1"


def _external_vouched(model) -> None:
    _external(model)
    _vouch(model)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_append_byte, "does not match the sha256 in config.json"),
        (_vouched(_card_edit("max_len", 7)), "its model card says max_len 7"),
        (_vouched(_card_edit("keep_whitespace", False)), "keep_whitespace False"),
        (_vouched(_card_edit("marks", "!")), "its model card says marks '!'"),
        (_vouched(_card_edit("labels", [1, 2, 3, 4, 6])), "its model card says labels"),
        (_vouched(_old_format), "has format_version '1'"),
        (_external_vouched, "refers to external data files"),
        (lambda m: _unrecord(m), "is not recorded in"),
    ],
)
def test_a_graph_config_json_does_not_vouch_for_is_refused(
    model, reviews, tmp_path, capsys, tamper, message
):
    tamper(model)
    assert _run(model, reviews, tmp_path) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o.parquet").exists()


def _external(model) -> None:
    graph = onnx.load(str(model / "model.onnx"))
    onnx.save_model(
        graph,
        str(model / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


def _unrecord(model) -> None:
    config = json.loads((model / "config.json").read_text())
    del config["graphs"]["model.onnx"]
    (model / "config.json").write_text(json.dumps(config))


def test_malformed_metadata_in_a_vouched_graph_is_an_internal_error(
    model, reviews, tmp_path, capsys
):
    _edit_metadata(model / "model.onnx", lambda d: d.update({META_CARD: "{not json"}))
    _vouch(model)
    assert _run(model, reviews, tmp_path) == INTERNAL
    assert "Traceback" in capsys.readouterr().err
