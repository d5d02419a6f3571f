"""Side-by-side reports: several runs scored on the same items and split, and the layer (block) study.

Each writes report.md + report.csv (one row per run or block set) and map_at_k.png, and prints the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from siamrec.errors import SiamrecError
from siamrec.evaluation import expansion_note, score_embeddings
from siamrec.runs import existing_run, read_embeddings, write_csv, write_metrics

CURVE_KS = (1, 2, 5, 10, 20, 50, 100)


def _labels_matrix(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    labels = [tuple(filter(None, it["labels"].split("|"))) for it in items]
    names = sorted({lab for labs in labels for lab in labs})
    index = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(items), len(names)), dtype=bool)
    for i, labs in enumerate(labels):
        y[i, [index[lab] for lab in labs]] = True
    return y, np.array([it["split"] for it in items])


def _describe(run: Path) -> dict:
    """model, loss and blocks of a run, from its recorded config (or head.json)."""
    from omegaconf import OmegaConf

    cfg_file = run / ".hydra" / "config.yaml"
    try:
        cfg = _recorded(OmegaConf.load(cfg_file)) if cfg_file.is_file() else {}
        head = json.loads((run / "head.json").read_text(encoding="utf-8")) if (run / "head.json").is_file() else {}
    except Exception as exc:  # noqa: BLE001 - a damaged record: name it, do not crash
        raise SiamrecError(f"runs: {run} has a damaged .hydra/config.yaml or head.json ({str(exc).splitlines()[0]}); "
                           "re-run it or leave it out") from None
    cfg = cfg if isinstance(cfg, dict) else {}
    head = head if isinstance(head, dict) else {}
    model = cfg.get("model") or {}
    parts = (cfg.get("features") or {}).get("parts")
    source = (cfg.get("data") or {}).get("source") or ""
    return {
        "run": run.name,
        "model": model.get("name") or head.get("kind") or "?",
        "loss": _loss_name(model.get("loss")),
        "backbone": str((cfg.get("backbone") or {}).get("name") or "") if source != "features" else "",
        "parts": "+".join(map(str, parts)) if parts and source != "features" else "",
    }


def _recorded(cfg) -> dict:
    """A run's recorded config (.hydra/config.yaml, stored with its interpolations) as plain values: resolved, so
    choi2017's `name: choi2017_${.release}` reads choi2017_theano; as written when it cannot be resolved."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation of an older or foreign config
        return OmegaConf.to_container(cfg)


def _loss_name(loss) -> str:
    """The loss a run trained with, by its config name: multi_similarity for siamrec.losses.MultiSimilarity
    (older runs stored the name itself)."""
    if isinstance(loss, dict):
        loss = str(loss.get("_target_", "")).rsplit(".", 1)[-1]
        return re.sub(r"(?<!^)(?=[A-Z])", "_", loss).lower()
    return str(loss) if loss else ""


def _eval_cfg(cfg, n_gallery: int | None = None) -> dict:
    curve = curve_ks(n_gallery) if n_gallery else CURVE_KS
    ks = sorted({*map(int, cfg.eval.ks), *curve})
    return {**dict(cfg.eval), "ks": ks}


def write_table(run_dir, rows: list[dict], title: str) -> str:
    """report.md and report.csv of `rows`; returns the Markdown table."""
    columns = list(rows[0])
    md = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        md.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    text = "\n".join(md) + "\n"
    from siamrec.runs import atomic_write_text

    atomic_write_text(Path(run_dir) / "report.md", text)
    write_csv(Path(run_dir) / "report.csv", columns, [list(r.values()) for r in rows])
    return text


def gallery_size(split: np.ndarray, protocol: str) -> int:
    """Items a test query is ranked against (itself included)."""
    return len(split) if protocol in ("test_vs_all", "cross") else int((np.asarray(split) == "test").sum())


def curve_ks(n_gallery: int) -> list[int]:
    """The cut-offs of the MAP@k curve that mean something: k up to the n_gallery - 1 songs a query can be
    recommended (beyond, MAP@k no longer changes); the largest meaningful k ends the curve."""
    top = max(int(n_gallery) - 1, 1)
    return [k for k in CURVE_KS if k < top] + [top]


