"""The Fashion-MNIST-LT study: ``python -m experiments.fashion_mnist_study``.

    python -m experiments.fashion_mnist_study [--root docs/results/fashion_mnist_lt]
        [--ratios 100,10] [--seeds 1,2,3,4,5] [--processes 2] [--stage validation|all|report]

1. **Validation.** Every tunable method is trained once (seed 0) per setting of its grid
   (:data:`GRIDS`) at each ratio and scored on the balanced *validation* split held out of
   the training pool. LA's ``tau`` is tuned first; the LA-chained variants use the chosen
   ``tau``. ``lpl_varied`` then gets a second round around its best bound scale (head
   fraction, step count). The winner of each method and ratio is the setting with the best
   validation accuracy; the test split plays no part.
2. **Test.** Every method (:data:`METHODS`) with its chosen setting, ``--seeds`` (1-5:
   fresh seeds, so that no reported run took part in a selection), both ratios; the
   table reports test accuracy (mean ± std), the figures the per-class test accuracy
   and relative loss variation.

Writes ``ROOT/validation.md``, ``ROOT/validation_accuracy_vs_bound.png``,
``ROOT/report.md`` (+ figures) and one work directory per run under ``ROOT/runs``.
Resumable: finished runs (``results.json``) are skipped, interrupted ones resume.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import pathlib
import sys

from experiments import summarize_runs, sweep

CONFIG_DIR = pathlib.Path(__file__).parent / "configs"
VALIDATION_SEED = 0

# Methods of the test table, in order.
METHODS = (
    "ce",
    "la",
    "la_posthoc",
    "balanced_softmax",
    "ldam_drw",
    "isda",
    "lpl_fixed",
    "lpl_varied",
    "lpl_mean",
    "la_lpl",
    "lpl_adaptive",
    "la_lpl_adaptive",
)


def _lpl(scale: float, *, varied: bool, steps: int = 10) -> tuple[str, ...]:
    """LPL bounds at ``scale``: eps = scale (+ d_eps = 2 scale if varied), alpha = scale / steps.

    With varied bounds the largest class bound is 3 scale, i.e. 3 * steps inner steps.
    """
    return (
        f"--config.lpl.epsilon={scale:g}",
        f"--config.lpl.delta_epsilon={2 * scale if varied else 0:g}",
        f"--config.lpl.step_size={scale / steps:g}",
    )


def _adaptive(target: float) -> tuple[str, ...]:
    """Adaptive LPL with target log loss ratio ``target``: bounds from 0.5 within [0.05, 10]."""
    return (
        f"--config.lpl.adaptive_target={target:g}",
        "--config.lpl.epsilon=0.5",
        "--config.lpl.step_size=0.05",
    )


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a method's validation grid; ``x`` is its bound scale (LA: tau).

    Settings of one method with different ``series`` are drawn as separate curves.
    """

    label: str
    x: float
    overrides: tuple[str, ...]
    series: str = ""


def _grid(make, values, prefix, series="") -> tuple[Setting, ...]:
    suffix = f"_{series}" if series else ""
    return tuple(Setting(f"{prefix}{v:g}{suffix}", v, make(v), series) for v in values)


# method -> its validation grid (x axis of the figure: the bound scale; LA: tau).
GRIDS: dict[str, tuple[Setting, ...]] = {
    "la": _grid(lambda t: (f"--config.la.tau={t:g}",), (0.5, 1.0, 1.5, 2.0), "tau"),
    "lpl_fixed": _grid(lambda s: _lpl(s, varied=False), (0.1, 0.3, 1.0, 3.0, 10.0), "eps"),
    "lpl_varied": _grid(lambda s: _lpl(s, varied=True), (0.1, 0.3, 1.0, 3.0), "eps"),
    "lpl_mean": _grid(lambda s: _lpl(s, varied=True), (0.1, 0.3, 1.0, 3.0), "eps"),
    "la_lpl": _grid(lambda s: _lpl(s, varied=True), (0.03, 0.1, 0.3, 1.0), "eps"),
    "lpl_adaptive": _grid(_adaptive, (0.1, 0.3, 0.7, 1.5), "target"),
    # On top of LA also with the mean rule: emphasise the classes still hard after LA.
    "la_lpl_adaptive": _grid(_adaptive, (0.05, 0.1, 0.3, 0.7), "target")
    + _grid(
        lambda k: (*_adaptive(k), "--config.lpl.split_rule=mean"), (0.1, 0.3, 0.7), "target", "mean"
    ),
}
_LA_CHAINED = ("la_lpl", "la_lpl_adaptive")


