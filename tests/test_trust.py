"""Issue 21, item 1: a run folder is data. A component it names must be one of siamrec's configs' (or of a config
folder the user named); anything else is refused in one line before it is imported or called."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from siamrec import cli
from siamrec.errors import SiamrecError
from siamrec.runs import mark_finished, write_embeddings

# a module that leaves a mark when it is imported: what an attacker's run folder would try to run
PROBE = "import pathlib, os\npathlib.Path(os.environ['SIAMREC_PROBE']).write_text('imported')\nclass Head:\n    pass\n"


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "evil_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    mark = tmp_path / "imported.txt"
    monkeypatch.setenv("SIAMREC_PROBE", str(mark))
    yield mark
    sys.modules.pop("evil_probe", None)


def small_run(folder):
    rng = np.random.default_rng(0)
    keys = [f"{g}/{i}.wav" for g in ("rock", "jazz") for i in range(4)]
    write_embeddings(folder, rng.normal(size=(8, 4)).astype(np.float32), keys, [""] * 8,
                     [(k.split("/")[0],) for k in keys], ["test"] * 8)
    (folder / "head.json").write_text(json.dumps({"kind": "identity", "target": "siamrec.models.heads.IdentityHead",
                                                  "cfg": {}}))
    mark_finished(folder)
    return folder


@pytest.mark.parametrize("target", ["evil_probe.Head", "os.system", "builtins.open", "subprocess.Popen"])
def test_a_head_json_naming_a_foreign_class_is_refused_before_import(tmp_path, probe, target):
    from siamrec.models.heads import load_head

    run = small_run(tmp_path / "run")
    (run / "head.json").write_text(json.dumps({"kind": "x", "target": target, "cfg": {"command": "touch /tmp/x"}}))
    with pytest.raises(SiamrecError, match="refused") as info:
        load_head(run)
    assert "head.json" in str(info.value) and "\n" not in str(info.value)
    assert not probe.exists()


def test_a_head_json_with_nested_instantiation_keys_is_refused(tmp_path):
    from siamrec.models.heads import load_head

    run = small_run(tmp_path / "run")
    (run / "head.json").write_text(json.dumps({"kind": "identity", "target": "siamrec.models.heads.IdentityHead",
                                               "cfg": {"x": {"_target_": "os.system", "_args_": ["id"]}}}))
    with pytest.raises(SiamrecError, match="refused"):
        load_head(run)
    assert load_head(small_run(tmp_path / "ok")).kind == "identity"  # siamrec's own head still loads


@pytest.mark.parametrize("backbone", [
    {"_target_": "evil_probe.Head"},
    {"_target_": "builtins.open", "file": "/etc/passwd"},
    {"_target_": "siamrec.backbones.musicnn.MusicnnMSD", "weights": {"_target_": "evil_probe.Head"}},
    {"_target_": "siamrec.backbones.musicnn.MusicnnMSD", "_args_": ["x"]},
    "not a mapping",
    {"_target_": "siamrec.backbones.musicnn.MusicnnMSD", "name": "musicnn_msd", "model": "../../elsewhere.keras"},
])
def test_an_extractor_json_naming_a_foreign_backbone_is_refused_before_import(tmp_path, probe, cfg_factory, backbone):
    from siamrec.encoder import SongEncoder

    model = backbone.pop("model", "backbone.keras") if isinstance(backbone, dict) else "backbone.keras"
    spec = {"members": [{"backbone": backbone, "clip": {}, "parts": None, "model": model}]}
    with pytest.raises(SiamrecError, match="refused|not a component|damaged") as info:
        SongEncoder.load(tmp_path, spec, cfg_factory("extract"))
    assert "extractor.json" in str(info.value)
    assert not probe.exists()


@pytest.mark.parametrize("line", ["data._target_=evil_probe.Head", "+model._target_=os.system",
                                  "backbone._args_=[1]", "split._partial_=true", "model._recursive_=true"])
def test_overrides_a_run_folder_carries_may_not_name_a_class(tmp_path, probe, capsys, line):
    run = small_run(tmp_path / "run")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(f"- seed=1\n- {line}\n")
    code = cli.main(["recommend", f"run={run}", "rock/0.wav", f"hydra.run.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "overrides.yaml" in err and "refused" in err
    assert not probe.exists() and not (tmp_path / "out").exists()


def test_a_foreign_head_through_the_cli_is_one_line_exit_1(tmp_path, probe, capsys):
    run = small_run(tmp_path / "run")
    (run / "head.json").write_text(json.dumps({"kind": "x", "target": "evil_probe.Head", "cfg": {}}))
    mark_finished(run)  # as whoever hands over the folder can: the marker guards against accidents, not attackers
    import soundfile as sf

    new_song = tmp_path / "new song.wav"  # a song outside the library: the run's model must embed it
    sf.write(new_song, np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.1, 16000)
    code = cli.main(["recommend", f"run={run}", str(new_song), f"hydra.run.dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "evil_probe.Head" in err and "refused" in err
    assert not probe.exists()


def test_components_of_a_config_folder_the_user_names_are_trusted(tmp_path):
    from siamrec import configs, trust

    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("_target_: my_plugin.MyHead\n")
    with pytest.raises(SiamrecError):
        trust.check_target("my_plugin.MyHead", "head.json")
    before = list(configs._user_dirs)
    try:
        configs.add_config_dirs([f"file://{tmp_path / 'conf'}"])
        assert trust.check_target("my_plugin.MyHead", "head.json") == "my_plugin.MyHead"
    finally:
        configs._user_dirs[:] = before
    assert "siamrec.models.siamese.SiameseHead" in trust.declared_targets()


def test_a_head_may_carry_a_component_of_siamrecs_configs_but_nothing_else():
    from siamrec import trust

    trust.check_plain({"name": "siamese", "loss": {"_target_": "siamrec.losses.TripletHard", "margin": 0.2}}, "cfg")
    for bad in ({"_target_": "os.system", "command": "true"},
                {"_target_": "siamrec.losses.TripletHard", "margin": {"_target_": "os.system"}},
                {"_target_": "siamrec.losses.TripletHard", "_args_": ["x"]}):
        with pytest.raises(SiamrecError, match="refused"):
            trust.check_plain({"loss": bad}, "head.json: cfg")