def map_at_k_plot(run_dir, curves: dict[str, dict], n_gallery: int | None = None) -> Path:
    """map_at_k.png: MAP@k of the test split for every run, up to the largest meaningful k (n_gallery - 1)."""
    from siamrec.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, test in curves.items():
        wanted = curve_ks(n_gallery) if n_gallery else CURVE_KS
        ks = [k for k in wanted if f"map@{k}" in test]
        ax.plot(ks, [test[f"map@{k}"] for k in ks], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("k (playlist length)")
    ax.set_ylabel("MAP@k (test)")
    ax.legend(fontsize=7)
    path = _save(fig, Path(run_dir) / "map_at_k.png")
    plt.close(fig)
    return path


def _row(describe: dict, test: dict, ks) -> dict:
    """One table row: what the run is, then every metric of its test split at the configured cut-offs
    (eval.ks; the MAP@k curve uses more)."""
    def shown(name: str) -> bool:
        cut = name.split("@")[1] if "@" in name else None
        return cut is None or cut == "r" or int(cut) in ks

    metrics = {k: float(v) for k, v in test.items() if isinstance(v, float) and shown(k)}
    return {**describe, **metrics, "n_queries": int(test["n_queries"])}


def compare_runs(cfg, run_dir) -> dict:
    """Score the embeddings of several runs on their common items and split (they must share both)."""
    runs = [existing_run(r) for r in cfg.runs]
    reference = None
    rows, curves, results = [], {}, {}
    for run in runs:
        emb, items = read_embeddings(run)
        keys = [it["key"] for it in items]
        y, split = _labels_matrix(items)
        if reference is None:
            reference = (keys, list(split))
        elif (keys, list(split)) != reference:
            raise SiamrecError(f"runs={run} embeds other items or another split than {runs[0]}; "
                               "compare runs made on the same data and split")
        n_gallery = gallery_size(split, cfg.eval.protocol)
        metrics = score_embeddings(emb, y, split, _eval_cfg(cfg, n_gallery),
                                   expand=int(cfg.query_expansion))
        desc = _describe(run)
        name = f"{desc['model']}{'/' + desc['loss'] if desc['loss'] else ''} ({run.name})"
        rows.append(_row(desc, metrics["test"], cfg.eval.ks))
        curves[name] = metrics["test"]
        results[str(run)] = metrics
    table = write_table(run_dir, rows, f"{len(runs)} runs, test split, protocol {cfg.eval.protocol}")
    map_at_k_plot(run_dir, curves, n_gallery)
    write_metrics(run_dir, {"runs": results})
    print(table)
    notes = {expansion_note(m) for m in results.values()} - {None}
    for note in sorted(notes):
        print(note)
    return results


def block_study(cfg, run_dir, data, extractor, vectors: np.ndarray) -> dict:
    """MAP of the pretrained features for each set of the backbone's parts (paper experiment 7): cfg.study.sets,
    or the first part, the first two, ... (cumulative) when it is null."""
    parts = list(extractor.bundle.parts)
    sets = [list(s) for s in cfg.study.sets] if cfg.study.sets else [parts[:n] for n in range(1, len(parts) + 1)]
    rows, curves, results = [], {}, {}
    n_gallery = gallery_size(data.split, cfg.eval.protocol)
    for names in sets:
        cols = extractor.columns(names)
        name = "+".join(map(str, names))
        metrics = score_embeddings(vectors[:, cols], data.y, data.split, _eval_cfg(cfg, n_gallery),
                                   expand=int(cfg.query_expansion))
        rows.append(_row({"parts": name, "dims": len(cols)}, metrics["test"], cfg.eval.ks))
        curves[name] = metrics["test"]
        results[name] = metrics
    table = write_table(run_dir, rows, f"Layer study: pretrained {extractor.bundle.name} features, test split")
    map_at_k_plot(run_dir, curves, n_gallery)
    write_metrics(run_dir, {"study": results})
    print(table)
    notes = {expansion_note(m) for m in results.values()} - {None}
    for note in sorted(notes):
        print(note)
    return results
