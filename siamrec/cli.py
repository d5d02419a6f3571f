"""Command line: `python -m siamrec COMMAND [hydra overrides] [songs or files]`.

Thin by design: it composes the Hydra config from conf/, validates all of it against siamrec.schema (before
anything heavy is imported or any folder made), makes the run folder (with its .hydra/ record), seeds everything,
calls the pure command function `fn(cfg, run_dir)` with library chatter sent to the run's `run.log`, and prints
the run folder as its last line.

Exit codes: 0 done; 2 a bad command line or setting (nothing was done); 1 a problem with an input or a file
(SiamrecError, a full or read-only disk); 130 interrupted. Every one of them is one line on stderr, no traceback.
A command never writes into a folder that already holds a run unless given `overwrite=true`, and a command that
fails before writing any result removes the run folder it made. Positional arguments are seed songs (recommend)
or audio files (tag), passed to the command as they are, outside Hydra's override grammar.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from datetime import datetime
from pathlib import Path

# Keep TensorFlow's start-up chatter out of the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from siamrec.errors import SiamrecError  # noqa: E402

from siamrec.configs import CONF_DIR  # noqa: E402

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

# Settings a command uses unless the command line says otherwise.
COMMAND_DEFAULTS = {"tag": ["backbone=choi2017_keras2"]}  # the Keras 2 release's tags are the plausible ones

# Commands that read an earlier run (run=RUN) and take its model-defining settings from it.
RUN_COMMANDS = ("evaluate", "recommend", "plot", "extract", "serve")

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
        "Songs may be named as they are: python -m siamrec recommend run=RUN \"ਮਿੱਟੀ ਦਾ ਬਾਵਾ (Live).mp3\"",
        "A command never writes into a folder that already holds a run unless given overwrite=true.",
        "Show the composed config of a command without running it: python -m siamrec COMMAND --cfg",
    ]
    return "\n".join(lines)


# An argument is a setting when it starts like a Hydra override (key=..., +key=..., ~key); anything else (a song
# name with spaces, quotes, parentheses, '=' inside, any script) is a positional argument.
_OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_.\-@/]*(=|$)")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _is_override(arg: str) -> bool:
    return bool(_OVERRIDE.match(arg)) and ("=" in arg or arg.startswith("~"))


def _rewrite(command: str, args: list[str]) -> tuple[list[str], list[str], dict]:
    """Split args into Hydra overrides, positional arguments and the CLI's own flags (overwrite=...), applying
    the command's short keys. `recommend seed=SONG` (not a [list]) is taken as a positional seed, so a song name
    never meets Hydra's override grammar; so is, for recommend and tag, a `name=...` whose name is no setting."""
    from siamrec.schema import SCHEMA

    overrides, positional, flags = [], [], {}
    aliases = ALIASES.get(command, {})
    roots = {*SCHEMA, *aliases, "overwrite", "experiment", "study"}
    for arg in args:
        if not _is_override(arg) or (command in ("recommend", "tag") and _key(arg).split(".")[0] not in roots):
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
            positional.append(_unquote(value))
            continue
        overrides.append(f"{aliases[key]}={value}" if key in aliases else arg)
    return overrides, positional, flags


