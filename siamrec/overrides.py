"""The command line's words: which are settings (Hydra overrides) and which are songs or files, the commands' short
keys, `--config-dir` folders, and what a run folder's recorded settings carry over to a command given run=RUN."""

from __future__ import annotations

import re
from pathlib import Path

from siamrec.errors import SiamrecError, first_line

# An argument is a setting when it starts like a Hydra override (key=..., +key=..., ~key); anything else (a song
# name with spaces, quotes, parentheses, '=' inside, any script) is a positional argument.
_OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_.\-@/]*(=|$)")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
# Hydra's grammar reads letters of other scripts (Gurmukhi, Devanagari, é) only inside quotes; a value holding them and
# none of the grammar's own characters is passed quoted, which is the same string (data.root=~/ਸੰਗੀਤ as typed).
_GRAMMAR_CHARS = set("'\"\\[]{}(),=$")


def is_override(arg: str) -> bool:
    return bool(_OVERRIDE.match(arg)) and ("=" in arg or arg.startswith("~"))


def split_args(command: str, args: list[str], aliases: dict) -> tuple[list[str], list[str], dict]:
    """Split args into Hydra overrides, positional arguments and the CLI's own flags (overwrite=...), applying
    the command's short keys. `recommend seed=SONG` (not a [list]) is taken as a positional seed, so a song name
    never meets Hydra's override grammar; so is, for recommend and tag, a `name=...` whose name is no setting."""
    from siamrec.schema import SCHEMA

    overrides, positional, flags = [], [], {}
    roots = {*SCHEMA, *aliases, "overwrite", "experiment", "study"}
    args = list(args)
    if command == "recommend":  # --relative-to DIR (or --relative-to=DIR): M3U8 paths relative to DIR
        for i, arg in enumerate(args):
            if arg == "--relative-to" or arg.startswith("--relative-to="):
                value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
                if not value:
                    raise SiamrecError("--relative-to needs a folder: --relative-to ~/Music")
                flags["relative_to"] = value
                del args[i:i + (1 if "=" in arg else 2)]
                break
    for arg in args:
        if not is_override(arg) or (command in ("recommend", "tag") and key_of(arg).split(".")[0] not in roots):
            positional.append(arg)  # recommend, tag: 'E=mc2.mp3' names a song, not a setting
            continue
        key, value = arg.split("=", 1) if "=" in arg else (arg, "")
        if key.lstrip("+") == "overwrite":
            if value.strip().lower() not in _TRUE + _FALSE:
                raise SiamrecError(f"overwrite={value!r}: must be true or false")
            flags["overwrite"] = value.strip().lower() in _TRUE
            continue
        is_list = value.strip().startswith("[") and value.strip().endswith("]")
        if command == "recommend" and key == "seed" and not is_list:
            positional.append(unquote(value))
            continue
        if command == "recommend" and key in ("to", "recommend.to"):  # a song name, outside Hydra's grammar
            flags["to"] = value
            continue
        if not value.isascii() and not _GRAMMAR_CHARS.intersection(value):
            overrides.append(f"{aliases.get(key, key)}='{value}'")
        else:
            overrides.append(f"{aliases[key]}={value}" if key in aliases else arg)
    return overrides, positional, flags


def take_config_dirs(args: list[str]) -> tuple[list[str], list[str] | None]:
    """Take `--config-dir DIR` / `--config-dir=DIR` (repeatable) out of args: folders of the user's own configs,
    searched after the shipped ones. None when a --config-dir names no folder."""
    rest, dirs = [], []
    it = iter(args)
    for arg in it:
        if arg == "--config-dir":
            arg = "--config-dir=" + next(it, "")
        if arg.startswith("--config-dir="):
            folder = arg.split("=", 1)[1]
            if not folder:
                return rest, None
            dirs.append(folder)
        else:
            rest.append(arg)
    return rest, dirs


def with_search_path(overrides: list[str], dirs: list[str]) -> list[str]:
    """`--config-dir` folders as Hydra's search path (after any hydra.searchpath the command line gives)."""
    if not dirs:
        return overrides
    for folder in dirs:
        if not Path(folder).expanduser().is_dir():
            raise SiamrecError(f"--config-dir {folder}: no such folder; name a folder of your own config groups")
    given = next((o for o in overrides if key_of(o) == "hydra.searchpath"), None)
    paths = [] if given is None else [p.strip() for p in given.split("=", 1)[1].strip().strip("[]").split(",") if p.strip()]
    paths += [f"file://{Path(folder).expanduser().resolve()}" for folder in dirs]
    return [o for o in overrides if o is not given] + [f"hydra.searchpath=[{','.join(paths)}]"]


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# What a run folder's recorded overrides may carry over to a command given run=RUN: only what defines the model
# (its data source, split, model, backbone, features and clip settings, and the seed the split was drawn with).
# Never an output location, a path setting, hydra.*, overwrite or another command's settings: a run folder is
# data, not commands.
CARRIED = ("data", "split", "model", "backbone", "features", "clip", "seed", "experiment")


def with_run_overrides(overrides: list[str]) -> list[str]:
    """For commands given run=RUN: the run's own model-defining overrides first, then these (which win), so the
    run's data, split, model and backbone carry over unless the command line says otherwise."""
    run = next((o.split("=", 1)[1] for o in overrides if key_of(o) == "run"), None)
    saved = Path(str(run)).expanduser() / ".hydra" / "overrides.yaml" if run else None
    if saved is None or not saved.is_file():
        return overrides
    from omegaconf import OmegaConf

    try:
        old = OmegaConf.to_container(OmegaConf.load(saved))
    except Exception as exc:  # noqa: BLE001 - a damaged record: say which file
        raise SiamrecError(f"run={run}: {saved} is not readable YAML ({first_line(exc)}); "
                           "restore it or delete it to use the command line's settings only") from None
    if not isinstance(old, list) or not all(isinstance(o, str) for o in old):
        raise SiamrecError(f"run={run}: {saved} is not a list of settings; restore it or delete it")
    from siamrec.trust import check_carried_override

    for o in old:
        check_carried_override(o, f"run={run}: {saved}")
    new_keys = {key_of(o) for o in overrides}
    kept = [o for o in old if not any(key_of(o) == k or key_of(o).startswith(k + ".") for k in new_keys)
            and key_of(o).split(".", 1)[0].split("@", 1)[0] in CARRIED]
    return kept + overrides


def escape(text: str) -> str:
    """A string stored in the config as itself (OmegaConf would read '${...}' as an interpolation)."""
    return text.replace("${", "\\${")


def unquote(value: str) -> str:
    """A value quoted for Hydra's grammar ('my song (live), part 2.wav', "Don't.mp3", 'Don\\'t.mp3') as the name it
    quotes (backslashes before a quote, or before the closing quote, are Hydra's escapes); anything else as it is."""
    v = value.strip()
    if len(v) < 2 or v[0] != v[-1] or v[0] not in "'\"":
        return value
    quote = v[0]
    return re.sub(r"(\\+)(" + quote + r"|$)", lambda m: "\\" * (len(m.group(1)) // 2) + m.group(2), v[1:-1])
