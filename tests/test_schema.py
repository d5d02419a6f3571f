"""The configuration schema: every shipped option of every group validates, bad values and unknown keys give one
line naming the key, and the schema stays in step with the code it describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamrec import schema
from siamrec.cli import compose, strip_hydra
from siamrec.configs import group_options
from siamrec.errors import SiamrecError


@pytest.mark.parametrize("overrides", [
    *[[f"+model={m}"] for m in group_options("model")],
    *[[f"data={d}"] for d in group_options("data")],
    *[[f"split={s}"] for s in group_options("split")],
    *[[f"index={i}"] for i in group_options("index")],
    *[[f"+experiment={e}"] for e in group_options("experiment")],
    ["+study=blocks"],
], ids=lambda o: o[0])
def test_every_shipped_option_validates(overrides):
    assert schema.problems(strip_hydra(compose("train", overrides))) == []


@pytest.mark.parametrize("setting, words", [
    ("model.epochs=abc", ["model.epochs='abc'", "an integer >= 1"]),
    ("model.epochs=-5", ["model.epochs=-5"]),
    ("model.lr=fast", ["model.lr='fast'", "a positive number"]),
    ("model.loss.margin=-1", ["model.loss.margin=-1", "a number >= 0"]),
    ("model.loss.positive=any", ["model.loss.positive='any'", "shared|jaccard"]),
    ("+model.loss.margn=1", ["unknown setting model.loss.margn", "model.loss.margin"]),
    ("model.dropout=1.0", ["model.dropout=1.0", "[0, 1)"]),
    ("model.hidden=[0]", ["model.hidden=[0]", "layer widths"]),
    ("+model.lrr=0.1", ["unknown setting model.lrr", "model.lr"]),
    ("recommend.k=2.9", ["recommend.k=2.9", "integer"]),
    ("eval.ks=[0]", ["eval.ks=[0]"]),
    ("eval.ks=[]", ["eval.ks=[]", "non-empty"]),
    ("eval.protocol=all", ["eval.protocol='all'", "test|test_vs_all|cross"]),
    ("features.workers=abc", ["features.workers='abc'", ">= 0 or null"]),
    ("features.batch_size=0", ["features.batch_size=0"]),
    ("clip.offset=sideways", ["clip.offset='sideways'", "start, middle"]),
    ("clip.windows=spread:0", ["clip.windows='spread:0'", "spread:K"]),
    ("clip.pool=max", ["clip.pool='max'", "mean|mean_std"]),
    ("seed=-1", ["seed=-1"]),
    ("plots=maybe", ["plots='maybe'", "true or false"]),
    ("data.min_label_count=0", ["data.min_label_count=0"]),
    ("+data.extensions=[wav]", ["unknown setting data.extensions"]),  # not a key of data=demo
    ("model.dim=102", ["model.dim=102 and model.branches=4", "multiple"]),
    ("model.lda_share=[0,1.5]", ["model.lda_share=[0, 1.5]", "shares in [0, 1)"]),
    ("model.lda_shrinkage=[2]", ["model.lda_shrinkage=[2]"]),
    ("query_expansion=-1", ["query_expansion=-1", "an integer >= 0"]),
    ("model.inputs=abc", ["model.inputs='abc'", "a list of features.combine lists"]),  # a check from the schema
    ("model.inputs=[[{backbone:choi2017,layers:[a]}]]", ["model.inputs=[[{backbone: choi2017, layers: [a]}]]"]),
])
def test_bad_values_and_unknown_keys_are_named(setting, words):
    cfg = strip_hydra(compose("train", ["+model=siamese", setting]))
    with pytest.raises(SiamrecError) as e:
        schema.validate(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, (word, msg)


def test_model_keys_are_checked_per_model():
    lda = strip_hydra(compose("train", ["+model=lda", "+model.epochs=3"]))  # a key of baseline and siamese only
    (problem,) = schema.problems(lda)
    assert problem.startswith("unknown setting model.epochs")
    assert schema.problems(strip_hydra(compose("train", ["+model=baseline", "model.epochs=3"]))) == []
    siamese = strip_hydra(compose("train", ["+model=siamese", "+model.momentum=0.9"]))  # a baseline key
    assert schema.problems(siamese)[0].startswith("unknown setting model.momentum")


def test_the_lead_s_new_keys_validate():
    cfg = strip_hydra(compose("train", [
        "+model=siamese", "model.train_on=windows", "clip.windows=spread:4", "clip.hop=2.5",
        "clip.max_windows=64", "clip.pool=mean", "features.parts=[block1,block2]", "extract.engine=ray",
        "features.combine=[{backbone:musicnn_msd,parts:[penultimate]}]", "model.trainable=last:2",
        "extract.engine.actors=2", "extract.engine.num_gpus=0.5", "seed=1"]))
    assert schema.problems(cfg) == []


def test_windows_pooling_and_normalisation_follow_the_backbone_unless_set():
    """Each backbone's YAML recommends the clip.windows, clip.pool and features.normalise measured for it; a setting
    given on the command line wins."""
    def chosen(*overrides):
        cfg = strip_hydra(compose("train", ["+model=identity", *overrides]))
        assert schema.problems(cfg) == []
        return cfg.clip.windows, cfg.clip.pool, cfg.features.normalise

    assert chosen() == ("all", "unit_mean", "centre_sqrt")  # musicnn_msd, the default backbone
    assert chosen("backbone=choi2017") == ("spread:4", "mean", "centre")
    assert chosen("clip.pool=mean", "features.normalise=centre") == ("all", "mean", "centre")
    assert chosen("backbone=choi2017", "clip.pool=unit_mean") == ("spread:4", "unit_mean", "centre")


def test_training_on_windows_asks_for_plain_mean_pooling_of_audio_only():
    """model.train_on=windows trains on the windows' own vectors: with musicnn's default clip.pool=unit_mean the
    settings are refused before any work, in one line saying what to add; precomputed features have no windows."""
    windows = ["+model=siamese", "model.train_on=windows"]
    found = schema.problems(strip_hydra(compose("train", windows)))
    assert found == ["model.train_on=windows trains on each window's vector as it is, which only clip.pool=mean pools "
                     "the same way (clip.pool=unit_mean here, the backbone's default unless set): add clip.pool=mean"]
    assert schema.problems(strip_hydra(compose("train", [*windows, "clip.pool=mean"]))) == []
    features = ["data=features", "data.features=[a.npy]", "data.labels=a.csv"]
    assert schema.problems(strip_hydra(compose("train", [*windows, *features]))) == []


def test_unset_mandatory_values_are_left_to_the_command():
    cfg = strip_hydra(compose("train", ["data=folder"]))  # data.root: ???
    assert schema.problems(cfg) == []


def test_closest_keys():
    assert schema.closest("data.roott")[0] == "data.root"
    assert schema.closest("model.epoch")[0] == "model.epochs"
    assert schema.closest("eval.kss")[0] == "eval.ks"


def test_a_components_settings_are_its_constructors_typed_parameters():
    spec = schema.constructor_spec("siamrec.losses.MultiSimilarity")
    assert set(spec) == {"alpha", "beta", "base", "epsilon", "positive", "jaccard_threshold"}
    assert spec["alpha"].ok(2.0) and not spec["alpha"].ok(0) and not spec["alpha"].ok("2")
    assert spec["positive"].ok("jaccard") and not spec["positive"].ok("any")
    assert spec["jaccard_threshold"].ok(1.0) and not spec["jaccard_threshold"].ok(0.0)
    assert schema.constructor_spec("siamrec.models.heads.Head") is None  # **settings: not typed
    assert schema.constructor_spec("siamrec.models.heads.IdentityHead") == {}  # typed: no settings
    lda = schema.constructor_spec("siamrec.models.heads.LDAHead")
    assert set(lda) == {"use_valid", "shrinkage", "train_on"}
    assert lda["shrinkage"].ok([None, 0.1, "auto"]) and not lda["shrinkage"].ok([2]) and not lda["train_on"].ok("all")
    siamese = schema.constructor_spec("siamrec.models.siamese.SiameseHead")  # aliases imported from heads.py
    assert siamese["trainable"].ok("last:2") and siamese["trainable"].ok(["block5"])
    assert not siamese["trainable"].ok("last") and not siamese["train_on"].ok("frames")
    assert siamese["train_on"].ok("subsets") and not lda["train_on"].ok("subsets")  # only the Siamese head's
    assert siamese["subset_fraction"].ok(0.5) and not siamese["subset_fraction"].ok(0) and not siamese["subsets"].ok(0)
    assert isinstance(siamese["loss"], schema.Component) and siamese["loss"].group == "loss"


def test_schema_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, siamrec.schema, siamrec.cli; "
            "print(any(m in sys.modules for m in ('numpy', 'tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(schema.__file__).parents[1], timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_fractions_that_leave_no_training_songs_are_refused():
    cfg = strip_hydra(compose("train", ["+model=lda", "split.valid=0.5", "split.test=0.5"]))
    assert schema.problems(cfg) == ["split.valid=0.5 and split.test=0.5: together they must leave songs for "
                                    "training (< 1)"]


def test_a_loss_is_chosen_by_name_on_the_command_line(capsys):
    from siamrec.cli import main

    assert main(["train", "+model=siamese", "model.loss=multi_similarity", "model.loss.beta=20", "--cfg"]) == 0
    shown = capsys.readouterr().out
    assert "_target_: siamrec.losses.MultiSimilarity" in shown and "beta: 20" in shown
    assert main(["train", "+model=siamese", "model.loss=npair", "--cfg"]) == 2
    assert "npair: no such option (contrastive|multi_similarity|triplet_hard|triplet_semihard)" in capsys.readouterr().err
