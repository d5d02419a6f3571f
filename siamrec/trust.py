"""What a run folder may name. A run folder is data: the components it names (a backbone bundle in
`extractor.json`, a head in `head.json`) are built only when their class is declared by the `_target_` of a YAML
file of siamrec's own configuration (`conf/`) or of a config folder the user named on the command line
(`hydra.searchpath=[file://DIR]`: a user's own plugins). Anything else is refused in one line before it is imported
or called. The settings a run folder carries over to a command (`.hydra/overrides.yaml`) may not name a class at
all (`_target_` and Hydra's other instantiation keys)."""

from __future__ import annotations

import re
from pathlib import Path

from siamrec.configs import CONF_DIR
from siamrec.errors import SiamrecError

# Hydra's instantiation keys: a config node holding one of them makes instantiate() import or call something.
INSTANTIATION_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
_TARGET_LINE = re.compile(r"^\s*_target_\s*:\s*['\"]?([A-Za-z_][\w.]*)['\"]?\s*(#.*)?$", re.M)

_user_dirs: list[Path] = []  # config folders named on this command line (hydra.searchpath)


def add_config_dirs(dirs) -> None:
    """Trust the components declared by the YAML of these config folders too (the user's own plugins)."""
    for d in dirs:
        text = str(d)
        for prefix in ("file://", "pkg://"):
            if text.startswith(prefix):
                if prefix == "pkg://":
                    break  # a Python package's configs: siamrec trusts only folders the user named
                text = text[len(prefix):]
        else:
            path = Path(text).expanduser()
            if path.is_dir() and path not in _user_dirs:
                _user_dirs.append(path)


def declared_targets() -> frozenset[str]:
    """Every class named by a `_target_` in siamrec's configs and the user's config folders."""
    found = set()
    for root in (CONF_DIR, *_user_dirs):
        for yaml in Path(root).rglob("*.yaml"):
            try:
                found.update(m.group(1) for m in _TARGET_LINE.finditer(yaml.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                continue
    return frozenset(found)


def check_component(spec, where: str) -> None:
    """Refuse a component config read from a run folder unless its `_target_` is declared (see the module
    docstring) and nothing nested in it names a class or a call."""
    if not isinstance(spec, dict):
        raise SiamrecError(f"{where}: is not a component's settings; the run folder is damaged or not siamrec's")
    target = spec.get("_target_")
    check_target(target, where)
    for key, value in spec.items():
        if key != "_target_" and key in INSTANTIATION_KEYS:
            raise SiamrecError(f"{where}: holds {key}, which siamrec never writes; refused (the run folder is not "
                               "siamrec's own: use only run folders from people you trust)")
        check_plain(value, f"{where}.{key}")


def check_target(target, where: str) -> str:
    if not isinstance(target, str) or target not in declared_targets():
        raise SiamrecError(
            f"{where}: names the class {str(target)[:120]!r}, which is none of siamrec's components; refused before "
            "anything was imported (a run folder may only name components of siamrec's configs, or of a config "
            "folder given with hydra.searchpath=[file://DIR])")
    return target


def check_plain(value, where: str) -> None:
    """Refuse settings read from a run folder that name a class or a call anywhere inside them."""
    if isinstance(value, dict):
        bad = INSTANTIATION_KEYS.intersection(value)
        if bad:
            raise SiamrecError(f"{where}: holds {sorted(bad)[0]}, which siamrec never writes there; refused (the run "
                               "folder is not siamrec's own: use only run folders from people you trust)")
        for k, v in value.items():
            check_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")


def check_carried_override(override: str, where: str) -> None:
    """A setting a run folder carries over may not name a class or a call (`data._target_=...`, `+model._args_=`)."""
    key = override.split("=", 1)[0].lstrip("+~")
    if any(part.split("@", 1)[0] in INSTANTIATION_KEYS for part in key.split(".")):
        raise SiamrecError(f"{where}: the setting {key!r} names a class to build; a run folder may not set one, so "
                           "it was refused before anything ran. Delete that line, or the run folder if it is not yours")