def _refinements(best: Setting) -> tuple[Setting, ...]:
    """lpl_varied's second round at its best scale: head fraction and step count."""
    s = best.x
    return (
        Setting(f"{best.label}_head2", s, (*best.overrides, "--config.lpl.num_head_classes=2")),
        Setting(f"{best.label}_head6", s, (*best.overrides, "--config.lpl.num_head_classes=6")),
        Setting(f"{best.label}_steps3", s, _lpl(s, varied=True, steps=3)),
        Setting(f"{best.label}_steps30", s, _lpl(s, varied=True, steps=30)),
    )


def _config(ratio: int) -> pathlib.Path:
    return CONFIG_DIR / f"fashion_mnist_lt_r{ratio}.py"


def _validation_run(root, ratio, method, setting: Setting, prefix: Setting | None) -> sweep.Run:
    """A validation run; ``prefix`` is the chosen LA setting of the LA-chained variants."""
    label = setting.label if prefix is None else f"{prefix.label}_{setting.label}"
    overrides = setting.overrides if prefix is None else (*prefix.overrides, *setting.overrides)
    workdir = root / "runs" / "validation" / f"r{ratio}" / method / label / f"seed{VALIDATION_SEED}"
    return sweep.Run(_config(ratio), method, VALIDATION_SEED, workdir, overrides)


def _execute_all(runs: list[sweep.Run], processes: int) -> None:
    """Trains the runs not finished yet, ``processes`` at a time (0: train none, and fail
    if any is missing)."""
    pending = [r for r in runs if not (r.workdir / "results.json").exists()]
    print(f"{len(runs)} runs, {len(runs) - len(pending)} already finished.", flush=True)
    if not pending:
        return
    if processes == 0:
        raise RuntimeError(
            f"{len(pending)} validation runs are missing; run the study (not --stage report)."
        )
    failures = []
    with concurrent.futures.ThreadPoolExecutor(processes) as pool:
        futures = [pool.submit(sweep.execute, run, []) for run in pending]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run, code, log = future.result()
            status = "ok" if code == 0 else f"FAILED (exit {code}, see {log})"
            print(f"[{done}/{len(pending)}] {run.workdir}: {status}", flush=True)
            if code:
                failures.append(run)
    if failures:
        raise RuntimeError(f"{len(failures)} runs failed; rerun the same command to retry them.")


def _results(run: sweep.Run) -> dict:
    return json.loads((run.workdir / "results.json").read_text())


@dataclasses.dataclass
class Choice:
    """The validation round of one method at one ratio: every setting tried and its run."""

    method: str
    ratio: int
    tried: list[tuple[Setting, sweep.Run]]

    def score(self, run: sweep.Run) -> float:
        return _results(run)["validation_accuracy"]

    @property
    def best(self) -> tuple[Setting, sweep.Run]:
        return max(self.tried, key=lambda item: self.score(item[1]))


def run_validation(root, ratios, processes) -> dict[tuple[str, int], Choice]:
    """Stage 1: the grids on the validation split; the choice per (method, ratio)."""
    choices: dict[tuple[str, int], Choice] = {}

    def tune(methods, prefix_of):
        for ratio in ratios:
            for method in methods:
                prefix = prefix_of(ratio)
                tried = [
                    (s, _validation_run(root, ratio, method, s, prefix)) for s in GRIDS[method]
                ]
                choices[method, ratio] = Choice(method, ratio, tried)
        _execute_all(
            [run for m in methods for r in ratios for _, run in choices[m, r].tried], processes
        )

    tune(["la"], lambda ratio: None)
    tune([m for m in GRIDS if m != "la" and m not in _LA_CHAINED], lambda ratio: None)
    tune(list(_LA_CHAINED), lambda ratio: choices["la", ratio].best[0])
    # lpl_varied: head fraction and step count around its best bound scale.
    refined = []
    for ratio in ratios:
        choice = choices["lpl_varied", ratio]
        extra = [
            (s, _validation_run(root, ratio, "lpl_varied", s, None))
            for s in _refinements(choice.best[0])
        ]
        choice.tried += extra
        refined += [run for _, run in extra]
    _execute_all(refined, processes)
    return choices


