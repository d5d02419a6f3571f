"""The configuration's schema: every key a command accepts, its type, range or allowed values.

`validate(cfg)` checks the whole composed (resolved, hydra-free) job config once, before any work: a wrong value
gives one line naming the key, the value and what is allowed; a key the schema does not know (a typo, or one
added with `+`) is rejected with the closest valid keys. The `model`, `data`, `split` and `index` groups are
checked against the schema of the chosen option (model.name, data.source, split.kind, index.kind). The
`backbone` node is free-form (each bundle has its own keys) and is not checked here.

Pure Python (no NumPy, no TensorFlow), so the CLI can validate before importing anything heavy.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

from siamrec.errors import SiamrecError

NOT_SET = "???"  # Hydra's mandatory-value marker: left to the command, which says what to pass


class Check:
    """A leaf: `ok(value)` and a description of what is allowed."""

    def __init__(self, ok, allowed: str):
        self.ok, self.allowed = ok, allowed


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


def _or_null(check: Check, null: bool) -> Check:
    if not null:
        return check
    return Check(lambda v: v is None or check.ok(v), f"{check.allowed} or null")


def integer(lo: int | None = None, hi: int | None = None, null: bool = False) -> Check:
    def ok(v):
        return _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)

    if lo is not None and hi is not None:
        text = f"an integer from {lo} to {hi}"
    else:
        text = "an integer" + (f" >= {lo}" if lo is not None else "") + (f" <= {hi}" if hi is not None else "")
    return _or_null(Check(ok, text), null)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           null: bool = False) -> Check:
    def ok(v):
        if not _is_num(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    if lo is not None and hi is not None:
        text = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        text = "a positive number" if (lo == 0 and lo_open) else f"a number {'>' if lo_open else '>='} {lo}"
    else:
        text = "a number"
    return _or_null(Check(ok, text), null)


def boolean() -> Check:
    return Check(lambda v: isinstance(v, bool), "true or false")


def string(null: bool = False) -> Check:
    return _or_null(Check(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty text"), null)


def path(null: bool = False) -> Check:
    """A file or folder name (Hydra parses a name like 2024 as a number: accepted too)."""
    ok = lambda v: (isinstance(v, str) and v.strip() != "") or _is_num(v)  # noqa: E731
    return _or_null(Check(ok, "a path"), null)


def choice(*options, null: bool = False) -> Check:
    return _or_null(Check(lambda v: isinstance(v, str) and v in options, "one of " + "|".join(options)), null)


def list_of(item: Check, min_len: int = 0, null: bool = False, what: str | None = None) -> Check:
    def ok(v):
        return (isinstance(v, Sequence) and not isinstance(v, str) and len(v) >= min_len
                and all(item.ok(x) for x in v))

    text = what or f"{'a non-empty' if min_len else 'a'} list, each {item.allowed}"
    return _or_null(Check(ok, text), null)


def anything() -> Check:
    return Check(lambda v: True, "anything")


def one_of(*checks: Check, allowed: str) -> Check:
    return Check(lambda v: any(c.ok(v) for c in checks), allowed)


def _offset_ok(v) -> bool:
    return v in ("start", "middle") or (_is_num(v) and v >= 0)


def _windows_ok(v) -> bool:
    if v in ("first", "all"):
        return True
    m = re.fullmatch(r"spread:(\d+)", str(v)) if isinstance(v, str) else None
    return bool(m) and int(m.group(1)) >= 1


class Free(dict):
    """A node whose keys are not checked (bundle-specific, or free-form parameters)."""


class Group:
    """A config group: the schema of the option named by `selector` (e.g. model.name)."""

    def __init__(self, selector: str, options: dict[str, dict]):
        self.selector, self.options = selector, options


FRACTION = number(0, 1, hi_open=True)
FAILED_FRACTION = number(0, 1)
LOSS_PARAMS = {  # the keyword parameters of each loss of siamrec.losses (tests/test_schema.py keeps them in step)
    "triplet_semihard": ("margin", "distance", "positive", "jaccard_threshold"),
    "triplet_hard": ("margin", "soft", "positive", "jaccard_threshold"),
    "contrastive": ("margin", "positive", "jaccard_threshold"),
    "multi_similarity": ("alpha", "beta", "base", "epsilon", "positive", "jaccard_threshold"),
}
PART_NAMES = list_of(string(), what="a list of the backbone's part names")


def _trainable_ok(v) -> bool:
    if isinstance(v, str):
        return v == "all" or (v.startswith("last:") and v[5:].isdigit())
    return isinstance(v, Sequence) and all(isinstance(g, str) for g in v)


TRAINABLE = Check(_trainable_ok, "all, last:N or a list of the backbone's layer groups (e.g. [block4, block5])")
COMBINE = list_of(Check(lambda v: isinstance(v, Mapping) and isinstance(v.get("backbone"), str)
                        and set(v) <= {"backbone", "parts"},
                        "{backbone: NAME, parts: [...]}"), what="a list of {backbone: NAME, parts: [...]}")

_MODEL_COMMON = {"name": choice("identity", "lda", "baseline", "siamese"), "train_on": choice("songs", "windows")}
MODELS = {
    "identity": {**_MODEL_COMMON},
    "lda": {**_MODEL_COMMON, "use_valid": boolean()},
    "baseline": {
        **_MODEL_COMMON,
        "trainable": TRAINABLE, "lr": number(0, lo_open=True), "momentum": FRACTION, "epochs": integer(1),
        "batch_size": integer(1), "patience": integer(0), "class_weight": boolean(),
        "threshold": number(0, 1, lo_open=True, hi_open=True), "hidden": integer(1), "dropout": FRACTION,
        "head_lr": number(0, lo_open=True), "head_epochs": integer(1), "head_batch_size": integer(1),
        "head_patience": integer(0),
    },
    "siamese": {
        **_MODEL_COMMON,
        "loss": choice(*LOSS_PARAMS), "loss_params": Free(), "whiten_eps": number(0, null=True),
        "hidden": list_of(integer(1), what="a list of layer widths (integers >= 1)"), "dim": integer(1),
        "branches": integer(1), "dropout": FRACTION, "lr": number(0, lo_open=True), "epochs": integer(1),
        "refit": boolean(), "classes_per_batch": integer(2), "m_per_class": integer(2), "seed": integer(0),
        "finetune_backbone": boolean(), "trainable": TRAINABLE, "backbone_lr": number(0, lo_open=True),
        "backbone_epochs": integer(1),
    },
}
_DATA_COMMON = {"min_label_count": integer(1), "max_failed_fraction": FAILED_FRACTION, "label_sep": string()}
DATA = {
    "demo": {**_DATA_COMMON, "source": choice("demo"), "n_per_style": integer(1), "duration": number(0, lo_open=True),
             "labels": choice("genre", "tags")},
    "folder": {**_DATA_COMMON, "source": choice("folder"), "root": path(),
               "extensions": list_of(string(), min_len=1, null=True, what="a non-empty list of file extensions")},
    "csv": {**_DATA_COMMON, "source": choice("csv"), "manifest": path()},
    "library": {**_DATA_COMMON, "source": choice("library"), "root": path(),
                "extensions": list_of(string(), min_len=1, null=True, what="a non-empty list of file extensions"),
                "labels": choice("genre", "folder", "none"), "group": choice("artist", "album", "none"),
                "guess_from_path": boolean()},
    "beets": {**_DATA_COMMON, "source": choice("beets"), "library": path(null=True),
              "directory": path(null=True), "query": string(null=True),
              "labels": choice("genre", "folder", "none"), "group": choice("artist", "album", "none")},
    "playlists": {**_DATA_COMMON, "source": choice("playlists"), "playlists": path()},
    "features": {**_DATA_COMMON, "source": choice("features"),
                 "features": one_of(path(), list_of(path(), min_len=1), allowed="a .npy file or a list of them"),
                 "labels": path(), "label_column": string(), "key_column": string(null=True)},
}
SPLITS = {
    "stratified": {"kind": choice("stratified"), "valid": FRACTION, "test": FRACTION, "seed": integer(0)},
    "files": {"kind": choice("files"), "train": path(null=True), "valid": path(null=True), "test": path(null=True)},
}
INDEXES = {
    "exact": {"kind": choice("exact")},
    "faiss": {"kind": choice("faiss"), "method": choice("auto", "hnsw", "ivf"), "exact_below": integer(0),
              "ivf_above": integer(1), "hnsw_m": integer(1), "ef_construction": integer(1), "ef_search": integer(1),
              "ivf_nlist": integer(1, null=True), "ivf_nprobe": integer(1)},
}

SCHEMA: dict = {
    "seed": integer(0),
    "plots": boolean(),
    "overwrite": boolean(),
    "run": path(null=True),
    "runs": list_of(path(), min_len=1, null=True, what="a non-empty list of run folders"),
    "study": _or_null(Check(lambda v: isinstance(v, Mapping), "a study (+study=blocks)"), True),
    "paths": {"output_dir": path(), "cache": path(), "shared": path()},
    "data": Group("source", DATA),
    "split": Group("kind", SPLITS),
    "model": Group("name", MODELS),
    "index": Group("kind", INDEXES),
    "backbone": Free(),
    "clip": {
        "sr": number(0, lo_open=True), "duration": number(0, lo_open=True),
        "offset": Check(_offset_ok, "start, middle or a number of seconds >= 0"),
        "windows": Check(_windows_ok, "first, all or spread:K with K an integer >= 1"),
        "hop": number(0, lo_open=True, null=True), "max_windows": integer(1), "pool": choice("mean", "mean_std"),
    },
    "features": {
        "parts": list_of(string(), null=True, what="a list of part names"), "combine": COMBINE,
        "batch_size": integer(1), "workers": integer(0, null=True), "cache": boolean(),
    },
    "eval": {
        "protocol": choice("test", "test_vs_all", "cross"),
        "ks": list_of(integer(1), min_len=1, what="a non-empty list of integers >= 1"),
        "relevance": choice("shared", "jaccard"), "jaccard_threshold": number(0, 1, lo_open=True),
    },
    "recommend": {
        "seed": one_of(path(null=True), list_of(path(), min_len=1), allowed="a song, a list of songs or a .txt list"),
        "k": integer(1),
        "out": _or_null(Check(lambda v: isinstance(v, str) and v.lower().endswith((".csv", ".json")),
                              "a file name ending in .csv or .json"), True),
    },
    "extract": {
        "out": path(null=True), "shard_size": integer(1), "engine": choice("local", "ray"),
        "ray": {"address": string(null=True), "actors": integer(1, null=True), "num_gpus": number(0)},
    },
    "tag": {"files": list_of(path(), what="a list of audio files"), "top": integer(1)},
    "serve": {  # the serve branch's group (conf/serve/default.yaml)
        "host": string(), "port": integer(0, 65535), "allow_remote": boolean(),
        "max_upload_mb": number(0, lo_open=True),
        "k": integer(1), "max_k": integer(1), "map": choice("auto", "umap", "tsne", "pca"), "map_max_items": integer(1),
    },
    "hydra": Free(),
}
STUDY = {"name": choice("blocks"),
         "sets": list_of(PART_NAMES, min_len=1, null=True, what="a non-empty list of lists of part names")}


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else _plain(value)


def _plain(value) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _walk(node, spec, prefix: str, errors: list[str], unknown: list[tuple[str, list[str]]]) -> None:
    if isinstance(spec, Free):
        return
    if isinstance(spec, Group):
        if not isinstance(node, Mapping):
            errors.append(f"{prefix}={_show(node)}: must be a group of settings")
            return
        option = node.get(spec.selector)
        if option not in spec.options:
            errors.append(f"{prefix}.{spec.selector}={_show(option)}: choose one of {'|'.join(spec.options)}")
            return
        _walk(node, spec.options[option], prefix, errors, unknown)
        return
    if isinstance(spec, dict):
        if not isinstance(node, Mapping):
            errors.append(f"{prefix}={_show(node)}: must be a group of settings ({', '.join(spec)})")
            return
        for key, value in node.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":  # the class a component is built from (hydra.utils.instantiate)
                continue
            if key not in spec:
                unknown.append((full, [f"{prefix}.{k}" if prefix else k for k in spec]))
                continue
            _walk(value, spec[key], full, errors, unknown)
        return
    if node == NOT_SET:
        return
    if not spec.ok(node):
        errors.append(f"{prefix}={_show(node)}: must be {spec.allowed}")


def all_keys(spec=SCHEMA, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (over every option of every group)."""
    out = []
    if isinstance(spec, Group):
        for option in spec.options.values():
            out += all_keys(option, prefix)
        return sorted(set(out))
    if isinstance(spec, dict) and not isinstance(spec, Free):
        for key, sub in spec.items():
            full = f"{prefix}.{key}" if prefix else key
            out.append(full)
            out += all_keys(sub, full)
    return sorted(set(out))


