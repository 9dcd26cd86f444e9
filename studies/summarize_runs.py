"""Summarize finished runs into a table and figures: ``python -m studies.summarize_runs``.

    python -m studies.summarize_runs RUNS... [--output DIR] [--metric accuracy|error]

Each of RUNS is a run's work directory, a ``results.json`` file, or a folder that
holds runs at any depth. Runs are grouped by (dataset, imbalance ratio, model,
method); each group's mean +- sample standard deviation (ddof = 1; "-" for a
single seed) over its seeds goes into ``DIR/report.md``, which is also printed.
``DIR`` defaults to ``report/`` beside the runs (in the folder that holds them all).

* single-label: accuracy (as the trainer reports it) or top-1 error (the paper's
  tables) in %, overall and on many / medium / few-shot classes;
* multi-label: mAP in %, overall and on head / medium / tail classes.

Figures, classes ordered by training count (most frequent left): the per-class
test accuracy (AP for multi-label) of every method on one chart per data set and
model, and each method's per-class relative loss variation where recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from experiments import metrics, plots

RESULTS_FILE = "results.json"
GROUP_KEYS = ("dataset", "imbalance_ratio", "model", "method")


@dataclasses.dataclass(frozen=True)
class Row:
    """One (dataset, imbalance_ratio, model, method) group, summarized over its seeds.

    ``metrics`` maps a metric name to ``(mean, std)`` in [0, 1] units: the mean
    over the seeds that define it (``None`` if none does) and the sample std
    (``None`` below two seeds). Per-class values are means over seeds (NaN where
    no seed defines one).
    """

    dataset: str
    imbalance_ratio: float
    model: str
    method: str
    seeds: tuple[int, ...]
    multilabel: bool
    metrics: dict[str, tuple[float | None, float | None]]
    per_class: np.ndarray | None  # accuracy (single-label) or AP (multi-label) per class
    relative_loss_variation: np.ndarray | None
    class_counts: np.ndarray | None  # training images (positives) per class

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)


def find_results(paths: Iterable[str | pathlib.Path]) -> list[pathlib.Path]:
    """The ``results.json`` files at or under ``paths``, each once, in a stable order."""
    found: dict[pathlib.Path, None] = {}
    for path in map(pathlib.Path, paths):
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(path.rglob(RESULTS_FILE))
        else:
            raise FileNotFoundError(f"{str(path)!r} is neither a results file nor a folder.")
        for file in files:
            found.setdefault(file.resolve(), None)
    return list(found)


def collect_results(paths: Iterable[str | pathlib.Path]) -> list[dict]:
    """Every run's ``results.json`` found under ``paths``, with its path as ``"path"``."""
    results = []
    for file in find_results(paths):
        try:
            result = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(file)!r} is not valid JSON: {error}.") from error
        missing = [key for key in GROUP_KEYS if key not in result]
        if missing:
            raise ValueError(f"{str(file)!r} lacks the field(s) {', '.join(missing)}.")
        results.append({**result, "path": str(file)})
    return results


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    defined = np.array([v for v in values if v is not None], np.float64)
    if defined.size == 0:
        return None, None
    std = float(np.std(defined, ddof=1)) if defined.size > 1 else None
    return float(defined.mean()), std


def _mean_vectors(vectors: list) -> np.ndarray | None:
    """Elementwise mean over runs, ignoring missing (None / NaN) entries."""
    vectors = [v for v in vectors if v is not None]
    if not vectors:
        return None
    if len({len(v) for v in vectors}) != 1:
        raise ValueError("runs of one group have per-class vectors of different lengths.")
    return metrics.nan_mean([[np.nan if x is None else x for x in v] for v in vectors])


def _group_key(result: dict) -> tuple:
    return tuple(result[k] if k != "imbalance_ratio" else float(result[k]) for k in GROUP_KEYS)