def _unquote(value: str) -> str:
    """A value quoted for Hydra's grammar ('my song (live), part 2.wav', "Don't.mp3", 'Don\\'t.mp3') as the name it
    quotes (backslashes before a quote, or before the closing quote, are Hydra's escapes); anything else as it is."""
    v = value.strip()
    if len(v) < 2 or v[0] != v[-1] or v[0] not in "'\"":
        return value
    quote = v[0]
    return re.sub(r"(\\+)(" + quote + r"|$)", lambda m: "\\" * (len(m.group(1)) // 2) + m.group(2), v[1:-1])


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# What a run folder's recorded overrides may carry over to a command given run=RUN: only what defines the model
# (its data source, split, model, backbone, features and clip settings, and the seed the split was drawn with).
# Never an output location, a path setting, hydra.*, overwrite or another command's settings: a run folder is
# data, not commands.
CARRIED = ("data", "split", "model", "backbone", "features", "clip", "seed", "experiment")


def with_run_overrides(overrides: list[str]) -> list[str]:
    """For commands given run=RUN: the run's own model-defining overrides first, then these (which win), so the
    run's data, split, model and backbone carry over unless the command line says otherwise."""
    run = next((o.split("=", 1)[1] for o in overrides if _key(o) == "run"), None)
    saved = Path(str(run)).expanduser() / ".hydra" / "overrides.yaml" if run else None
    if saved is None or not saved.is_file():
        return overrides
    from omegaconf import OmegaConf

    try:
        old = OmegaConf.to_container(OmegaConf.load(saved))
    except Exception as exc:  # noqa: BLE001 - a damaged record: say which file
        raise SiamrecError(f"run={run}: {saved} is not readable YAML ({_first_line(exc)}); "
                           "restore it or delete it to use the command line's settings only") from None
    if not isinstance(old, list) or not all(isinstance(o, str) for o in old):
        raise SiamrecError(f"run={run}: {saved} is not a list of settings; restore it or delete it")
    from siamrec.trust import check_carried_override

    for o in old:
        check_carried_override(o, f"run={run}: {saved}")
    new_keys = {_key(o) for o in overrides}
    kept = [o for o in old if not any(_key(o) == k or _key(o).startswith(k + ".") for k in new_keys)
            and _key(o).split(".", 1)[0].split("@", 1)[0] in CARRIED]
    return kept + overrides


def compose(command: str, overrides: list[str]):
    """The composed config (hydra node included) for `command` with `overrides`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    setup_globals()
    GlobalHydra.instance().clear()
    from siamrec.trust import add_config_dirs

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=command):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    add_config_dirs(cfg.hydra.searchpath or [])  # the user's own config folders: their components are trusted
    return cfg


RECORD = (".hydra", "run.log")  # what a command writes into its run folder before any result


def _contents(folder: Path) -> list[str]:
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
    explicit = any(_key(o) == "hydra.run.dir" for o in overrides)
    if run_dir.exists() and not run_dir.is_dir():
        raise SiamrecError(f"hydra.run.dir={run_dir}: is a file, not a folder; choose a new folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not explicit:  # two runs in the same second: keep both
            return run_dir.with_name(f"{run_dir.name}-{datetime.now():%f}")
        if not overwrite:
            shown = ", ".join(_contents(run_dir)[:4]) or ".hydra/"
            raise SiamrecError(f"hydra.run.dir={run_dir} already holds a run ({shown}); nothing was changed. "
                               "Choose a new folder, or add overwrite=true to write into it")
    return run_dir


def make_run_dir(run_dir: Path, job_cfg, overrides: list[str]) -> Path:
    """Create the run folder and record the config there (.hydra/)."""
    from omegaconf import OmegaConf

    from siamrec.runs import atomic_write_text, disk_reason, unmark_finished

    try:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = disk_reason(exc) if exc.errno in _DISK_ERRNO_CODES() else (exc.strerror or str(exc))
        raise SiamrecError(f"hydra.run.dir={run_dir}: cannot make the run folder ({reason}); "
                           "choose a folder you can write to") from None
    unmark_finished(run_dir)  # overwrite=true: the folder is no finished run until this command finishes
    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(job_cfg))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    return run_dir


def remove_if_empty(run_dir: Path | None) -> bool:
    """Remove a run folder this command created when it holds nothing but its record; True if removed."""
    import shutil

    if run_dir is None or not run_dir.is_dir() or _contents(run_dir):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


class _QuietHandler(logging.StreamHandler):
    """A logging handler on run.log that drops a record it cannot write (a full disk) instead of printing
    logging's "--- Logging error ---" traceback: the next result file the command writes says the disk is full."""

    def handleError(self, record):  # noqa: N802
        pass


class RunLog:
    """Library chatter goes to `run.log` in the run folder, not to the terminal: Python warnings (librosa's
    FutureWarnings, Keras', ...), logging records (TensorFlow's retracing warnings, absl) and, when stderr is
    the process's real stderr, whatever is written to file descriptor 2 (TensorFlow's C++ log, decoders,
    decoding worker processes). siamrec's own messages and progress bars still reach the terminal through
    sys.stderr, which is pointed at the original stderr meanwhile."""

    def __init__(self, path: Path):
        self.path = path
        self.saved_fd = None

    def __enter__(self):
        import logging

        self.file = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        self.handler = _QuietHandler(self.file)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self.root_level = root.level
        root.addHandler(self.handler)
        root.setLevel(min(root.level, logging.INFO))
        # loggers that write to the terminal themselves (TensorFlow adds its own stderr handler) go to the file
        self.silenced = []
        for name in ("tensorflow", "absl", "h5py", "numba", "jax"):
            logger = logging.getLogger(name)
            for h in list(logger.handlers):
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
                    logger.removeHandler(h)
                    self.silenced.append((logger, h))
        logging.captureWarnings(True)
        self.stderr = sys.stderr
        try:
            real = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            real = False
        if real:
            sys.stderr.flush()
            self.saved_fd = os.dup(2)
            sys.stderr = open(self.saved_fd, "w", buffering=1, encoding=self.stderr.encoding,
                              errors=self.stderr.errors, closefd=False)
            os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import logging

        if self.saved_fd is not None:
            sys.stderr.flush()
            os.dup2(self.saved_fd, 2)
            sys.stderr.close()
            os.close(self.saved_fd)
            sys.stderr = self.stderr
        logging.captureWarnings(False)
        for logger, h in self.silenced:
            logger.addHandler(h)
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.root_level)
        self.file.close()
        if self.path.is_file() and self.path.stat().st_size == 0:
            self.path.unlink()
        return False


def strip_hydra(cfg):
    """The job's config without the hydra node, interpolations resolved."""
    from omegaconf import OmegaConf

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def check_parts(job_cfg) -> None:
    """features.parts and each features.combine entry's parts name parts of their backbone (a non-empty list, or
    null for the backbone's default parts): checked against the bundle's class before any work. The bundle's
    module (Keras) is imported only when parts are given."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from siamrec.backbones.base import part_columns

    given = [("features.parts", job_cfg.get("backbone"), job_cfg.features.get("parts"))]
    for k, item in enumerate(job_cfg.features.get("combine") or []):
        yaml = CONF_DIR / "backbone" / f"{item['backbone']}.yaml"
        given.append((f"features.combine[{k}].parts", OmegaConf.load(yaml) if yaml.is_file() else None,
                      item.get("parts")))
    for key, backbone, parts in given:
        if parts is None or backbone is None or "_target_" not in backbone:
            continue
        try:
            cls = get_class(str(backbone._target_))
        except Exception:  # noqa: BLE001 - not a class: the command's make_bundle says what is wrong
            continue
        try:
            part_columns(cls.parts, list(parts), backbone.get("name") or cls.__name__)
        except SiamrecError as exc:
            raise SiamrecError(str(exc).replace("features.parts", key, 1) +
                               " (or null for its default parts)") from None


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


def _composition_error(exc: BaseException, overrides: list[str] = ()) -> str:
    """One line for a Hydra composition error: an unknown key gets the closest valid keys, an unknown group
    option the closest options."""
    import difflib
    import re as _re

    from siamrec.schema import unknown_key_message

    text = str(exc)
    m = _re.search(r"Could not override '([^']+)'\.\s*To append", text)
    if m:
        key = m.group(1)
        if key.startswith("model.") and not any(_key(o) == "model" for o in overrides):
            return (f"{key}: no model is chosen, so it has no settings; "
                    "put +model=baseline|siamese|lda|identity before it")
        return unknown_key_message(key)
    m = _re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if m and (CONF_DIR / m.group(1)).is_dir():
        group, name = m.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        near = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={near[0]}? " if near else ""
        return (f"{group}={name}: no such option ({'|'.join(options)}); {hint}"
                f"(config file {group}/{name}.yaml not found)")
    return f"bad setting: {_first_line(exc)}"


def _escape(text: str) -> str:
    """A string stored in the config as itself (OmegaConf would read '${...}' as an interpolation)."""
    return text.replace("${", "\\${")


def _interrupted(run_dir: Path | None, removed: bool, exc: BaseException) -> str:
    """What Ctrl-C leaves behind, where, and how to go on: one line."""
    hint = getattr(exc, "resume_hint", None)
    if run_dir is None or removed:
        return "interrupted before anything was written; nothing to keep" + (f"; {hint}" if hint else "")
    written = _contents(run_dir)
    shown = ", ".join(written[:5]) + (", ..." if len(written) > 5 else "")
    return (f"interrupted: the run is incomplete; the files written so far are kept in {run_dir} ({shown}); "
            + (hint or "run the command again (with a new run folder) to redo it"))


_DISK_ERRNOS = {"ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EFBIG"}


def _DISK_ERRNO_CODES() -> set[int]:  # noqa: N802
    import errno

    return {getattr(errno, name) for name in _DISK_ERRNOS if hasattr(errno, name)}


def _disk_error(exc: OSError) -> str | None:
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    if name not in _DISK_ERRNOS:
        return None
    where = exc.filename or "a file"
    what = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is used up", "EFBIG": "the file is too large"}.get(
        name, "permission denied (a read-only folder or disk?)")
    return f"cannot write {where}: {what}; free some space or choose a writable folder (hydra.run.dir=DIR)"


def _escaped(exc: UnicodeError):
    """Codec error handler: a character the terminal's encoding cannot take is written as an escape, so a file
    name never ends a command: a byte of a name that is not UTF-8 (a surrogate escape) as \\xNN, as in the run's
    files; anything else (Gurmukhi on an ASCII terminal) as \\uNNNN."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chunk = exc.object[exc.start:exc.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c.encode("ascii", "backslashreplace")
                   .decode("ascii") for c in chunk), exc.end


