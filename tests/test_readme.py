"""The README tells today's truth: every default it names equals the composed config.

Defaults are named in the README as `key=value` followed by "(default" or ", the default", or after "by default (";
as a table row
"| `NAME` (default) |" in the backbone table and "| siamese | LOSS (default) |" in the loss table; as
"`WINDOWS` (BACKBONE's default)" and "`WINDOWS` for `BACKBONE`" for a backbone's windows; and as "the default
backbone is `NAME`". Each is checked against the config the commands compose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siamrec.configs import compose

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def composed(*overrides):
    cfg = compose("readme", list(overrides))
    choices = {key.split("@")[-1]: value for key, value in cfg.hydra.runtime.choices.items()}
    return cfg, choices


def setting(key: str, overrides=()):
    """The composed value of `key`: a group's chosen option, or the value at `key` (a backbone's own setting is
    looked up in the backbone that has it when the default backbone has none; a model's, which no model is by
    default, in the Siamese head's)."""
    cfg, choices = composed(*overrides)
    if key in choices:
        return choices[key]
    node = cfg
    for part in key.split("."):
        if part not in node:
            if key.startswith("backbone.") and not overrides:
                return setting(key, ["backbone=choi2017"])
            if key.startswith("model.") and not overrides:
                return setting(key, ["+model=siamese"])
            raise KeyError(f"the README names {key}, which the config does not have")
        node = node[part]
    return node


CLAIMS = re.findall(r"`([a-z_][a-z0-9_.]*)=([A-Za-z0-9_:.]+)`(?:\s*\(|,\s*the\s+)default", README) + \
    re.findall(r"by default \(`([a-z_][a-z0-9_.]*)=([A-Za-z0-9_:.]+)`", README)
WINDOWS = re.findall(r"`((?:first|all|spread:\d+))` \(([a-z0-9_]+)'s default\)", README) + \
    re.findall(r"`((?:first|all|spread:\d+))` for `([a-z0-9_]+)`", README)


def test_the_readme_names_defaults_the_way_this_test_reads_them():
    assert len(CLAIMS) >= 4 and len(WINDOWS) >= 2  # the patterns still match the README's wording


@pytest.mark.parametrize("key, value", CLAIMS, ids=[f"{k}={v}" for k, v in CLAIMS])
def test_every_named_default_is_the_composed_one(key, value):
    assert str(setting(key)) == value


@pytest.mark.parametrize("windows, backbone", WINDOWS, ids=[f"{b}:{w}" for w, b in WINDOWS])
def test_each_backbones_windows(windows, backbone):
    assert setting("clip.windows", [f"backbone={backbone}"]) == windows


def test_the_default_backbone_and_loss():
    marked = re.findall(r"^\| `([a-z0-9_]+)` \(default\) \|", README, re.M)
    named = re.findall(r"default backbone is `([a-z0-9_]+)`", README)
    assert marked and named and set(marked) | set(named) == {setting("backbone")}
    losses = re.findall(r"^\| siamese \| ([a-z_]+) \(default\) \|", README, re.M)
    assert losses == [composed("+model=siamese")[1]["model.loss"]]
