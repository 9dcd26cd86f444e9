"""Per-class bar charts: accuracy (AP) per class and the relative loss variation."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np


class PerClassPlot(NamedTuple):
    """How a per-class entry of ``results.json`` is drawn."""

    what: str  # the title's subject
    ylabel: str
    signed: bool  # red above zero, blue below (a loss variation)


PER_CLASS_PLOTS = {
    "per_class_accuracy": PerClassPlot("test accuracy per class", "accuracy", False),
    "per_class_ap": PerClassPlot("test AP per class", "average precision", False),
    "relative_loss_variation": PerClassPlot(
        "relative loss variation", "(l' - l) / l, median over training", True
    ),
}


_MAX_BARS = 200  # above this many classes, series are drawn as filled steps


def plot_per_class(
    series: Mapping[str, Sequence[float | None]],
    class_counts: np.ndarray,
    *,
    title: str,
    ylabel: str,
    path: pathlib.Path,
    signed: bool = False,
) -> None:
    """Bars over classes ordered by training count (most frequent left), one colour per series.

    With a single series and ``signed=True`` bars are red above zero and blue
    below (positive / negative augmentation in a loss-variation plot). Above 200
    classes (ImageNet-LT, iNaturalist) each series is a filled step curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(class_counts)
    order = np.argsort(-counts, kind="stable")
    positions = np.arange(len(order))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.25 * len(order) * len(series))), 3.5))
    for i, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v for v in values], float)[order]
        heights = np.nan_to_num(heights)
        color = plt.cm.tab20(i % 20) if len(series) > 10 else f"C{i}"  # tab10 repeats past 10
        if len(order) > _MAX_BARS:  # thousands of bars take seconds: filled steps instead
            if signed and len(series) == 1:
                for sign, tone in ((1, "tab:red"), (-1, "tab:blue")):
                    part = np.where(sign * heights > 0, heights, 0)
                    ax.fill_between(positions, part, step="mid", color=tone, linewidth=0)
            else:
                ax.fill_between(positions, heights, step="mid", alpha=0.5, color=color, label=label)
            continue
        if signed and len(series) == 1:
            color = ["tab:red" if h > 0 else "tab:blue" for h in heights]
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(positions + offset, heights, width, label=label, color=color)
    if signed:
        ax.axhline(0.0, color="black", linewidth=0.8)
        magnitudes = np.abs([v for vs in series.values() for v in vs if v is not None])
        if magnitudes.size and magnitudes.max() > 10:  # e.g. LDAM's scaled logits
            ax.set_yscale("symlog", linthresh=1.0)
    if len(order) <= 30:
        ax.set_xticks(positions)
        ax.set_xticklabels([f"{c}\n({int(counts[c])})" for c in order], fontsize=7)
    ax.set_xlabel("class (training count), most frequent first")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    elif signed:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color="tab:red", label="loss raised (emphasised)"),
                Patch(color="tab:blue", label="loss lowered (de-emphasised)"),
            ],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend outside stays in
    plt.close(fig)


def plot_theta(
    history: Sequence[Sequence[float]],
    class_counts: np.ndarray,
    *,
    title: str,
    path: pathlib.Path,
) -> None:
    """Meta-LPL's signed bounds ``theta_c`` over the logging windows, one line per class.

    Above zero a class is maximised (positive augmentation), below it minimised: the
    sign is the learned split, the size the bound. Classes are coloured from the most
    frequent (dark) to the rarest (light); above 20 classes only the 10 most frequent and
    the 10 rarest are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    theta = np.asarray(history, float)  # [windows, C]
    order = np.argsort(-np.asarray(class_counts), kind="stable")
    if len(order) > 20:
        order = np.concatenate([order[:10], order[-10:]])
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(order)))
    for color, c in zip(colors, order, strict=True):
        ax.plot(theta[:, c], color=color, lw=1.4, label=f"{c} (n={class_counts[c]})")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("logging window")
    ax.set_ylabel("theta_c (> 0: maximised)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# Per-class metrics a method tracks over its logging windows (Method.tracked): what the
# figure WORKDIR/<name>.png shows, and how it is drawn.
TRACKED_PLOTS = {"theta": ("learned signed bounds", plot_theta)}


def plot_tracked(
    name: str, history, class_counts: np.ndarray, *, subject: str, path: pathlib.Path
) -> None:
    """The figure of tracked metric ``name`` over the run's windows (none if it has none)."""
    if name in TRACKED_PLOTS:
        what, plot = TRACKED_PLOTS[name]
        plot(history, class_counts, title=f"{subject}: {what}", path=path)
