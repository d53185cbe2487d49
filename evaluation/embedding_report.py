"""Files of an embedding comparison: results.json / .csv, table.md and the two figures.

The results dict is the one :mod:`compare_embeddings` builds::

    {"methods": {name: {"test_acc_{n}_k{k}": {"mean", "std", "values"}, "test_acc_full_k{k}": acc,
                        "fit_seconds", "transform_seconds", "dimensions", ...}},
     "cv": [{"method", "samples_per_class", "k", "mean", "std", "values"}, ...],
     "protocol": {...}}

Figures use matplotlib's object API (no pyplot), so nothing global changes.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np

from fileio.atomic import write_figure, write_json, write_text

LABELS = {"pca": "PCA", "umap": "UMAP", "vae": "VAE", "vae+umap": "VAE + UMAP", "pixels": "raw pixels"}


def label(method: str) -> str:
    return LABELS.get(method, method)


def _pm(cell: dict) -> str:
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def write_csv(results: dict, path: str) -> None:
    """One accuracy per row: method, protocol (cv / test_sampled / test_full), size, k, mean, std, runs."""
    p = results["protocol"]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["method", "protocol", "samples_per_class", "k", "mean", "std", "runs"])
    for row in results["cv"]:
        w.writerow([row["method"], "cv", row["samples_per_class"], row["k"],
                    f"{row['mean']:.4f}", f"{row['std']:.4f}", len(row["values"])])
    for name, m in results["methods"].items():
        for k in p["test_ks"]:
            cell = m[f"test_acc_{p['test_samples_per_class']}_k{k}"]
            w.writerow([name, "test_sampled", p["test_samples_per_class"], k,
                        f"{cell['mean']:.4f}", f"{cell['std']:.4f}", len(cell["values"])])
        for k in p["test_ks"]:
            w.writerow([name, "test_full", "all", k, f"{m[f'test_acc_full_k{k}']:.4f}", "", 1])
    write_text(path, f.getvalue())


def markdown_table(results: dict) -> str:
    """The README tables: test accuracies and timings, then the best CV accuracy per size."""
    p = results["protocol"]
    n, ks = p["test_samples_per_class"], p["test_ks"]
    lines = [
        f"{p['dataset_name']}: embeddings fitted on the {p['n_train']:,} training images, KNN scored on "
        f"the {p['n_test']:,} test images. Sampled columns: KNN fit on {n} random training images per class, "
        f"mean ± std over {p['draws']} draws. Seconds: this run, {p['cpu_threads']} CPU thread(s).",
        "",
        "| method | " + " | ".join(f"test acc, {n}/class, k={k}" for k in ks)
        + f" | test acc, all {p['n_train']:,}, k={ks[-1]} | fit s | transform s |",
        "|---|" + "---:|" * (len(ks) + 3),
    ]
    for name, m in results["methods"].items():
        cells = [_pm(m[f"test_acc_{n}_k{k}"]) for k in ks]
        lines.append(f"| {label(name)} ({m['dimensions']}-d) | " + " | ".join(cells)
                     + f" | {m[f'test_acc_full_k{ks[-1]}']:.3f} | {m['fit_seconds']:.2f} "
                     f"| {m['transform_seconds']:.2f} |")
    methods = list(results["methods"])
    lines += ["", f"{p['cv_folds']}-fold stratified CV accuracy on a stratified sample of the training "
              f"embeddings, best k of {', '.join(map(str, p['n_neighbours']))} (mean ± std over folds):", "",
              "| images per class | " + " | ".join(label(m) for m in methods) + " |",
              "|---:|" + "---:|" * len(methods)]
    for size in p["samples_per_class"]:
        cells = []
        for name in methods:
            rows = [r for r in results["cv"] if r["method"] == name and r["samples_per_class"] == size]
            best = max(rows, key=lambda r: r["mean"])
            cells.append(f"{_pm(best)} (k={best['k']})")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_knn_accuracy(results: dict, path: str) -> None:
    """CV accuracy against k: one panel per samples-per-class, one line per method."""
    from matplotlib.figure import Figure  # here: ~1 s, only the figures need it

    p = results["protocol"]
    sizes = p["samples_per_class"]
    fig = Figure(figsize=(3.2 * len(sizes), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, size in zip(axes, sizes):
        for name in results["methods"]:
            rows = sorted((r for r in results["cv"] if r["method"] == name and r["samples_per_class"] == size),
                          key=lambda r: r["k"])
            ax.errorbar([r["k"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                        marker="o", ms=3, capsize=2, label=label(name))
        ax.set_xscale("log")
        ax.set_xticks(p["n_neighbours"], [str(k) for k in p["n_neighbours"]])
        ax.minorticks_off()
        ax.set_title(f"{size} per class")
        ax.set_xlabel("k (neighbours)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{p['cv_folds']}-fold CV accuracy")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"KNN accuracy of {p['n_components']}-d embeddings, {p['dataset_name']}")
    write_figure(fig, path, dpi=90)


def plot_embeddings_2d(views: dict[str, np.ndarray], y: np.ndarray, class_names: Sequence[str],
                       path: str, title: str) -> None:
    """Each method's 2-D view side by side, points coloured by class, class names in one legend."""
    from matplotlib.figure import Figure  # here: ~1 s, only the figures need it
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(3.6 * len(views) + 1.6, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(views)))
    for ax, (name, xy) in zip(axes, views.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=[f"C{v}" for v in y], s=1.5, alpha=0.6, linewidths=0, rasterized=True)
        ax.set_title(label(name))
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], ls="", marker="o", color=f"C{i}", label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, markerscale=1.2)
    fig.suptitle(title)
    write_figure(fig, path, dpi=80)


def write_all(results: dict, out_dir: str) -> dict[str, str]:
    """results.json, results.csv and table.md in ``out_dir``; returns their paths."""
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("json", "results.json"), ("csv", "results.csv"), ("table", "table.md"))}
    write_json(paths["json"], results)
    write_csv(results, paths["csv"])
    write_text(paths["table"], markdown_table(results))
    return paths
