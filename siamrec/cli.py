"""Command line: `python -m siamrec COMMAND [hydra overrides]`.

Thin by design: it composes the Hydra config from conf/, makes the run folder (with its .hydra/ record),
seeds everything, calls the pure command function `fn(cfg, run_dir)` and prints the run folder as its last
line. User errors (SiamrecError) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import os
import sys
from datetime import datetime
from pathlib import Path

# Keep TensorFlow's start-up chatter out of the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from siamrec.errors import SiamrecError  # noqa: E402

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# command -> (module in siamrec.commands, one-line help)
COMMANDS = {
    "train": ("train", "train a model (+model=baseline|siamese|lda|identity), embed the library, score it"),
    "evaluate": ("evaluate", "score embeddings by MAP & co. (+model=identity on data, run=RUN, or runs=[...])"),
    "recommend": ("recommend", "playlists: recommend run=RUN seed=SONG k=10 (seed may be a new song)"),
    "extract": ("extract", "embed a whole library with a run's model into a feature store"),
    "plot": ("plot", "t-SNE/PCA pictures and training curves of a run: plot run=RUN"),
    "tag": ("tag", "tag FILE...: the pretrained MSD tagger's top tags for each song"),
    "serve": ("serve", "a local web app to browse, hear and export playlists: serve run=RUN [port=8000]"),
}

# Short keys a command accepts, rewritten to their place in the config.
ALIASES = {
    "recommend": {"seed": "recommend.seed", "k": "recommend.k", "out": "recommend.out"},
    "tag": {"top": "tag.top"},
    "serve": {"host": "serve.host", "port": "serve.port"},
}


def usage() -> str:
    lines = ["usage: python -m siamrec COMMAND [key=value ...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "Overrides are Hydra's: data=folder data.root=DIR, +model=siamese, seed=1, hydra.run.dir=DIR, ...",
        "Show the composed config of a command without running it: python -m siamrec COMMAND --cfg",
    ]
    return "\n".join(lines)


def _rewrite(command: str, args: list[str]) -> tuple[list[str], list[str]]:
    """Split args into Hydra overrides and positional arguments, applying the command's short keys."""
    overrides, positional = [], []
    aliases = ALIASES.get(command, {})
    for arg in args:
        if "=" not in arg:
            positional.append(arg)
            continue
        key, value = arg.split("=", 1)
        overrides.append(f"{aliases[key]}={value}" if key in aliases else arg)
    return overrides, positional


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def with_run_overrides(overrides: list[str]) -> list[str]:
    """For commands given run=RUN: the run's own overrides first, then these (which win), so the run's data,
    split, model and backbone carry over unless the command line says otherwise."""
    run = next((o.split("=", 1)[1] for o in overrides if _key(o) == "run"), None)
    saved = Path(str(run)).expanduser() / ".hydra" / "overrides.yaml" if run else None
    if saved is None or not saved.is_file():
        return overrides
    from omegaconf import OmegaConf

    new_keys = {_key(o) for o in overrides}
    old = [str(o) for o in OmegaConf.load(saved)]
    kept = [o for o in old if not any(_key(o) == k or _key(o).startswith(k + ".") for k in new_keys)
            and not _key(o).startswith("hydra.") and _key(o) not in ("run", "runs")]
    return kept + overrides


def compose(command: str, overrides: list[str]):
    """The composed config (hydra node included) for `command` with `overrides`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    setup_globals()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=command):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


def make_run_dir(cfg, overrides: list[str]) -> Path:
    """Create the run folder named by hydra.run.dir and record the config there (.hydra/)."""
    from omegaconf import OmegaConf

    run_dir = Path(str(cfg.hydra.run.dir))
    if run_dir.exists() and any(run_dir.iterdir()) and not any(o.startswith("hydra.run.dir=") for o in overrides):
        # two runs in the same second: keep both
        run_dir = run_dir.with_name(f"{run_dir.name}-{datetime.now():%f}")
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    job_cfg = strip_hydra(cfg)
    from siamrec.runs import atomic_write_text

    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(job_cfg))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return run_dir


def strip_hydra(cfg):
    """The job's config without the hydra node, interpolations resolved."""
    from omegaconf import OmegaConf

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def seed_everything(seed) -> None:
    """Seed Python, NumPy and TensorFlow (through Keras, which seeds all three)."""
    import keras

    if not isinstance(seed, int):
        raise SiamrecError(f"seed={seed!r}: must be an integer")
    keras.utils.set_random_seed(seed)


def _first_line(exc: BaseException) -> str:
    """The gist of a (possibly chained, multi-line) Hydra/OmegaConf error, on one line."""
    while not str(exc).strip() and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("Config search path") or line.strip().startswith("full_key"):
            break
        if line.strip():
            lines.append(line.strip())
    return (" ".join(lines)[:400] if lines else type(exc).__name__).replace(":;", ":")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"siamrec: unknown command '{command}'; choose one of: {', '.join(COMMANDS)} (see --help)", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(f"{command}: {COMMANDS[command][1]}\nSee its options with: python -m siamrec {command} --cfg")
        return 0
    show_cfg = "--cfg" in rest
    rest = [a for a in rest if a != "--cfg"]
    overrides, positional = _rewrite(command, rest)
    if positional and command != "tag":
        print(f"siamrec {command}: unexpected argument '{positional[0]}'; settings are key=value", file=sys.stderr)
        return 2
    if command in ("evaluate", "recommend", "plot", "extract", "serve"):
        overrides = with_run_overrides(overrides)
    try:
        cfg = compose(command, overrides)
        if command == "tag":
            cfg.tag.files = positional or list(cfg.tag.files)
        job_cfg = strip_hydra(cfg)
    except Exception as exc:  # Hydra/OmegaConf composition errors: bad override, unknown group option, ...
        print(f"siamrec {command}: bad setting: {_first_line(exc)}", file=sys.stderr)
        return 2
    if show_cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(job_cfg))
        return 0
    run_dir = None
    try:
        from siamrec.pipeline import check_clip

        check_clip(job_cfg.clip)
        if command != "serve":  # the web app trains nothing; importing Keras to seed it would double its start-up
            seed_everything(job_cfg.seed)
        run_dir = make_run_dir(cfg, overrides)
        module = importlib.import_module(f"siamrec.commands.{COMMANDS[command][0]}")
        getattr(module, command)(job_cfg, run_dir)
    except SiamrecError as exc:
        print(f"siamrec {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = f"; finished work is kept in {run_dir}" if run_dir else ""
        print(f"siamrec {command}: interrupted{where}", file=sys.stderr)
        return 130
    print(run_dir)
    return 0
