"""One way down: siamrec's modules import only modules of their own layer or of a lower one, and no module imports
itself back through others (no circle). Every import counts, the ones inside functions too (ast, nothing run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "siamrec"

# From the top down. A module belongs to the first layer with a prefix of its name; it may import its own layer
# and the layers below. A module no layer names sits with the components (it may import components and the
# foundation; the foundation may not import it).
LAYERS = [
    ("entry points", ["siamrec.cli", "siamrec.__main__", "siamrec.commands", "siamrec.beetsplug"]),
    ("the command line's parts", ["siamrec.overrides", "siamrec.run_folder", "siamrec.runlog", "siamrec.messages"]),
    ("applications", ["siamrec.serve", "siamrec.engines", "siamrec.engines_ray", "siamrec.report"]),
    ("a run's model", ["siamrec.embedder"]),
    ("shared steps of the commands", ["siamrec.pipeline"]),
    ("songs to vectors", ["siamrec.encoder", "siamrec.store", "siamrec.playlists"]),
    ("components", ["siamrec.extractor", "siamrec.models", "siamrec.backbones", "siamrec.data", "siamrec.index",
                    "siamrec.plots", "siamrec.evaluation", "siamrec.trust"]),
    ("foundation", ["siamrec.losses", "siamrec.samplers", "siamrec.metrics", "siamrec.runs", "siamrec.schema",
                    "siamrec.configs", "siamrec.errors"]),
]
UNLISTED = next(rank for rank, (name, _) in enumerate(LAYERS) if name == "components")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The siamrec modules `path` imports (a package's name when the import names it, a module's when it names one)."""
    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "siamrec"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "siamrec":
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else resolve(node.module)
                    for a in node.names}
    return out - {None}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def layer(name: str) -> float:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return UNLISTED


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
              for a, deps in graph().items() for b in deps if layer(b) < layer(a) and b != "siamrec"]
    assert upward == []


def test_no_import_circle():
    deps, circles, state = graph(), [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(deps.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(deps):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from siamrec.cli import main\n    import siamrec.commands.train\n")
    known = {**modules(), "siamrec.m": tmp_path / "m.py"}
    assert imports(tmp_path / "m.py", known) == {"siamrec.cli", "siamrec.commands.train"}