def summarize(results: Sequence[dict]) -> list[Row]:
    """Groups runs by (dataset, imbalance_ratio, model, method); one row per group, sorted."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(_group_key(result), []).append(result)
    rows = []
    for key in sorted(groups):
        runs = sorted(groups[key], key=lambda r: (r.get("seed", 0), r.get("path", "")))
        seeds = tuple(int(r.get("seed", 0)) for r in runs)
        if len(set(seeds)) != len(seeds):
            print(
                f"warning: {' / '.join(map(str, key))} has repeated seeds {list(seeds)}; "
                "each run counts once.",
                file=sys.stderr,
            )
        multilabel = any("mAP" in r for r in runs)
        names = metrics.MULTILABEL_METRICS if multilabel else metrics.SINGLE_LABEL_METRICS
        per_class_key = "per_class_ap" if multilabel else "per_class_accuracy"
        rows.append(
            Row(
                *key,
                seeds=seeds,
                multilabel=multilabel,
                metrics={name: _mean_std([r.get(name) for r in runs]) for name in names},
                per_class=_mean_vectors([r.get(per_class_key) for r in runs]),
                relative_loss_variation=_mean_vectors(
                    [r.get("relative_loss_variation") for r in runs]
                ),
                class_counts=class_counts_of(runs[0]),
            )
        )
    return rows


summarise = summarize  # deprecated spelling


def class_counts_of(result: dict) -> np.ndarray | None:
    """Training images (positives) per class of a run, from its ``results.json``."""
    counts = result.get("class_counts")
    return None if counts is None else np.asarray(counts, np.int64)


def _percent(mean: float | None, std: float | None, as_error: bool) -> str:
    if mean is None:
        return "-"
    value = 100.0 * (1.0 - mean if as_error else mean)
    return f"{value:.2f} ± {'-' if std is None else f'{100.0 * std:.2f}'}"


def markdown_table(rows: Sequence[Row], *, metric: str = "accuracy") -> str:
    """Markdown tables (single-label, then multi-label) of mean ± std over seeds, in %.

    ``metric="accuracy"`` gives accuracy (as the trainer), ``"error"`` top-1 error (the
    paper's tables);
    the shot-group columns follow the same choice. Multi-label rows always show mAP.
    """
    if metric not in ("error", "accuracy"):
        raise ValueError(f"metric must be 'error' or 'accuracy'; got {metric!r}.")
    as_error = metric == "error"
    first = "top-1 error %" if as_error else "accuracy %"
    groups = "error" if as_error else "acc."
    tables = []
    for multilabel, names, headers in (
        (
            False,
            metrics.SINGLE_LABEL_METRICS,
            (first, f"many {groups}", f"medium {groups}", f"few {groups}"),
        ),
        (True, metrics.MULTILABEL_METRICS, ("mAP %", "head mAP", "medium mAP", "tail mAP")),
    ):
        selected = [row for row in rows if row.multilabel == multilabel]
        if not selected:
            continue
        header = ("dataset", "r", "model", "method", "seeds", *headers)
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * 5 + ["---:"] * len(headers)) + "|",
        ]
        for row in selected:
            cells = [row.dataset, f"{row.imbalance_ratio:g}", row.model, row.method]
            cells.append(str(row.num_seeds))
            cells += [_percent(*row.metrics[n], as_error and not multilabel) for n in names]
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables) + "\n"


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts))


def write_figures(rows: Sequence[Row], output: pathlib.Path) -> list[pathlib.Path]:
    """The per-class charts of ``rows`` under ``output``; returns the files written."""
    written = []
    charts: dict[tuple, list[Row]] = {}
    for row in rows:
        charts.setdefault((row.dataset, row.imbalance_ratio, row.model), []).append(row)
    for (dataset, ratio, model), group in charts.items():
        counts = group[0].class_counts
        if counts is None:
            print(f"note: no class counts for {dataset} r={ratio:g}; no figures.", file=sys.stderr)
            continue
        name = f"{dataset} (r = {ratio:g}), {model}"
        series = {row.method: row.per_class for row in group if row.per_class is not None}
        if series:
            stem = "per_class_ap" if group[0].multilabel else "per_class_accuracy"
            spec = plots.PER_CLASS_PLOTS[stem]
            path = output / f"{stem}_{_slug(dataset, f'r{ratio:g}', model)}.png"
            plots.plot_per_class(
                series, counts, title=f"{name}: {spec.what}", ylabel=spec.ylabel, path=path
            )
            written.append(path)
        for row in group:
            if row.relative_loss_variation is None:
                continue
            path = output / (
                f"relative_loss_variation_{_slug(dataset, f'r{ratio:g}', model, row.method)}.png"
            )
            spec = plots.PER_CLASS_PLOTS["relative_loss_variation"]
            plots.plot_per_class(
                {row.method: row.relative_loss_variation.tolist()},
                counts,
                title=f"{row.method} (r = {ratio:g}): {spec.what}",
                ylabel=spec.ylabel,
                path=path,
                signed=spec.signed,
            )
            written.append(path)
    return written


def write_report(
    paths: Iterable[str | pathlib.Path],
    output: str | pathlib.Path,
    *,
    metric: str = "accuracy",
) -> str:
    """Writes ``output/report.md`` and figures for the runs under ``paths``; returns the table."""
    results = collect_results(paths)
    if not results:
        raise FileNotFoundError(f"No {RESULTS_FILE} under {', '.join(map(str, paths))}.")
    rows = summarize(results)
    table = markdown_table(rows, metric=metric)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    figures = write_figures(rows, output)
    text = [
        "# Results",
        "",
        f"{len(results)} runs; mean ± sample std (ddof = 1) over seeds; '-': a single seed.",
        "Shot groups by training images per class: many > 100, medium 20-100, few < 20;",
        "multi-label head / medium / tail: thirds of the classes by positive count.",
        "",
        table,
    ]
    if figures:
        text += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    (output / "report.md").write_text("\n".join(text))
    return table


def default_output(paths: Sequence[str | pathlib.Path]) -> pathlib.Path:
    """``report/`` in the folder that holds all of ``paths`` (a file's folder for a file)."""
    folders = [
        pathlib.Path(p) if pathlib.Path(p).is_dir() else pathlib.Path(p).parent for p in paths
    ]
    return pathlib.Path(os.path.commonpath([f.resolve() for f in folders])) / "report"


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m studies.summarize_runs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", help="run folders, results.json files or parents")
    parser.add_argument(
        "--output", default=None, help="folder for report.md and figures (default: RUNS/report)"
    )
    parser.add_argument("--metric", choices=("accuracy", "error"), default="accuracy")
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output) if args.output else default_output(args.runs)
    try:
        table = write_report(args.runs, output, metric=args.metric)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(table, end="")
    print(f"\nWrote {output / 'report.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