def _escape_unprintable_output() -> None:
    import codecs

    codecs.register_error("siamrec.escaped", _escaped)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="siamrec.escaped")
        except (AttributeError, ValueError, OSError):  # not a text stream of ours (a test's capture, a pipe wrapper)
            pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _escape_unprintable_output()
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

    def fail(message: str, code: int) -> int:
        # a file name that is not UTF-8 (surrogate escapes) is shown with its odd bytes as \xNN, never a crash
        line = f"siamrec {command}: {message}".encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        print(" ".join(line.split("\n")), file=sys.stderr)
        return code

    try:
        overrides, positional, flags = _rewrite(command, rest)
        if positional and command not in ("tag", "recommend"):
            return fail(f"unexpected argument '{positional[0]}'; settings are key=value", 2)
        if command in RUN_COMMANDS:
            overrides = with_run_overrides(overrides)
    except SiamrecError as exc:
        return fail(f"error: {exc}", 2)
    given = {_key(o) for o in overrides}
    overrides = [o for o in COMMAND_DEFAULTS.get(command, []) if _key(o) not in given] + overrides
    try:
        cfg = compose(command, overrides)
        job_cfg = strip_hydra(cfg)
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf composition errors: bad override, unknown option, ...
        return fail(_composition_error(exc, overrides), 2)
    if "overwrite" in flags or "overwrite" not in job_cfg:
        job_cfg.overwrite = bool(flags.get("overwrite", False))
    if command == "tag" and positional:
        job_cfg.tag.files = [_escape(p) for p in positional]
    if command == "recommend" and positional:
        given = job_cfg.recommend.get("seed")
        given = [] if given in (None, "") else [given] if isinstance(given, (str, int, float)) else list(given)
        job_cfg.recommend.seed = given + [_escape(p) for p in positional]
    if show_cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(job_cfg))
        return 0
    try:
        from siamrec.schema import validate

        validate(job_cfg)
        check_parts(job_cfg)
        run_dir = plan_run_dir(cfg, overrides, bool(job_cfg.overwrite))
    except SiamrecError as exc:
        return fail(f"error: {exc}", 2)

    created = not run_dir.exists()
    finished = False
    from siamrec.runs import take_closing_notes

    take_closing_notes()  # none left over from an earlier call in this process
    message, code = None, 0
    try:
        if command != "serve":  # the web app trains nothing; importing Keras to seed it would double its start-up
            seed_everything(job_cfg.seed)
        make_run_dir(run_dir, job_cfg, overrides)
        module = importlib.import_module(f"siamrec.commands.{COMMANDS[command][0]}")
        with RunLog(run_dir / "run.log"):
            result = getattr(module, command)(job_cfg, run_dir)
        finished = True
    except SiamrecError as exc:
        message, code = f"error: {exc}", 1
    except KeyboardInterrupt as exc:
        removed = created and remove_if_empty(run_dir)
        message, code = _interrupted(run_dir if run_dir.is_dir() else None, removed, exc), 130
    except OSError as exc:
        disk = _disk_error(exc)
        if disk is None:
            raise
        message, code = f"error: {disk}", 1
    finally:
        if not finished and created:  # a failed command leaves no empty run folder behind
            remove_if_empty(run_dir)
    for note in take_closing_notes():  # e.g. why many files were skipped, where it cannot scroll away
        print(note)
    if message:
        return fail(message, code)
    print(result if isinstance(result, Path) else run_dir)  # where the outputs are, last
    return 0