def test_runs(root, ratios, seeds, choices) -> list[sweep.Run]:
    """Stage 2: every method with its chosen setting over ``seeds``.

    Seed-major order, so that a study stopped part-way has every method at equal seeds.
    """
    if VALIDATION_SEED in seeds:
        raise ValueError(f"seed {VALIDATION_SEED} chose the settings; test with other seeds.")
    runs = []
    for seed in seeds:
        for ratio in ratios:
            for method in METHODS:
                chosen = choices.get((method, ratio))
                overrides = chosen.best[1].settings if chosen is not None else ()
                workdir = root / "runs" / "test" / f"r{ratio}" / method / f"seed{seed}"
                runs.append(sweep.Run(_config(ratio), method, seed, workdir, overrides))
    return runs


def write_validation_report(root: pathlib.Path, choices: dict) -> None:
    """``validation.md`` (every setting, the chosen one in bold) and the bound-scale figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# Validation round (seed 0, balanced validation split; the test split is not used)",
        "",
        "| r | method | setting | overrides | validation accuracy % |",
        "|---|---|---|---|---:|",
    ]
    ratios = sorted({ratio for _, ratio in choices}, reverse=True)
    fig, axes = plt.subplots(1, len(ratios), figsize=(6 * len(ratios), 4.2), squeeze=False)
    for ax, ratio in zip(axes[0], ratios, strict=True):
        for (method, r), choice in choices.items():
            if r != ratio:
                continue
            best = choice.best[0]
            for setting, run in choice.tried:
                acc = 100 * choice.score(run)
                cell = f"**{acc:.2f}**" if setting == best else f"{acc:.2f}"
                flags = " ".join(o.removeprefix("--config.") for o in run.settings)
                lines.append(f"| {ratio} | {method} | {setting.label} | `{flags}` | {cell} |")
            if method == "la":
                continue
            for series in dict.fromkeys(s.series for s in GRIDS[method]):
                grid = [(s, run) for s, run in choice.tried if s in GRIDS[method]]
                grid = [(s, run) for s, run in grid if s.series == series]
                xs = [s.x for s, _ in grid]
                ys = [100 * choice.score(run) for _, run in grid]
                label = f"{method} ({series} rule)" if series else method
                ax.plot(xs, ys, marker="o", label=label)
        la = choices.get(("la", ratio))
        if la is not None:
            ax.axhline(100 * la.score(la.best[1]), color="k", ls="--", lw=1, label="la (best tau)")
        ax.set_xscale("log")
        ax.set_xlabel("bound scale eps (adaptive: target log loss ratio)")
        ax.set_ylabel("validation accuracy %")
        ax.set_title(f"Fashion-MNIST-LT, r = {ratio}")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "validation_accuracy_vs_bound.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    (root / "validation.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fashion_mnist_study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--root", default="docs/results/fashion_mnist_lt")
    parser.add_argument("--ratios", default="100,10", help="comma-separated imbalance ratios")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds of the test table")
    parser.add_argument("--processes", type=int, default=2, help="runs in parallel")
    parser.add_argument(
        "--stage",
        choices=("validation", "all", "report"),
        default="all",
        help="report: only the reports, from the finished runs (validation must be complete)",
    )
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root)
    ratios = [int(r) for r in args.ratios.split(",")]
    for ratio in ratios:
        if not _config(ratio).is_file():
            parser.error(f"no config {_config(ratio)} for ratio {ratio}")
    processes = 0 if args.stage == "report" else args.processes
    try:
        choices = run_validation(root, ratios, processes)
        write_validation_report(root, choices)
        if args.stage == "validation":
            return 0
        runs = test_runs(root, ratios, [int(s) for s in args.seeds.split(",")], choices)
        if args.stage == "all":
            _execute_all(runs, processes)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finished = [run.workdir / "results.json" for run in runs]
    finished = [path for path in finished if path.exists()]
    print(f"report of {len(finished)} of {len(runs)} test runs")
    if finished:
        summarize_runs.write_report(finished, root, metric="accuracy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
