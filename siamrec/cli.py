"""Command line: `python -m siamrec COMMAND [hydra overrides] [songs or files]`.

Thin by design: it reads the command line (siamrec.overrides), composes the config from the shipped configs
(siamrec.configs; --config-dir adds the user's own), validates all of it against siamrec.schema (before anything
heavy is imported or any folder made), makes the run folder (siamrec.run_folder, with its .hydra/ record), seeds
everything, calls the pure command function `fn(cfg, run_dir)` with library chatter sent to the run's `run.log`
(siamrec.runlog), and prints the run folder as its last line; a failure is one line (siamrec.messages).

Exit codes: 0 done; 2 a bad command line or setting (nothing was done); 1 a problem with an input or a file
(SiamrecError, a full or read-only disk); 130 interrupted. Every one of them is one line on stderr, no traceback.
A command never writes into a folder that already holds a run unless given `overwrite=true`, and a command that
fails before writing any result, or writes nothing there (serve, recommend out=FILE), removes the run folder it made. Positional arguments are seed songs (recommend)
or audio files (tag), passed to the command as they are, outside Hydra's override grammar.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# Keep TensorFlow's start-up chatter out of the user's terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN kernels on every x86 CPU (TensorFlow turns them on by default only where AVX512-VNNI/AMX exist): measured
# 7.6 → 3.7 CPU-s per 4-min song for musicnn on a CPU without them, outputs within 8.4e-6 (issue 18)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from siamrec.configs import compose, strip_hydra  # noqa: E402
from siamrec.errors import SiamrecError  # noqa: E402
from siamrec.heap import return_freed_memory  # noqa: E402
from siamrec.messages import composition_error, disk_error, interrupted  # noqa: E402
from siamrec.overrides import escape, split_args, take_config_dirs, with_run_overrides, with_search_path  # noqa: E402
from siamrec.run_folder import (make_run_dir, missing_parents, plan_run_dir, remove_if_empty,  # noqa: E402
                                remove_if_unused)
from siamrec.runlog import RunLog  # noqa: E402

# from the first allocation on, large freed blocks go back to the system (siamrec.heap: flat memory over a library)
return_freed_memory()

# command -> (module in siamrec.commands, one-line help)
COMMANDS = {
    "train": ("train", "train a model (+model=baseline|siamese|lda|identity), embed the library, score it"),
    "evaluate": ("evaluate", "score embeddings by MAP & co. (+model=identity on data, run=RUN, or runs=[...])"),
    "recommend": ("recommend", "playlists: recommend run=RUN seed=SONG k=10 (seed may be a new song)"),
    "extract": ("extract", "embed a whole library with a run's model into a feature store"),
    "plot": ("plot", "t-SNE/PCA pictures and training curves of a run: plot run=RUN"),
    "tag": ("tag", "tag FILE...: the pretrained MSD tagger's top tags for each song"),
    "serve": ("serve", "a local web app to browse, hear and export playlists: serve run=RUN [port=8000]"),
    "mpd": ("mpd", "keep an MPD queue going with similar songs: mpd run=RUN [host=localhost port=6600 once=true]"),
}

# Commands that read an earlier run (run=RUN) and take its model-defining settings from it.
RUN_COMMANDS = ("evaluate", "recommend", "plot", "extract", "serve", "mpd")

# Short keys a command accepts, rewritten to their place in the config.
ALIASES = {
    "recommend": {"seed": "recommend.seed", "k": "recommend.k", "out": "recommend.out", "to": "recommend.to",
                  "rules": "recommend.rules"},
    "tag": {"top": "tag.top"},
    "serve": {"host": "serve.host", "port": "serve.port"},
    "mpd": {"host": "mpd.host", "port": "mpd.port", "once": "mpd.once", "k": "recommend.k"},
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
        "Your own configs (e.g. backbone/mine.yaml): python -m siamrec COMMAND --config-dir DIR backbone=mine",
    ]
    return "\n".join(lines)


def seed_everything(seed) -> None:
    """Seed Python, NumPy and TensorFlow (through Keras, which seeds all three)."""
    import keras

    if not isinstance(seed, int):
        raise SiamrecError(f"seed={seed!r}: must be an integer")
    keras.utils.set_random_seed(seed)


def check_parts(job_cfg) -> None:
    """features.parts and the parts of each features.combine and model.inputs entry name parts of their backbone
    (a non-empty list, or null for the backbone's default parts): checked against the bundle's class before any
    work. The bundle's module (Keras) is imported only when parts are given."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from siamrec.backbones.base import part_columns
    from siamrec.configs import conf_dir

    given = [("features.parts", job_cfg.get("backbone"), job_cfg.features.get("parts"))]
    entries = [(f"features.combine[{k}]", item) for k, item in enumerate(job_cfg.features.get("combine") or [])]
    model = job_cfg.get("model") or {}
    entries += [(f"model.inputs[{i}][{k}]", item) for i, entry in enumerate(model.get("inputs") or [])
                for k, item in enumerate(entry or [])]
    for key, item in entries:
        if not hasattr(item, "get") or "backbone" not in item:
            continue  # the schema says what is wrong with it
        yaml = conf_dir() / "backbone" / f"{item['backbone']}.yaml"
        given.append((f"{key}.parts", OmegaConf.load(yaml) if yaml.is_file() else None, item.get("parts")))
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
    if show_cfg:  # Hydra's spelling `--cfg job` is accepted too (the job's config is what --cfg shows)
        at = rest.index("--cfg")
        rest = rest[:at] + rest[at + 1:][rest[at + 1:at + 2] == ["job"]:]
    rest = [a for a in rest if a != "--cfg"]
    rest, config_dirs = take_config_dirs(rest)

    def fail(message: str, code: int) -> int:
        # a file name that is not UTF-8 (surrogate escapes) is shown with its odd bytes as \xNN, never a crash
        line = f"siamrec {command}: {message}".encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        print(" ".join(line.split("\n")), file=sys.stderr)
        return code

    if config_dirs is None:
        return fail("error: --config-dir needs a folder: --config-dir DIR (a folder of your own config groups)", 2)
    try:
        overrides, positional, flags = split_args(command, rest, ALIASES.get(command, {}))
        overrides = with_search_path(overrides, config_dirs)
        if positional and command not in ("tag", "recommend"):
            return fail(f"unexpected argument '{positional[0]}'; settings are key=value", 2)
        if command in RUN_COMMANDS:
            overrides = with_run_overrides(overrides)
    except SiamrecError as exc:
        return fail(f"error: {exc}", 2)
    try:
        cfg = compose(command, overrides)
        job_cfg = strip_hydra(cfg)
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf composition errors: bad override, unknown option, ...
        return fail(composition_error(exc, overrides), 2)
    if "overwrite" in flags or "overwrite" not in job_cfg:
        job_cfg.overwrite = bool(flags.get("overwrite", False))
    if command == "tag" and positional:
        job_cfg.tag.files = [escape(p) for p in positional]
    if command == "recommend" and positional:
        given = job_cfg.recommend.get("seed")
        given = [] if given in (None, "") else [given] if isinstance(given, (str, int, float)) else list(given)
        job_cfg.recommend.seed = given + [escape(p) for p in positional]
    if command == "recommend":
        for key in ("to", "relative_to"):
            if key in flags:
                job_cfg.recommend[key] = escape(flags[key])
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

    created, parents = not run_dir.exists(), missing_parents(run_dir)  # outputs/DATE/ too, when it is new
    finished = False
    from siamrec.runs import take_closing_notes

    take_closing_notes()  # none left over from an earlier call in this process
    message, code = None, 0
    try:
        if command not in ("serve", "mpd"):  # they train nothing; importing Keras to seed them would slow start-up
            seed_everything(job_cfg.seed)
        make_run_dir(run_dir, job_cfg, overrides)
        module = importlib.import_module(f"siamrec.commands.{COMMANDS[command][0]}")
        with RunLog(run_dir / "run.log"):
            result = getattr(module, command)(job_cfg, run_dir)
        finished = True
    except SiamrecError as exc:
        message, code = f"error: {exc}", 1
    except KeyboardInterrupt as exc:
        removed = created and remove_if_empty(run_dir, parents)
        message, code = interrupted(run_dir if run_dir.is_dir() else None, removed, exc), 130
    except OSError as exc:
        disk = disk_error(exc)
        if disk is None:
            raise
        message, code = f"error: {disk}", 1
    finally:
        if not finished and created:  # a failed command leaves no empty run folder behind
            remove_if_empty(run_dir, parents)
    for note in take_closing_notes():  # e.g. why many files were skipped, where it cannot scroll away
        print(note)
    if message:
        return fail(message, code)
    if created and remove_if_unused(run_dir, parents):  # serve, recommend out=FILE: nothing was written there
        if isinstance(result, Path):
            print(result)
        return 0
    print(result if isinstance(result, Path) else run_dir)  # where the outputs are, last
    return 0
