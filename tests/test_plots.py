"""Pictures of a run: training curves without empty panels and with the chosen epoch marked, t-SNE telling
training from test songs and naming the run, the MAP@k curve stopping at the largest meaningful k."""

from __future__ import annotations

import numpy as np
import pytest

from siamrec import plots, report


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions save (still open), by file name."""
    saved = {}

    def keep(fig, path):
        saved[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plt = plots._pyplot()
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    return saved


def test_baseline_curves_have_no_empty_panel_and_mark_the_epoch_of_least_validation_loss(tmp_path, figures):
    history = {"loss": [1.0, 0.7, 0.5, 0.45], "val_loss": [0.9, 0.6, 0.65, 0.7]}  # Keras restores epoch 2
    plots.history_plot(tmp_path, history)
    fig = figures["training_curves.png"]
    assert len(fig.axes) == 1  # losses only: no empty "validation score" panel
    ax = fig.axes[0]
    vertical = [line for line in ax.lines if len(set(np.atleast_1d(line.get_xdata()))) == 1]
    assert len(vertical) == 1 and vertical[0].get_xdata()[0] == 2
    assert any("chosen epoch (2)" in t.get_text() for t in ax.get_legend().get_texts())


def test_curves_with_scores_get_two_panels_and_a_recorded_chosen_epoch_wins(tmp_path, figures):
    history = {"loss": [1.0, 0.8, 0.7], "val_map": [0.5, 0.7, 0.69], "chosen_epoch": 3}
    plots.history_plot(tmp_path, history)
    fig = figures["training_curves.png"]
    assert [ax.get_title() for ax in fig.axes] == ["loss", "validation score"]
    for ax in fig.axes:
        assert [line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1] == [3]


def test_no_chosen_epoch_without_validation_loss_or_record():
    assert plots.chosen_epoch({"loss": [1.0, 0.5]}) is None
    assert plots.chosen_epoch({"val_loss": [0.3, 0.2, 0.25]}) == 2


def test_tsne_marks_training_and_test_songs_by_shape_names_the_run_and_shows_progress(tmp_path, figures, capsys):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    labels = [("rock",) if i % 2 else ("jazz",) for i in range(40)]
    splits = ["train"] * 30 + ["test"] * 10
    plots.tsne_plots(tmp_path, emb, labels, splits=splits, name="2026-12-01/08-00-00")
    out = capsys.readouterr().out
    assert "t-SNE of 40 embeddings ..." in out and "done in" in out
    for name in ("tsne.png", "tsne_pca.png"):
        ax = figures[name].axes[0]
        assert "2026-12-01/08-00-00" in ax.get_title()
        shapes = {}
        for coll in ax.collections:
            n = len(coll.get_offsets())
            if n:
                key = tuple(map(tuple, coll.get_paths()[0].vertices.round(3)))
                shapes[key] = shapes.get(key, 0) + n
        assert sorted(shapes.values()) == [10, 30]  # two marker shapes: 30 training songs, 10 test songs
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "training songs" in legend and "test songs" in legend


def test_map_at_k_curve_stops_at_the_largest_meaningful_k(tmp_path, figures):
    assert report.curve_ks(25) == [1, 2, 5, 10, 20, 24]
    assert report.curve_ks(3) == [1, 2]
    test = {f"map@{k}": 0.5 for k in (*report.CURVE_KS, 24)}
    report.map_at_k_plot(tmp_path, {"run": test}, n_gallery=25)
    (line,) = figures["map_at_k.png"].axes[0].lines
    assert list(line.get_xdata()) == [1, 2, 5, 10, 20, 24]


def test_gallery_size_follows_the_protocol():
    split = np.array(["train"] * 6 + ["test"] * 4)
    assert report.gallery_size(split, "test") == 4
    assert report.gallery_size(split, "test_vs_all") == 10
