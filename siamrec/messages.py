"""The one line a command prints when it fails: a composition error with the closest valid keys or options, what
Ctrl-C left behind and how to go on, a full or read-only disk. Never a traceback."""

from __future__ import annotations

from pathlib import Path

from siamrec.configs import conf_dir, group_options
from siamrec.errors import DISK_ERRNOS, first_line
from siamrec.overrides import key_of
from siamrec.run_folder import contents


def composition_error(exc: BaseException, overrides: list[str] = ()) -> str:
    """One line for a Hydra composition error: an unknown key gets the closest valid keys, an unknown group
    option the closest options."""
    import difflib
    import re as _re

    from siamrec.schema import unknown_key_message

    text = str(exc)
    m = _re.search(r"Could not override '([^']+)'\.\s*To append", text)
    if m:
        key = m.group(1)
        if key.startswith("model.") and not any(key_of(o) == "model" for o in overrides):
            return (f"{key}: no model is chosen, so it has no settings; "
                    "put +model=baseline|siamese|lda|identity before it")
        return unknown_key_message(key)
    m = _re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if m and (conf_dir() / m.group(1)).is_dir():
        group, name = m.groups()
        options = group_options(group)
        near = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={near[0]}? " if near else ""
        return (f"{group}={name}: no such option ({'|'.join(options)}); {hint}"
                f"(config file {group}/{name}.yaml not found)")
    return f"bad setting: {first_line(exc)}"


def interrupted(run_dir: Path | None, removed: bool, exc: BaseException) -> str:
    """What Ctrl-C leaves behind, where, and how to go on: one line."""
    hint = getattr(exc, "resume_hint", None)
    if run_dir is None or removed:
        return "interrupted before anything was written; nothing to keep" + (f"; {hint}" if hint else "")
    written = contents(run_dir)
    shown = ", ".join(written[:5]) + (", ..." if len(written) > 5 else "")
    return (f"interrupted: the run is incomplete; the files written so far are kept in {run_dir} ({shown}); "
            + (hint or "run the command again (with a new run folder) to redo it"))


def disk_error(exc: OSError) -> str | None:
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    if name not in DISK_ERRNOS:
        return None
    where = exc.filename or "a file"
    what = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is used up", "EFBIG": "the file is too large"}.get(
        name, "permission denied (a read-only folder or disk?)")
    return f"cannot write {where}: {what}; free some space or choose a writable folder (hydra.run.dir=DIR)"
