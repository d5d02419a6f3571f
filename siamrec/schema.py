"""The configuration's schema: every key a command accepts, its type, range or allowed values.

`validate(cfg)` checks the whole composed (resolved, hydra-free) job config once, before any work: a wrong value
gives one line naming the key, the value and what is allowed; a key the schema does not know (a typo, or one
added with `+`) is rejected with the closest valid keys.

A component built by `_target_` (a head, a data source, a split kind, a loss, an index kind, an engine; siamrec's
own or the user's) is checked against its class's constructor: its typed keyword parameters are its keys, their
annotations its types, ranges and choices (`Annotated[float, number(0, 1)]`, `Literal[...]`), read from the source
without importing it (constructor_spec). So a new component is one class and one YAML, with nothing to add here.
Beside them a group's YAML may state the option's name (model.name, data.source, split.kind). The `backbone` node
is free-form (each bundle has its own keys) and is not checked here.

Pure Python (no NumPy, no TensorFlow), so the CLI can validate before importing anything heavy.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
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


def pattern(regex: str, allowed: str | None = None) -> Check:
    """A text matching `regex` as a whole."""
    return Check(lambda v: isinstance(v, str) and re.fullmatch(regex, v) is not None, allowed or f"text like {regex}")


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


class Component:
    """A node built by `_target_` (hydra.utils.instantiate): its keys and their checks are the typed keyword
    parameters of the target class's constructor (see constructor_spec), and `named` keys its YAML states beside
    them (a model's `name`: the option's name, which the commands show)."""

    def __init__(self, group: str, **named: Check):
        self.group = group  # the config group its options come from (conf/GROUP/*.yaml), for messages
        self.named = named


def component(group: str) -> Component:
    """A constructor parameter that is itself a component chosen from conf/GROUP (a Siamese head's loss)."""
    return Component(group)


# Names an annotation of a component's constructor may use (its source is read, not imported: see constructor_spec).
def _annotation_names() -> dict:
    import typing

    return {"Annotated": typing.Annotated, "Literal": typing.Literal, "Optional": typing.Optional,
            "Union": typing.Union, "Any": typing.Any, "int": int, "float": float, "bool": bool, "str": str,
            "list": list, "dict": dict, "tuple": tuple, "object": object, "None": None, "integer": integer, "number": number,
            "boolean": boolean, "string": string, "path": path, "choice": choice, "list_of": list_of,
            "one_of": one_of, "anything": anything, "pattern": pattern, "component": component, "Check": Check}


def _check_of(annotation) -> Check | Component:
    """The Check of a constructor parameter's type: Annotated[T, check] is that check; int, float, bool, str,
    Literal[...], list[T], T | None are checked as such; anything else is not checked."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        given = [m for m in annotation.__metadata__ if isinstance(m, (Check, Component))]
        return given[0] if given else _check_of(args[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _check_of(rest[0]) if len(rest) == 1 else anything()
        return _or_null(inner, len(rest) < len(args))
    if origin is typing.Literal:
        return choice(*[str(a) for a in args]) if all(isinstance(a, str) for a in args) else \
            Check(lambda v: v in args, "one of " + "|".join(map(str, args)))
    if origin is list:
        return list_of(_check_of(args[0]) if args else anything())
    return {int: integer(), float: number(), bool: boolean(), str: string()}.get(annotation, anything())


def constructor_spec(target: str) -> dict | None:
    """{parameter: Check} of the constructor of the class `target` ('module.Class'), read from the module's source
    with ast, so validating imports no heavy library (the module is found, not run). None when the class or its
    typed constructor cannot be read, or it takes **kwargs: its keys are then not checked here."""
    return _constructor_spec(str(target))


@lru_cache(maxsize=None)
def _module_source(module: str):
    """The parsed source of `module` (found, not run), or None."""
    import ast
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
        return ast.parse(open(found.origin, encoding="utf-8").read())
    except Exception:  # noqa: BLE001 - not a module we can read
        return None


@lru_cache(maxsize=None)
def _type_aliases(module: str) -> dict:
    """The names a constructor's annotations in `module` may use: the schema's own (and the checks it imports from
    the schema, such as COMBINE), the module's type aliases (Margin = Annotated[float, number(0)]) and those it
    imports from a module of its own package (read the same way, so a head may use the aliases of
    siamrec.models.heads)."""
    import ast

    names = _annotation_names()
    tree = _module_source(module)
    package = module.split(".")[0]
    for node in tree.body if tree is not None else []:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == __name__:
            here = globals()  # the schema's own checks (COMBINE, ...), imported by name
            names.update({a.asname or a.name: here[a.name] for a in node.names if isinstance(here.get(a.name), Check)})
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package \
                and node.module != module:
            theirs = _type_aliases(node.module)
            names.update({a.asname or a.name: theirs[a.name] for a in node.names if a.name in theirs})
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = eval(ast.unparse(node.value), {"__builtins__": {}, **names})
            except Exception:  # noqa: BLE001 - not a type alias
                pass
    return names


@lru_cache(maxsize=None)
def _constructor_spec(target: str) -> dict | None:
    import ast

    module, _, name = target.rpartition(".")
    tree = _module_source(module)
    if tree is None:  # not a module we can read: left to instantiate to report
        return None
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    cls, init = classes.get(name), None
    while cls is not None and init is None:  # the constructor, from the class or a base of the same module
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        cls = classes.get(bases[0]) if init is None and bases else None
    if init is None or init.args.kwarg is not None:
        return None
    names = _type_aliases(module)
    spec = {}
    for arg in init.args.args[1:] + init.args.kwonlyargs:
        try:
            spec[arg.arg] = (_check_of(eval(ast.unparse(arg.annotation), {"__builtins__": {}, **names}))
                             if arg.annotation else anything())
        except Exception:  # noqa: BLE001 - an annotation we cannot evaluate: not checked
            spec[arg.arg] = anything()
    return spec


class Switch(dict):
    """A group of settings that may also be switched off as a whole (`none`, null or false)."""


PART_NAMES = list_of(string(), what="a list of the backbone's part names")
COMBINE = list_of(Check(lambda v: isinstance(v, Mapping) and isinstance(v.get("backbone"), str)
                        and set(v) <= {"backbone", "parts"},
                        "{backbone: NAME, parts: [...]}"), what="a list of {backbone: NAME, parts: [...]}")

SCHEMA: dict = {
    "seed": integer(0),
    "plots": boolean(),
    "query_expansion": integer(0),
    "overwrite": boolean(),
    "run": path(null=True),
    "runs": list_of(path(), min_len=1, null=True, what="a non-empty list of run folders"),
    "study": _or_null(Check(lambda v: isinstance(v, Mapping), "a study (+study=blocks)"), True),
    "paths": {"output_dir": path(), "cache": path(), "shared": path()},
    "data": Component("data", source=string()),  # source, kind, name: the option's name (data=NAME), for messages
    "split": Component("split", kind=string()),
    "model": Component("model", name=string()),
    "index": Component("index"),
    "backbone": Free(),
    "clip": {
        "sr": number(0, lo_open=True), "duration": number(0, lo_open=True),
        "offset": Check(_offset_ok, "start, middle or a number of seconds >= 0"),
        "windows": Check(_windows_ok, "first, all or spread:K with K an integer >= 1"),
        "hop": number(0, lo_open=True, null=True), "max_windows": integer(1),
        "pool": choice("mean", "mean_std", "unit_mean"),
    },
    "features": {
        "parts": list_of(string(), null=True, what="a list of part names"), "combine": COMBINE,
        "normalise": choice("none", "centre", "centre_sqrt", "standardise", "whiten"), "whiten_eps": number(0),
        "batch_size": integer(1), "workers": integer(0, null=True), "cache": boolean(),
        "threads": integer(1, null=True), "runtime": choice("onnxruntime", "tensorflow"),
    },
    "eval": {
        "protocol": choice("test", "test_vs_all", "cross"),
        "ks": list_of(integer(1), min_len=1, what="a non-empty list of integers >= 1"),
        "relevance": choice("shared", "jaccard"), "jaccard_threshold": number(0, 1, lo_open=True),
    },
    "recommend": {
        "seed": one_of(path(null=True), list_of(path(), min_len=1), allowed="a song, a list of songs or a .txt list"),
        "k": integer(1),
        "out": _or_null(Check(lambda v: isinstance(v, str) and v.lower().endswith((".csv", ".json", ".m3u8", ".m3u")),
                              "a file name ending in .csv, .json, .m3u8 or .m3u"), True),
        "to": path(null=True), "relative_to": path(null=True),
        "rules": Switch(max_per_artist=integer(1, null=True), album_gap=integer(0), dedupe=boolean(),
                        dup_distance=number(0, 1, hi_open=True),
                        dup_distance_artist=number(0, 1, hi_open=True), dup_on_trained=boolean(),
                        labels=list_of(path()),
                        min_duration=number(0, null=True), max_duration=number(0, null=True), exclude=list_of(path())),
    },
    "extract": {
        "out": path(null=True), "shard_size": integer(1), "engine": Component("engine"),
    },
    "tag": {"files": list_of(path(), what="a list of audio files"), "top": integer(1)},
    "serve": {  # the serve branch's group (conf/serve/default.yaml)
        "host": string(), "port": integer(0, 65535), "allow_remote": boolean(),
        "max_upload_mb": number(0, lo_open=True),
        "k": integer(1), "max_k": integer(1), "map": choice("auto", "umap", "tsne", "pca"), "map_max_items": integer(1),
        "playlists_dir": string(null=True),
    },
    "mpd": {"host": string(), "port": integer(1, 65535), "once": boolean(), "music_dir": path(null=True),
            "refill_below": integer(0)},
    "hydra": Free(),
}
STUDY = {"name": choice("blocks"),
         "sets": list_of(PART_NAMES, min_len=1, null=True, what="a non-empty list of lists of part names")}


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else override_value(value)


def override_value(value) -> str:
    """`value` as a command-line override writes it (null, true, [a, b], {k: v})."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _walk(node, spec, prefix: str, errors: list[str], unknown: list[tuple[str, list[str]]]) -> None:
    if isinstance(spec, Free):
        return
    if isinstance(spec, Component):
        fields = constructor_spec(node["_target_"]) if isinstance(node, Mapping) and "_target_" in node else None
        if not isinstance(node, Mapping) or "_target_" not in node:
            from siamrec.configs import group_options

            errors.append(f"{prefix}={_show(node)}: choose one of {'|'.join(group_options(spec.group))}")
        elif fields is not None:
            _walk(node, {**spec.named, **fields}, prefix, errors, unknown)
        return
    if isinstance(spec, Switch) and (node is None or node is False or str(node).lower() in ("none", "off", "false")):
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
    if isinstance(spec, Component):  # the settings of every shipped option of its group
        from siamrec.configs import conf_dir

        for option in sorted((conf_dir() / spec.group).glob("*.yaml")):
            target = re.search(r"^_target_:\s*(\S+)", option.read_text(encoding="utf-8"), re.M)
            out += all_keys({**spec.named, **(constructor_spec(target.group(1)) or {} if target else {})}, prefix)
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


def windows_pool_problem(train_on, source, pool) -> str | None:
    """Training on windows (`model.train_on=windows`) trains on each window's own vector, which only clip.pool=mean
    pools the same way; precomputed features (data source `features`) have no windows. The line, or None."""
    if train_on != "windows" or source == "features" or pool == "mean":
        return None
    return (f"model.train_on=windows trains on each window's vector as it is, which only clip.pool=mean pools the "
            f"same way (clip.pool={pool} here, the backbone's default unless set): add clip.pool=mean")


def _cross_checks(node: Mapping) -> list[str]:
    """Settings that are each fine but do not go together."""
    out = []
    model = node.get("model") if isinstance(node.get("model"), Mapping) else {}
    dim, branches = _number(model, "dim"), _number(model, "branches")
    if _is_int(dim) and _is_int(branches) and branches >= 1 and dim % branches:
        out.append(f"model.dim={dim} and model.branches={branches}: the dimension must be a multiple of the number "
                   "of branches (each branch gives dim / branches)")
    split = node.get("split") if isinstance(node.get("split"), Mapping) else {}
    valid, test = _number(split, "valid"), _number(split, "test")
    if valid is not None and test is not None and valid + test >= 1:
        out.append(f"split.valid={valid} and split.test={test}: together they must leave songs for training (< 1)")
    clip = node.get("clip") if isinstance(node.get("clip"), Mapping) else {}
    data = node.get("data") if isinstance(node.get("data"), Mapping) else {}
    windows = windows_pool_problem(model.get("train_on"), data.get("source"), clip.get("pool", "mean"))
    if windows:
        out.append(windows)
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
