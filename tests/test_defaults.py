"""Defaults are stated once, in the YAML, and what the code reports follows them: a backbone's facts come from its
bundle's config (the demo corpus's rate, the tagger of tag, the name in report tables)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from siamrec.cli import strip_hydra
from siamrec.configs import compose


def job(*overrides):
    return strip_hydra(compose("train", list(overrides)))


@pytest.mark.parametrize("backbone", [[], ["backbone=choi2017"]], ids=["default", "choi2017"])
def test_the_demo_corpus_is_rendered_at_the_backbones_rate(backbone, tmp_path, monkeypatch):
    import siamrec.data.demo as demo_module
    from siamrec.data.sources import load_library

    cfg = job(*backbone, "data.n_per_style=1", "data.duration=1", f"paths.cache={tmp_path}")
    asked = []
    real = demo_module.ensure_demo
    monkeypatch.setattr(demo_module, "ensure_demo", lambda *a, **kw: asked.append(kw["sr"]) or real(*a, **kw))
    load_library(cfg.data, cfg.paths)
    assert asked == [cfg.backbone.sample_rate] == [12000 if backbone else 16000]


def test_tag_uses_the_chosen_backbones_tagger(capsys):
    from siamrec.cli import main

    assert main(["tag", "--cfg"]) == 0
    default = OmegaConf.create(capsys.readouterr().out)
    assert default.backbone.name == job().backbone.name == "musicnn_msd"
    assert main(["tag", "backbone=choi2017_keras2", "--cfg"]) == 0
    assert OmegaConf.create(capsys.readouterr().out).backbone.name == "choi2017_keras2"


@pytest.mark.parametrize("backbone, name", [("choi2017", "choi2017_theano"), ("choi2017_keras2", "choi2017_keras2"),
                                            ("musicnn_msd", "musicnn_msd")])
def test_report_tables_name_the_backbone_and_the_loss(backbone, name, tmp_path):
    from siamrec.report import _describe

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg = job("+model=siamese", "model.loss=multi_similarity", f"backbone={backbone}")
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    described = _describe(run)
    assert described["backbone"] == name and described["loss"] == "multi_similarity"
    # as Hydra records it: with its interpolations (choi2017's name: choi2017_${.release})
    recorded = compose("train", ["+model=siamese", "model.loss=multi_similarity", f"backbone={backbone}"],
                       return_hydra_config=False)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(recorded))
    assert _describe(run)["backbone"] == name
