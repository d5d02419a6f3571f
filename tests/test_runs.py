"""Run-folder I/O: atomic writes and strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamrec.runs import read_embeddings, write_embeddings, write_json


def test_metrics_json_is_strict_json_even_without_scorable_queries(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"test": {"map": float("nan"), "p@10": np.float32(0.5), "n": np.int64(3)}})
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert loaded == {"test": {"map": None, "p@10": 0.5, "n": 3}}


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_embeddings_and_items_round_trip_in_order(tmp_path):
    emb = np.arange(6, dtype=np.float64).reshape(3, 2)
    write_embeddings(tmp_path, emb, ["a", "b", "c"], ["/x/a.wav", None, "/x/c.wav"], [("rock",), ("pop", "indie"), ()],
                     ["train", "test", ""])
    back, items = read_embeddings(tmp_path)
    assert back.dtype == np.float32 and np.array_equal(back, emb)
    assert [(i["key"], i["path"], i["labels"], i["split"]) for i in items] == [
        ("a", "/x/a.wav", "rock", "train"), ("b", "", "pop|indie", "test"), ("c", "/x/c.wav", "", "")]
