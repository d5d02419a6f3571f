"""A command's run folder: where it goes (hydra.run.dir; never into a folder that already holds a run unless
overwrite=true), its record (.hydra/config.yaml and overrides.yaml) made before any result, and its removal when a
command fails before writing anything."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from siamrec.errors import SiamrecError
from siamrec.overrides import key_of

RECORD = (".hydra", "run.log")  # what a command writes into its run folder before any result


def contents(folder: Path) -> list[str]:
    """Names in `folder` other than the run's own record (.hydra/, run.log)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name not in RECORD)
    except OSError:
        return []


def plan_run_dir(cfg, overrides: list[str], overwrite: bool) -> Path:
    """The run folder for this command: hydra.run.dir, refused when it already holds files (unless `overwrite`);
    a dated default folder taken in the same second gets a suffix instead."""
    if str(cfg.hydra.run.dir).strip() in ("", "None"):
        raise SiamrecError("hydra.run.dir is empty: name the folder for this run, e.g. hydra.run.dir=outputs/my-run")
    run_dir = Path(str(cfg.hydra.run.dir)).expanduser()
    explicit = any(key_of(o) == "hydra.run.dir" for o in overrides)
    if run_dir.exists() and not run_dir.is_dir():
        raise SiamrecError(f"hydra.run.dir={run_dir}: is a file, not a folder; choose a new folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not explicit:  # two runs in the same second: keep both
            return run_dir.with_name(f"{run_dir.name}-{datetime.now():%f}")
        if not overwrite:
            shown = ", ".join(contents(run_dir)[:4]) or ".hydra/"
            raise SiamrecError(f"hydra.run.dir={run_dir} already holds a run ({shown}); nothing was changed. "
                               "Choose a new folder, or add overwrite=true to write into it")
    return run_dir


def make_run_dir(run_dir: Path, job_cfg, overrides: list[str]) -> Path:
    """Create the run folder and record the config there (.hydra/)."""
    from omegaconf import OmegaConf

    from siamrec.errors import disk_errno_codes
    from siamrec.runs import atomic_write_text, disk_reason, unmark_finished

    try:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = disk_reason(exc) if exc.errno in disk_errno_codes() else (exc.strerror or str(exc))
        raise SiamrecError(f"hydra.run.dir={run_dir}: cannot make the run folder ({reason}); "
                           "choose a folder you can write to") from None
    unmark_finished(run_dir)  # overwrite=true: the folder is no finished run until this command finishes
    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(job_cfg))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return run_dir


def missing_parents(run_dir: Path) -> list[Path]:
    """The folders above `run_dir` that do not exist yet (the deepest first): making the run folder makes them
    (outputs/, outputs/DATE/), and removing it removes those left empty."""
    return [p for p in run_dir.parents if not p.exists()]


def _remove(run_dir: Path, parents: list[Path]) -> bool:
    """Remove `run_dir`, then those of `parents` (the folders its making made) it leaves empty; True if removed."""
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in parents:
        try:
            parent.rmdir()  # only when empty: another run made there since is kept, and so is its folder
        except OSError:
            break
    return not run_dir.exists()


def remove_if_empty(run_dir: Path | None, parents: list[Path] = ()) -> bool:
    """Remove a run folder this command created (and the `parents` it made, if left empty) when it holds nothing
    but its record; True if removed."""
    if run_dir is None or not run_dir.is_dir() or contents(run_dir):
        return False
    return _remove(run_dir, list(parents))


def remove_if_unused(run_dir: Path, parents: list[Path] = ()) -> bool:
    """Remove a run folder that holds nothing but its .hydra/ record (not even a run.log: a log of library
    chatter is kept with its folder), and the `parents` it made if left empty; True if removed."""
    try:
        unused = run_dir.is_dir() and all(p.name == ".hydra" for p in run_dir.iterdir())
    except OSError:
        return False
    return unused and _remove(run_dir, list(parents))
