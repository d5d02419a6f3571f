"""Failures: files that could not be decoded, grouped by cause and reported (failed.csv, a closing note, or a clear
error past data.max_failed_fraction); and the note on songs shorter than a window."""

from __future__ import annotations

import math
from pathlib import Path

from siamrec.errors import SiamrecError
from siamrec.runs import closing_note, printable, write_csv

NOTED_FAILED_FRACTION = 0.01  # more skipped files than this: their causes are repeated at the end of the command
_PRINTED: set[str] = set()    # reports printed already (train reads a library once per input it chooses among)


def failure_causes(paths, failures: list[tuple[int, str]], examples: int = 2) -> list[str]:
    """The failures grouped by cause, most frequent first: "40 × 'reason' (e.g. a.mp3, b.mp3)". Reasons that differ
    only in their numbers (sizes, positions) are one cause."""
    import re

    groups: dict[str, list[tuple[int, str]]] = {}
    for i, reason in failures:
        groups.setdefault(re.sub(r"\d+", "#", reason), []).append((i, reason))
    out = []
    for members in sorted(groups.values(), key=len, reverse=True):
        names = [printable(Path(paths[i]).name) for i, _ in members[:examples]]
        more = ", ..." if len(members) > examples else ""
        out.append(f"{len(members)} × '{members[0][1]}' (e.g. {', '.join(names)}{more})")
    return out


def report_failures(run_dir, keys, paths, failures: list[tuple[int, str]], max_failed_fraction: float) -> None:
    """failed.csv in the run folder and the failures' causes, grouped, printed once: now when they are a few bad files
    (1 % of the files or fewer); at the end of the command, where nothing scrolls them away, when there are more (a
    systematic failure must not pass for a few bad files), with one line now saying so; a clear error, with the
    causes, when more than `max_failed_fraction` failed."""
    if not failures:
        return
    rows = [(keys[i], paths[i], reason) for i, reason in failures]
    listed = Path(run_dir) / "failed.csv"
    write_csv(listed, ("key", "path", "reason"), rows)
    n, total = len(rows), len(paths)
    causes = failure_causes(paths, failures)
    if n > max_failed_fraction * total:
        allowed = math.ceil(100 * n / total) / 100  # the smallest fraction in hundredths that lets these files go
        if n > allowed * total:  # rounding (29 / 100 is 0.29, but 0.29 · 100 < 29)
            allowed = round(allowed + 0.01, 2)
        raise SiamrecError(
            f"{n} of {total} audio files failed to decode (more than data.max_failed_fraction={max_failed_fraction}): "
            f"{'; '.join(causes)}; all are listed in {listed}: repair or remove them, or go on without them with "
            f"data.max_failed_fraction={allowed:g}")
    report = (f"skipped {n} of {total} files ({100 * n / total:.1f} %) that could not be decoded, listed in {listed}:"
              + "".join(f"\n  {cause}" for cause in causes))
    if report in _PRINTED:  # the same files of the same run: said already
        return
    _PRINTED.add(report)
    if n > NOTED_FAILED_FRACTION * total:
        print(f"skipped {n} of {total} files ({100 * n / total:.1f} %) that could not be decoded: their causes are "
              "listed at the end")
        closing_note(report)
    else:
        print(report)


def padding_note(path: str, window_seconds: float, what: str = "seed") -> str | None:
    """The line that says a song shorter than the backbone's window was padded with silence (None when it is not
    shorter, or its length cannot be read)."""
    from siamrec.data.audio import duration_seconds

    try:
        seconds = duration_seconds(path)
    except Exception:  # noqa: BLE001 - it was decoded already; its length is only for the note
        return None
    if seconds >= window_seconds:
        return None
    return (f"{what} {path} is {seconds:.1f} s, shorter than the backbone's {window_seconds:g} s window: padded with "
            "silence")
