"""Clip settings: the `clip` config checked against the backbone, and the plan of a song's windows it gives."""

from __future__ import annotations

from siamrec.data.audio import WindowPlan, parse_windows, window_start
from siamrec.errors import SiamrecError

POOLS = ("mean", "mean_std", "unit_mean")


def plain(node) -> dict:
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def check_clip(clip_cfg, bundle=None) -> None:
    """Reject bad clip settings (and settings that contradict the backbone) before any file is decoded."""
    clip = plain(clip_cfg)
    for key in ("sr", "duration"):
        value = clip.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SiamrecError(f"clip.{key}={value!r}: must be a positive number")
    try:
        window_start(float(clip["duration"]), float(clip["duration"]), clip["offset"])
        parse_windows(clip["windows"])
    except ValueError as exc:
        raise SiamrecError(str(exc)) from None
    if clip["pool"] not in POOLS:
        raise SiamrecError(f"clip.pool={clip['pool']!r}: use one of {', '.join(POOLS)}")
    hop = clip.get("hop")
    if hop is not None and (isinstance(hop, bool) or not isinstance(hop, (int, float)) or hop <= 0):
        raise SiamrecError(f"clip.hop={hop!r}: must be a positive number of seconds (or null: the backbone's hop)")
    cap = clip["max_windows"]
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise SiamrecError(f"clip.max_windows={cap!r}: must be an integer >= 1")
    if bundle is not None:
        if int(clip["sr"]) != bundle.sample_rate:
            raise SiamrecError(f"clip.sr={clip['sr']}: the backbone {bundle.name} takes {bundle.sample_rate} Hz; "
                               "clip.sr follows the backbone, leave it unset")
        if abs(float(clip["duration"]) - bundle.window_seconds) > 1e-6:
            raise SiamrecError(f"clip.duration={clip['duration']}: the backbone {bundle.name} takes windows of "
                               f"{bundle.window_seconds:g} s; clip.duration follows the backbone, leave it unset")


def window_plan(bundle, clip_cfg) -> WindowPlan:
    clip = plain(clip_cfg)
    mode, count = parse_windows(clip["windows"])
    hop = clip.get("hop")
    return WindowPlan(sr=bundle.sample_rate, window=bundle.window_samples, context=bundle.context_samples,
                      hop=int(round(float(hop) * bundle.sample_rate)) if hop else bundle.hop_samples,
                      mode=mode, count=count, max_windows=int(clip["max_windows"]),
                      offset=clip["offset"])
