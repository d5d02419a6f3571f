"""Radio rules and song paths (siamrec/rules.py) on a generated tagged library, through the library API and the
`recommend` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from radio_lib import EXPECTED_DEFAULT, SONGS, radio_run
from siamrec.errors import SiamrecError
from siamrec.index import ExactIndex
from siamrec.rules import Radio, Rules, Songs, normal_text, normal_title, sound_note
from siamrec.runs import label_free, mark_finished, read_embeddings

DEFAULT = Rules(max_per_artist=2, album_gap=3, dedupe=True, dup_distance=0.01, dup_distance_artist=0.06)


def radio_of(run) -> Radio:
    emb, items = read_embeddings(run)
    return Radio(emb, Songs(items), ExactIndex(emb))


@pytest.fixture
def radio(tmp_path):
    return radio_of(radio_run(tmp_path / "run"))


def test_yaml_rules_are_the_documented_defaults(cfg_factory):
    cfg = cfg_factory("recommend")
    assert Rules.from_config(cfg.recommend.rules) == DEFAULT
    assert Rules.from_config("none") is None
    with pytest.raises(SiamrecError, match="max_per_artist"):
        Rules.from_config({"max_per_artist": 0})


def test_every_rule_on_the_tagged_library(radio):
    plain = radio.playlist(radio.unit(0), 10, Rules(), seeds=[0])
    assert [r for r, _ in plain.picks] == list(range(1, 11))  # no rules: the nearest neighbours as they are
    found = radio.playlist(radio.unit(0), 10, DEFAULT, seeds=[0])
    rows = [r for r, _ in found.picks]
    assert rows == EXPECTED_DEFAULT
    assert found.note is None
    # each pick keeps its own similarity to the seed
    for row, sim in found.picks:
        assert sim == pytest.approx(1 / np.sqrt(1 + (0.3 * row) ** 2), abs=1e-5)
    assert 1 not in rows and 2 not in rows                  # the seed's versions: title, recording id
    assert 5 not in rows                                    # a third song of artist A ("A feat. Z" is A)
    assert 7 not in rows and 11 not in rows                 # other versions of chosen songs
    assert 13 not in rows                                   # near-identical sound
    assert rows.index(9) - rows.index(8) > 3                # two songs of album D more than 3 places apart
    assert found.dropped["max_per_artist"] == 1 and found.dropped["near-identical sound"] == 1


def test_filters_exclude_and_a_short_playlist_that_says_so(radio):
    rules = DEFAULT.replace(labels=["Pop"], max_duration=600, exclude=["f"])
    rows = [r for r, _ in radio.playlist(radio.unit(0), 10, rules, seeds=[0]).picks]
    assert rows == [3, 4, 6, 8, 10, 13, 16, 9, 17, 18]     # artist F (12) excluded, 14 too long, 15 rock
    assert [r for r, _ in radio.playlist(radio.unit(0), 3, DEFAULT.replace(
        exclude=["A feat. Z/Alb2/03 A3.flac", "A - A4", "6"]), seeds=[0]).picks] == [5, 7, 8]  # key, "artist - title", id
    short = radio.playlist(radio.unit(0), 10, DEFAULT.replace(labels=["rock"]), seeds=[0])
    assert [r for r, _ in short.picks] == [15]
    assert "only 1 of k=10" in short.note
    assert [r for r, _ in radio.playlist(radio.unit(0), 10, DEFAULT.replace(min_duration=850), seeds=[0]).picks] \
        == [14]


def test_candidates_widen_until_k_songs_pass():
    """Only the farthest songs pass the label filter: the first candidate list holds none of them."""
    rng = np.random.default_rng(0)
    n = 400
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    sims = emb @ emb[0] / np.linalg.norm(emb, axis=1)
    far = np.argsort(sims)[:5]
    items = [{"key": f"s{i}", "labels": "rare" if i in far else "common", "group": f"s{i}"} for i in range(n)]
    radio = Radio(emb, Songs(items), ExactIndex(emb))
    found = radio.playlist(emb[0], 5, Rules(labels=("rare",)), seeds=[0])
    assert sorted(r for r, _ in found.picks) == sorted(far.tolist()) and found.note is None


def test_a_near_identical_sound_is_a_duplicate_sooner_for_one_artist():
    """Two pairs 0.03 apart (cosine distance): one of one artist (a version: the second goes), one of two
    artists (two songs: both stay); a third pair 0.005 apart is a duplicate whoever sings it."""
    def at(angle_deg, dims=4):
        v = np.zeros(dims, np.float32)
        v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
        return v

    d03, d005 = np.degrees(np.arccos(1 - 0.03)), np.degrees(np.arccos(1 - 0.005))
    emb = np.stack([at(0), at(30), at(30 + d03), at(70), at(70 + d03), at(110), at(110 + d005), at(150)])
    emb[:, 2] = 0.0
    artists = ["s", "X", "X", "Y", "Z", "V", "W", "U"]
    items = [{"key": f"k{i}", "labels": "", "group": f"k{i}", "artist": a} for i, a in enumerate(artists)]
    radio = Radio(emb, Songs(items), ExactIndex(emb))
    rows = [r for r, _ in radio.playlist(emb[0], 7, DEFAULT, seeds=[0]).picks]
    assert rows == [1, 3, 4, 5, 7]


def test_a_trained_heads_embedding_keeps_songs_the_sound_rules_would_drop(tmp_path, capsys):
    """On a trained head's run (head.json of a trained kind) a small distance means shared labels, not the same
    recording: row 13, a hair from row 12, stays unless dup_on_trained; the tag rules still apply; recommend says
    so in one line. An identity model's run (or none: a library's index) keeps the sound rules."""
    run = radio_run(tmp_path / "run")
    seed = "A/Alb1/00 Tum Hi Ho.flac"
    assert label_free(run)
    for head, free in (({"kind": "identity"}, True), ({"kind": "siamese"}, False),
                       ({"kind": "identity", "label_free": False}, False),  # on a backbone fine-tuned on labels
                       ({"kind": "siamese", "label_free": False}, False)):
        (run / "head.json").write_text(json.dumps({**head, "target": "x", "cfg": {}}), encoding="utf-8")
        mark_finished(run)
        assert label_free(run) is free
    (run / "model.keras").write_bytes(b"a fine-tuned model of a run of before 2026-12-05")
    (run / "head.json").write_text(json.dumps({"kind": "identity", "target": "x", "cfg": {}}), encoding="utf-8")
    assert not label_free(run)
    (run / "model.keras").unlink()
    (run / "head.json").write_text(json.dumps({"kind": "siamese", "target": "x", "cfg": {}}), encoding="utf-8")
    mark_finished(run)
    emb, items = read_embeddings(run)
    trained = Radio(emb, Songs(items), ExactIndex(emb), label_free=False)
    rows = [r for r, _ in trained.playlist(trained.unit(0), 10, DEFAULT, seeds=[0]).picks]
    assert rows == [3, 4, 6, 8, 10, 12, 13, 9, 14, 15]  # 13 kept (9 waits for album_gap); 1, 2, 5, 7, 11 still out
    again = [r for r, _ in trained.playlist(trained.unit(0), 10, DEFAULT.replace(dup_on_trained=True), seeds=[0]).picks]
    assert again == EXPECTED_DEFAULT
    assert sound_note(DEFAULT, label_free=True) is None
    assert sound_note(DEFAULT.replace(dup_on_trained=True), label_free=False) is None
    assert sound_note(DEFAULT.replace(dup_distance=0.0, dup_distance_artist=0.0), False) is None
    capsys.readouterr()
    assert _cli(f"run={run}", f"seed={seed}", "k=10", f"hydra.run.dir={tmp_path / 'o1'}") == 0
    assert sound_note(DEFAULT, label_free=False) in capsys.readouterr().out.splitlines()
    keys = [r["key"] for r in csv.DictReader(open(tmp_path / "o1" / "playlists.csv", encoding="utf-8"))]
    assert keys[5:7] == [f"{SONGS[i][0]}/{SONGS[i][2]}/{i:02d} {SONGS[i][1]}.flac" for i in (12, 13)]


def test_sound_rules_checked_after_the_walk_choose_as_song_by_song(monkeypatch):
    """A playlist's walk puts the sound rules off to one check at its end (and walks again, song by song, when a
    similarity comes near a limit): the same songs and the same counts of what each rule left out as applying
    them song by song, on a library full of near-identical songs, some of one artist."""
    import siamrec.rules as rules_module

    rng = np.random.default_rng(3)
    n, dim = 3000, 16
    emb = rng.normal(size=(30, dim))[rng.integers(0, 30, n)] + 0.35 * rng.normal(size=(n, dim))
    twins = rng.integers(0, n, 600)
    emb[twins] = emb[rng.integers(0, n, 600)] + 0.03 * rng.normal(size=(600, dim))
    emb = emb.astype(np.float32)
    items = [{"key": f"s{i}", "labels": "", "group": "", "artist": f"a{i % 40}", "album": f"al{i % 3}",
              "title": f"t{i % 900}"} for i in range(n)]
    radio = Radio(emb, Songs(items), ExactIndex(emb))
    cases = [(seed, rules) for seed in range(0, n, 61)
             for rules in (DEFAULT, DEFAULT.replace(dup_distance=0.002), DEFAULT.replace(dup_distance=0.0))]
    verdicts = []
    check = rules_module._State.sound_would_refuse
    monkeypatch.setattr(rules_module._State, "sound_would_refuse", lambda self: verdicts.append(check(self)) or
                        verdicts[-1])
    after = [radio.playlist(emb[seed], 20, rules, seeds=[seed]) for seed, rules in cases]
    assert True in verdicts and False in verdicts  # some walks were made again, most were not
    monkeypatch.setattr(rules_module._State, "sound_would_refuse", lambda self: True)  # every one song by song
    by_song = [radio.playlist(emb[seed], 20, rules, seeds=[seed]) for seed, rules in cases]
    assert [(p.picks, p.dropped) for p in after] == [(p.picks, p.dropped) for p in by_song]
    assert sum(p.dropped["near-identical sound"] for p in by_song) > 0
    assert sum(p.dropped["near-identical sound, same artist"] for p in by_song) > 0


def test_titles_normalised_without_breaking_indic_scripts():
    assert normal_title("Tum Hi Ho (Live)") == normal_title("TUM HI HO [Remastered 2011]") == "tum hi ho"
    assert normal_title("Cé Song - Live at Wembley") == normal_title("ce song feat. Someone") == "ce song"
    assert normal_title("ਮਿੱਟੀ ਦਾ ਬਾਵਾ (Live)") == normal_title("ਮਿੱਟੀ ਦਾ ਬਾਵਾ")
    assert normal_text("गाना") != normal_text("गन")      # vowel signs are letters there, not accents
    assert normal_text("ਮਿੱਟੀ") != normal_text("ਮਟ")


def test_older_items_without_tags_still_get_rules(tmp_path):
    radio = radio_of(radio_run(tmp_path / "run", metadata=False))
    rows = [r for r, _ in radio.playlist(radio.unit(0), 10, DEFAULT, seeds=[0]).picks]
    # no tags: titles and albums are not known; the group stands for the artist: 1 (the seed's live take, 0.042
    # from it) goes as a near-identical sound of the same artist, 3 and 4 are A's two songs, 5 a third; the
    # sound duplicate 13 goes too
    assert rows == [2, 3, 4, 6, 7, 8, 9, 10, 11, 12]


def test_path_moves_from_a_to_b(tmp_path):
    n, rng = 60, np.random.default_rng(1)
    angles = np.linspace(0, np.pi / 2, n)
    emb = np.zeros((n, 6), dtype=np.float32)
    emb[:, 0], emb[:, 1] = np.cos(angles), np.sin(angles)
    emb[:, 2:] = 0.05 * rng.normal(size=(n, 4))
    items = [{"key": f"s{i}", "labels": "", "group": f"s{i}"} for i in range(n)]
    radio = Radio(emb, Songs(items), ExactIndex(emb))
    steps, note = radio.path(0, n - 1, 8, DEFAULT.replace(dup_distance=0.0))  # neighbours here are 1.5° apart
    assert note is None and len(steps) == 8 and len({s["row"] for s in steps}) == 8
    to_a = [s["similarity_a"] for s in steps]
    to_b = [s["similarity_b"] for s in steps]
    assert to_a == sorted(to_a, reverse=True) and to_b == sorted(to_b)
    assert 0 not in {s["row"] for s in steps} and n - 1 not in {s["row"] for s in steps}
    # even steps: each song near its point, so the rows climb through the arc
    rows = [s["row"] for s in steps]
    assert rows == sorted(rows) and rows[0] > 0 and rows[-1] < n - 1


def _cli(*args):
    from siamrec.cli import main

    return main(["recommend", *args])


def test_recommend_command_rules_none_path_and_m3u8(tmp_path, capsys):
    run = radio_run(tmp_path / "run")
    seed = "A/Alb1/00 Tum Hi Ho.flac"
    assert _cli(f"run={run}", f"seed={seed}", "k=10", f"hydra.run.dir={tmp_path / 'o1'}") == 0
    keys = [r["key"] for r in csv.DictReader(open(tmp_path / "o1" / "playlists.csv", encoding="utf-8"))]
    key_of = {i: f"{a}/{al}/{i:02d} {t}.flac" for i, (a, t, al, *_rest) in enumerate(SONGS)}
    assert keys == [key_of[i] for i in EXPECTED_DEFAULT]
    assert _cli(f"run={run}", f"seed={seed}", "k=10", "rules=none", f"hydra.run.dir={tmp_path / 'o2'}") == 0
    keys = [r["key"] for r in csv.DictReader(open(tmp_path / "o2" / "playlists.csv", encoding="utf-8"))]
    assert keys == [key_of[i] for i in range(1, 11)]
    capsys.readouterr()
    assert _cli(f"run={run}", f"seed={seed}", "k=10", "recommend.rules.labels=[rock]",
                f"hydra.run.dir={tmp_path / 'o3'}") == 0
    assert "only 1 of k=10 songs pass the radio rules" in capsys.readouterr().out
    # out=FILE.m3u8 --relative-to DIR: the seed first, paths relative to the playlist's folder, EXTINF tags
    music = run / "music"
    out = music / "lists" / "radio.m3u8"
    out.parent.mkdir(parents=True)
    assert _cli(f"run={run}", f"seed={seed}", "k=3", f"out={out}", "--relative-to", str(out.parent),
                f"hydra.run.dir={tmp_path / 'o4'}") == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    assert lines[1:3] == ["#EXTINF:200,A - Tum Hi Ho", f"../{seed}"]
    assert lines[3:5] == ["#EXTINF:190,A feat. Z - A3", f"../{key_of[3]}"]
    assert len(lines) == 9
    # to=B: a path of k songs from A to B, A first and B last, similarity to both shown
    capsys.readouterr()
    assert _cli(f"run={run}", f"seed={seed}", f"to={key_of[25]}", "k=4", f"hydra.run.dir={tmp_path / 'o5'}") == 0
    printed = capsys.readouterr().out
    assert "path from" in printed and " A +" in printed and " B +" in printed
    table = list(csv.DictReader(open(tmp_path / "o5" / "path.csv", encoding="utf-8")))
    assert table[0]["key"] == seed and table[-1]["key"] == key_of[25] and len(table) == 6


def test_m3u8_never_lets_a_tag_inject_a_line(tmp_path):
    from siamrec.m3u import m3u8_text

    text = m3u8_text([{"path": str(tmp_path / "a.flac"), "title": "x\n/etc/passwd\r#EXTINF", "artist": "y\u2028z",
                       "duration": 12.6}])
    assert text.splitlines() == ["#EXTM3U", "#EXTINF:13,y z - x /etc/passwd #EXTINF", str(tmp_path / "a.flac")]


def test_an_approximate_index_is_searched_once_for_most_playlists():
    """The first search of an HNSW index asks for the ef_search neighbours it visits anyway (or FIRST·k, if
    more), and a second search only when the rules leave too few: on a catalogue shaped like
    scripts/bench_serve.py's (sound clusters of ~100 songs shared by 7 artists, so max_per_artist=2 makes a k=25
    playlist look up to ~145 neighbours deep), most playlists search once and every one is complete."""
    rng = np.random.default_rng(0)
    n, centres = 4000, 40
    centre = rng.integers(0, centres, n)
    emb = (rng.normal(size=(centres, 32))[centre] + 0.6 * rng.normal(size=(n, 32))).astype(np.float32)
    items = [{"key": f"s{i}", "labels": "", "group": "", "artist": f"a{c * 7 + i % 7}", "album": f"al{i % 2}",
              "title": f"t{i}"} for i, c in enumerate(centre.tolist())]
    exact = ExactIndex(emb)

    class Approximate:  # the exact neighbours, asked for as from an HNSW index (keeping no vectors, as IVF)
        method, ef_search, searches, vectors = "hnsw", 128, 0, None

        def search(self, queries, k):
            self.searches += 1
            return exact.search(queries, k)

    index = Approximate()
    radio = Radio(emb, Songs(items), index)
    twice, first = 0, []
    real_search = index.search

    def noting(queries, k):
        first.append(k)
        return real_search(queries, k)

    index.search = noting
    for seed in range(0, n, 10):
        before, first[:] = index.searches, []
        found = radio.playlist(emb[seed], 25, DEFAULT, seeds=[seed])
        assert len(found.picks) == 25
        assert first[0] == 128 + 1, first  # ef_search (> 5·25) and the seed: no deeper than the search visits
        twice += index.searches - before > 1
    assert twice <= 40, f"{twice} of 400 playlists searched the index more than once"
