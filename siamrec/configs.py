"""Where the shipped configs are and how a command's config is composed from them.

The configs live in `conf/` at the top of the repository and travel inside the wheel as the package `siamrec.conf`
(pyproject.toml maps the folder into it), so an installed siamrec (`pip install siamrec-*.whl`, `pipx install .`)
finds them wherever it runs; they are read through importlib.resources in every install mode. A source checkout
run in place (its folder on PYTHONPATH, nothing installed) reads its own conf/. Users' own configs are added with
`--config-dir DIR` or `hydra.searchpath=[file://DIR]` (a group option there is chosen like a shipped one).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path


@lru_cache(maxsize=None)
def conf_dir() -> Path:
    """The folder of the shipped configs (config.yaml and its groups)."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    try:
        packaged = Path(str(resources.files("siamrec.conf")))
    except ModuleNotFoundError:  # a checkout on PYTHONPATH: siamrec.conf is not installed
        return checkout
    # a checkout on PYTHONPATH while another checkout is installed editable: this package's own configs
    if (checkout / "config.yaml").is_file() and packaged.resolve() != checkout:
        return checkout
    return packaged


_user_dirs: list[Path] = []  # config folders named on this command line (hydra.searchpath, --config-dir)


def add_config_dirs(dirs) -> None:
    """Note the user's own config folders (`file://DIR` entries of hydra.searchpath): their components are the
    user's own, which siamrec.trust lets a run folder name too."""
    for d in dirs:
        text = str(d)
        if text.startswith("pkg://"):
            continue  # a Python package's configs: siamrec trusts only folders the user named
        path = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
        if path.is_dir() and path not in _user_dirs:
            _user_dirs.append(path)


def config_dirs() -> list[Path]:
    """The shipped configs' folder and the user's own config folders named so far."""
    return [conf_dir(), *_user_dirs]


def group_options(group: str) -> list[str]:
    """The shipped options of a config group (conf/GROUP/*.yaml), sorted."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def component_choices(overrides: list[str]) -> list[str]:
    """Overrides with a component chosen by name at a nested key whose last part names a config group written as
    Hydra's group override: model.loss=multi_similarity is loss@model.loss=multi_similarity (conf/loss/...yaml),
    extract.engine=ray is engine@extract.engine=ray. Anything else is left as it is."""
    out = []
    for override in overrides:
        key, eq, value = override.partition("=")
        node, _, last = key.rpartition(".")
        chosen = (eq and node and key[:1].isalpha() and "@" not in key and not key.startswith("hydra.")
                  and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", value.strip()) and (conf_dir() / last).is_dir())
        out.append(f"{last}@{override}" if chosen else override)
    return out


def compose(job_name: str, overrides: list[str], return_hydra_config: bool = True):
    """The composed config of the shipped configs with `overrides` (the hydra node included unless told; a
    component may be chosen by name, see component_choices)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    setup_globals()
    was = GlobalHydra.instance().is_initialized()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=job_name):
            cfg = hydra_compose(config_name="config", overrides=component_choices(overrides), return_hydra_config=True)
        add_config_dirs(cfg.hydra.searchpath or [])  # the user's own config folders: their components are trusted
        if return_hydra_config:
            return cfg
        from omegaconf import OmegaConf

        return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    finally:
        if not was:
            GlobalHydra.instance().clear()


def build(node, key: str):
    """The component a config node describes (its `_target_` built with its settings by hydra.utils.instantiate);
    a failure is one SiamrecError line naming `key` (the constructor's own SiamrecError passes as it is)."""
    from hydra.utils import instantiate

    from siamrec.errors import SiamrecError

    target = node.get("_target_") if hasattr(node, "get") else None
    if target is None:
        raise SiamrecError(f"{key}={node!r}: not a component (no _target_); choose one of {group_options(key.split('.')[-1])}")
    try:
        return instantiate(node, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - hydra wraps whatever the constructor raised
        cause = exc.__cause__ or exc
        if isinstance(cause, SiamrecError):
            raise cause from None
        raise SiamrecError(f"{key}: cannot build {target} ({' '.join(str(cause).split())})") from None


def construct(node, group: str, selector: str, base: type, what: str):
    """The `base` subclass a config node of `group` names by `_target_`, called with the node's settings: every key
    but `_target_` and `selector` (which names the option, e.g. data.source). Unlike `build`, a mandatory value not
    given (???) reaches the constructor as None, so the component itself says which setting to pass. A class that
    is not a `what`, or settings its constructor does not take, are one SiamrecError line."""
    from hydra.utils import get_class

    from siamrec.errors import SiamrecError

    option, target = node.get(selector), node.get("_target_")
    try:
        cls = get_class(str(target))
    except Exception:  # noqa: BLE001 - a hand-written config naming nothing importable
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise SiamrecError(f"{group}.{selector}={option!r} ({group}._target_={target!r}): not {what}; choose "
                           f"{group}={'|'.join(group_options(group))}")
    try:
        return cls(**{k: node.get(k) for k in node if k not in ("_target_", selector)})
    except TypeError as exc:  # settings its constructor does not take
        raise SiamrecError(f"{group}={option}: {' '.join(str(exc).split())}") from None


def strip_hydra(cfg):
    """The job's config without the hydra node, interpolations resolved."""
    from omegaconf import OmegaConf

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))