def closest(key: str, candidates: list[str] | None = None, n: int = 3) -> list[str]:
    """The valid keys most like `key` (difflib), best first."""
    candidates = all_keys() if candidates is None else candidates
    matches = difflib.get_close_matches(key, candidates, n=n, cutoff=0.6)
    if not matches:  # a typo in the last part only: compare the last parts
        last = key.rsplit(".", 1)[-1]
        tails = {c.rsplit(".", 1)[-1]: c for c in candidates}
        matches = [tails[t] for t in difflib.get_close_matches(last, list(tails), n=n, cutoff=0.6)]
    return matches


def unknown_key_message(key: str, candidates: list[str] | None = None) -> str:
    hint = closest(key, candidates)
    near = f"did you mean {' or '.join(hint)}?" if hint else "see the valid settings with --cfg"
    return f"unknown setting {key}: {near}"


def _number(node, *keys):
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if _is_num(node) else None


def _cross_checks(node: Mapping) -> list[str]:
    """Settings that are each fine but do not go together."""
    out = []
    model = node.get("model") if isinstance(node.get("model"), Mapping) else {}
    dim, branches = _number(model, "dim"), _number(model, "branches")
    if model.get("name") == "siamese" and _is_int(dim) and _is_int(branches) and branches >= 1 and dim % branches:
        out.append(f"model.dim={dim} and model.branches={branches}: the dimension must be a multiple of the number "
                   "of branches (each branch gives dim / branches)")
    split = node.get("split") if isinstance(node.get("split"), Mapping) else {}
    valid, test = _number(split, "valid"), _number(split, "test")
    if split.get("kind") == "stratified" and valid is not None and test is not None and valid + test >= 1:
        out.append(f"split.valid={valid} and split.test={test}: together they must leave songs for training (< 1)")
    serve = node.get("serve") if isinstance(node.get("serve"), Mapping) else {}
    k, max_k = _number(serve, "k"), _number(serve, "max_k")
    if k is not None and max_k is not None and k > max_k:
        out.append(f"serve.k={k} is larger than serve.max_k={max_k}")
    return out


def problems(cfg) -> list[str]:
    """Every problem of the job config `cfg` (a mapping without the hydra node), one line each."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    errors: list[str] = []
    unknown: list[tuple[str, list[str]]] = []
    _walk(node, SCHEMA, "", errors, unknown)
    if isinstance(node.get("study"), Mapping):
        _walk(node["study"], STUDY, "study", errors, unknown)
    if not errors:
        errors += _cross_checks(node)
    return [unknown_key_message(key, keys) for key, keys in unknown] + errors


def validate(cfg) -> None:
    """Raise SiamrecError with one line listing what is wrong with `cfg` (nothing is done before this passes)."""
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise SiamrecError("; ".join(found[:3]) + more)
