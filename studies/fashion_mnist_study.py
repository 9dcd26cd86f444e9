"""The Fashion-MNIST-LT study: ``python -m studies.fashion_mnist_study``.

    python -m studies.fashion_mnist_study [--root docs/results/fashion_mnist_lt]
        [--ratios 100,10] [--seeds 1,2,3,4,5] [--processes 2]
        [--methods la,la_lpl,...] [--stage validation|test|all|emulation|report]

Every choice is made on the balanced *validation* split held out of the training pool;
the test split plays no part in it.

1. **Grids** (validation seed 0). Each tunable method is trained once per setting of its
   grid (:func:`grids`) at each ratio. LA's ``tau`` is settled first (grid, then
   finalists); the LA-chained methods then run on top of LA's choice. LPL and LA + LPL
   cover a two-dimensional grid -- tail budget x head scale -- under both inner step
   rules; LA + LPL then tries other head fractions and step counts around its best point.
2. **Finalists.** The three best settings of every method are re-scored on validation
   seeds 10 and 11; the choice is the best mean over the three validation seeds.
3. **Test.** Every method (:data:`METHODS`) at its choice, ``--seeds`` (1-5: fresh seeds,
   none of them part of a choice), both ratios.
4. **Longer training** (``--stage all``): LA, LDAM-DRW and the best LA + LPL variant (by
   validation) with four times the epochs, the first three of those seeds.
5. **The authors' protocol, emulated** (``--stage emulation``, r = 100): LA and four LA +
   LPL points, 60 epochs, every epoch's test accuracy logged (``run.eval_test_every_epoch``,
   used for nothing else), seeds 1-3; ``emulation.md`` sets the validation choice beside
   the best epoch and the best grid point on test (the authors' selection, not estimates).

The reports carry 95 % t-intervals (:mod:`studies.statistics`); ``--stage report`` also
writes ``earlier_trainer_runs.md`` and ``grid_selection.md``.

Writes ``ROOT/validation.md``, the validation landscape figures, ``ROOT/report.md`` (+
figures) and ``ROOT/long/report.md``, and one work directory per run under ``ROOT/runs``
(``validation/rR/METHOD/SETTING/seedS``, ``test/rR/METHOD/SETTING/seedS``,
``long/rR/METHOD/SETTING/seedS``). Resumable: finished runs (``results.json``) are
skipped, interrupted ones resume.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import pathlib
import sys

import numpy as np

from experiments.config import command_line
from studies import statistics, summarize_runs, sweep

CONFIG_DIR = command_line.CONFIG_DIR
VALIDATION_SEEDS = (0, 10, 11)  # seed 0: the grids; 10 and 11: the finalists too
FINALISTS = 3
LONG_EPOCHS_FACTOR = 4
LONG_SEEDS = 3  # the longer runs take the first three test seeds (4x the cost of a run each)

# Methods of the test table, in order. Methods without a grid use the config's defaults.
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
    "meta_lpl",
    "la_meta_lpl",
    "la_meta_data",
    "la_meta_offsets",
)
LA_CHAINED = ("la_lpl", "la_lpl_adaptive", "la_meta_lpl", "la_meta_data", "la_meta_offsets")
LA_LPL_VARIANTS = ("la_lpl", "la_lpl_adaptive", "la_meta_lpl")  # candidates of the longer runs

# The config keys the study sets, in one place.
KEY = {
    "tau": "la.tau",
    "epochs": "optim.num_epochs",
    "drw_start_epoch": "ldam.drw_start_epoch",
    "epsilon": "lpl.epsilon",
    "delta_epsilon": "lpl.delta_epsilon",
    "step_size": "lpl.step_size",
    "head_scale": "lpl.head_scale",
    "normalize": "lpl.normalize",
    "num_head_classes": "lpl.num_head_classes",
    "split_rule": "lpl.split_rule",
    "adaptive_target": "lpl.adaptive_target",
    "max_epsilon": "meta.max_epsilon",
    "meta_learning_rate": "meta.learning_rate",
    "every_steps": "meta.every_steps",
    "start_epoch": "meta.start_epoch",
    "scope": "meta.scope",
}
MEAN_RULE = "mean"


def _set(**values) -> tuple[str, ...]:
    return tuple(
        f"--config.{KEY[k]}={v:g}" if isinstance(v, float) else f"--config.{KEY[k]}={v}"
        for k, v in values.items()
    )


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a method's validation grid.

    ``coords`` place it in the landscape figures: ``(("tail", T), ("head", h), ("rule",
    "paper"))`` for the LPL grids, ``(("x", value),)`` for one-dimensional grids.
    """

    label: str
    overrides: tuple[str, ...]
    coords: tuple[tuple[str, object], ...] = ()

    def coord(self, name, default=None):
        return dict(self.coords).get(name, default)

    def chained(self, prefix: Setting) -> Setting:
        """This setting on top of LA's chosen ``prefix``."""
        return Setting(
            f"{prefix.label}_{self.label}", (*prefix.overrides, *self.overrides), self.coords
        )


DEFAULT = Setting("default", ())

# ----------------------------------------------------------------------------- the grids

TAIL_BUDGETS = (0.3, 1.0, 3.0, 10.0)
HEAD_SCALES = (0.0, 0.1, 0.3, 1.0)
STEP_RULES = ("paper", "unit")
STEPS_PER_BUDGET = 30  # alpha = T / 30: the rarest class takes 30 inner steps


def lpl_budget(tail: float, head: float, rule: str, *, steps: int = STEPS_PER_BUDGET) -> Setting:
    """The head/tail rule with the rarest class's bound ``tail`` and head bounds scaled by
    ``head``: ``eps = T/3``, ``d_eps = 2T/3`` (so the rarest tail class gets ``T``, the
    largest head class ``h T``), ``alpha = T / steps``."""
    label = f"T{tail:g}_h{head:g}_{rule}" + ("" if steps == STEPS_PER_BUDGET else f"_k{steps}")
    overrides = _set(
        epsilon=tail / 3,
        delta_epsilon=2 * tail / 3,
        step_size=tail / steps,
        head_scale=float(head),
        normalize=rule == "unit",
    )
    return Setting(label, overrides, (("tail", tail), ("head", head), ("rule", rule)))


def _scale(label: str, x: float, overrides: tuple[str, ...]) -> Setting:
    return Setting(label, overrides, (("x", x),))


def meta_lpl_settings() -> tuple[Setting, ...]:
    """Meta-LPL's knobs around one base point (eps_max 3, Adam 0.01, a meta step every 5
    steps from the start, classifier scope, the paper's step, 30 inner steps at eps_max),
    one knob at a time. The meta set stays 10 images per class, so that the two controls
    (``la_meta_data``, ``la_meta_offsets``) get the same data."""

    def setting(
        label, max_epsilon=3.0, rate=0.01, every=5, start=0, scope="classifier", rule="paper"
    ):
        overrides = _set(
            max_epsilon=max_epsilon,
            step_size=max_epsilon / STEPS_PER_BUDGET,
            meta_learning_rate=rate,
            every_steps=every,
            start_epoch=start,
            scope=scope,
            normalize=rule == "unit",
        )
        return Setting(label, overrides, (("x", max_epsilon),))

    return (
        setting("base"),
        setting("rate0.05", rate=0.05),
        setting("rate0.002", rate=0.002),
        setting("epsmax1", max_epsilon=1.0),
        setting("epsmax10", max_epsilon=10.0),
        setting("every1", every=1),
        setting("start5", start=5),
        setting("model_scope", scope="model"),
        setting("unit_step", rule="unit"),
    )


def grids() -> dict[str, tuple[Setting, ...]]:
    """method -> its validation grid (LA-chained methods: on top of LA's choice)."""
    lpl_2d = tuple(
        lpl_budget(t, h, rule) for rule in STEP_RULES for h in HEAD_SCALES for t in TAIL_BUDGETS
    )
    return {
        "la": tuple(_scale(f"tau{t:g}", t, _set(tau=t)) for t in (0.5, 1.0, 1.5, 2.0)),
        "lpl_varied": lpl_2d,
        "la_lpl": lpl_2d,
        "lpl_fixed": tuple(
            _scale(f"eps{e:g}", e, _set(epsilon=e, delta_epsilon=0.0, step_size=e / 20))
            for e in (0.3, 1.0, 3.0, 10.0)
        ),
        # The mean rule per batch: eps = s, d_eps = 2 s (the gap |tau - q_c| is below 1).
        "lpl_mean": tuple(
            _scale(
                f"s{s:g}",
                s,
                _set(split_rule=MEAN_RULE, epsilon=s, delta_epsilon=2 * s, step_size=s / 10),
            )
            for s in (0.3, 1.0, 3.0, 10.0)
        ),
        "lpl_adaptive": tuple(
            _scale(f"target{k:g}", k, _set(adaptive_target=k, epsilon=0.5, step_size=0.05))
            for k in (0.1, 0.3, 0.7)
        ),
        "la_lpl_adaptive": tuple(
            _scale(f"target{k:g}", k, _set(adaptive_target=k, epsilon=0.5, step_size=0.05))
            for k in (0.05, 0.1, 0.3)
        ),
        "meta_lpl": meta_lpl_settings(),
        "la_meta_lpl": meta_lpl_settings(),
        # The controls: LA's choice with the meta set (10 per class) added to the training
        # split, or used to fit per-class offsets after training.
        "la_meta_data": (Setting("meta10", ()),),
        "la_meta_offsets": (Setting("meta10", ()),),
    }


def refinements(method: str, best: Setting) -> tuple[Setting, ...]:
    """LA + LPL's second round at its best grid point: 2 or 6 head classes instead of 4,
    10 or 90 steps for the rarest class instead of 30."""
    if method != "la_lpl" or best.coord("tail") is None:
        return ()
    tail, head, rule = best.coord("tail"), best.coord("head"), best.coord("rule")
    base = lpl_budget(tail, head, rule)
    prefix = best.overrides[: len(best.overrides) - len(base.overrides)]
    la = Setting(best.label.removesuffix(f"_{base.label}"), prefix)
    out = [
        Setting(
            f"{base.label}_heads{n}",
            (*base.overrides, *_set(num_head_classes=n)),
            base.coords,
        ).chained(la)
        for n in (2, 6)
    ]
    out += [lpl_budget(tail, head, rule, steps=k).chained(la) for k in (10, 90)]
    return tuple(out)


# ----------------------------------------------------------------------------- runs


def _config(ratio: int) -> pathlib.Path:
    return CONFIG_DIR / f"fashion_mnist_lt_r{ratio}.py"


def _run(root, stage, ratio, method, setting: Setting, seed, extra=()) -> sweep.Run:
    workdir = root / "runs" / stage / f"r{ratio}" / method / setting.label / f"seed{seed}"
    return sweep.Run(_config(ratio), method, seed, workdir, (*setting.overrides, *extra))


def _finished(run: sweep.Run) -> bool:
    return (run.workdir / "results.json").exists()


def _score(run: sweep.Run) -> float:
    return json.loads((run.workdir / "results.json").read_text())["validation_accuracy"]


def _execute_all(runs: list[sweep.Run], processes: int) -> None:
    """Trains the runs not finished yet, ``processes`` at a time (0: train none, and fail
    if any is missing)."""
    pending = [r for r in dict.fromkeys(runs) if not _finished(r)]
    print(f"{len(runs)} runs, {len(runs) - len(pending)} already finished.", flush=True)
    if not pending:
        return
    if processes == 0:
        raise RuntimeError(f"{len(pending)} runs are missing; run the study (not --stage report).")
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


@dataclasses.dataclass
class Choice:
    """The validation round of one method at one ratio."""

    method: str
    ratio: int
    tried: list[tuple[Setting, dict[int, sweep.Run]]]  # setting -> {seed: run}

    def scores(self, setting: Setting) -> list[float]:
        runs = dict(self.tried)[setting]
        return [_score(run) for _, run in sorted(runs.items()) if _finished(run)]

    def mean(self, setting: Setting) -> float:
        return float(np.mean(self.scores(setting)))

    def ranked_on_first_seed(self) -> list[Setting]:
        return sorted((s for s, _ in self.tried), key=lambda s: -self.scores(s)[0])

    @property
    def finalists(self) -> list[Setting]:
        return self.ranked_on_first_seed()[:FINALISTS]

    @property
    def best(self) -> Setting:
        """The finalist with the best mean over the validation seeds."""
        return max(self.finalists, key=self.mean)


class Study:
    def __init__(self, root: pathlib.Path, ratios, methods, processes: int):
        self.root, self.ratios, self.methods, self.processes = root, ratios, methods, processes
        self.choices: dict[tuple[str, int], Choice] = {}

    def _grid_round(self, methods, prefix_of) -> None:
        """Seed 0 over the grids of ``methods`` (and LA + LPL's refinements)."""
        grid = grids()
        for ratio in self.ratios:
            for method in methods:
                settings = grid[method]
                prefix = prefix_of(ratio)
                if prefix is not None:
                    settings = tuple(s.chained(prefix) for s in settings)
                tried = [
                    (s, {0: _run(self.root, "validation", ratio, method, s, 0)}) for s in settings
                ]
                self.choices[method, ratio] = Choice(method, ratio, tried)
        self._execute_seed(methods, 0)
        refined = []
        for ratio in self.ratios:
            for method in methods:
                choice = self.choices[method, ratio]
                extra = refinements(method, choice.ranked_on_first_seed()[0])
                choice.tried += [
                    (s, {0: _run(self.root, "validation", ratio, method, s, 0)}) for s in extra
                ]
                refined += [runs[0] for _, runs in choice.tried[-len(extra) :]] if extra else []
        _execute_all(refined, self.processes)

    def _execute_seed(self, methods, seed) -> None:
        _execute_all(
            [
                runs[seed]
                for m in methods
                for r in self.ratios
                for _, runs in self.choices[m, r].tried
                if seed in runs
            ],
            self.processes,
        )

    def _finalist_round(self, methods) -> None:
        runs = []
        for ratio in self.ratios:
            for method in methods:
                choice = self.choices[method, ratio]
                if len(choice.tried) == 1:  # nothing to choose
                    continue
                for setting in choice.finalists:
                    seeds = dict(choice.tried)[setting]
                    for seed in VALIDATION_SEEDS[1:]:
                        seeds[seed] = _run(self.root, "validation", ratio, method, setting, seed)
                        runs.append(seeds[seed])
        _execute_all(runs, self.processes)

    def validate(self) -> None:
        tuned = [m for m in grids() if m in self.methods]
        if "la" in tuned or any(m in LA_CHAINED for m in tuned):
            self._grid_round(["la"], lambda ratio: None)
            self._finalist_round(["la"])
        alone = [m for m in tuned if m != "la" and m not in LA_CHAINED]
        chained = [m for m in tuned if m in LA_CHAINED]
        self._grid_round(alone, lambda ratio: None)
        self._grid_round(chained, lambda ratio: self.choices["la", ratio].best)
        self._finalist_round(alone + chained)

    def chosen(self, method: str, ratio: int) -> Setting:
        choice = self.choices.get((method, ratio))
        return DEFAULT if choice is None else choice.best

    def test_runs(self, seeds) -> list[sweep.Run]:
        """Seed-major, so that a study stopped part-way has every method at equal seeds."""
        if set(seeds) & set(VALIDATION_SEEDS):
            raise ValueError(f"seeds {VALIDATION_SEEDS} made the choices; test with others.")
        return [
            _run(self.root, "test", ratio, m, self.chosen(m, ratio), seed)
            for seed in seeds
            for ratio in self.ratios
            for m in self.methods
        ]

    def long_runs(self, seeds) -> list[sweep.Run]:
        """LA, LDAM-DRW and the best LA + LPL variant with LONG_EPOCHS_FACTOR x the epochs."""
        from experiments.config.command_line import load_config

        runs = []
        for ratio in self.ratios:
            base = load_config(_config(ratio))
            extra = _set(
                epochs=LONG_EPOCHS_FACTOR * base.optim.num_epochs,
                drw_start_epoch=LONG_EPOCHS_FACTOR * base.ldam.drw_start_epoch,
            )
            variants = [m for m in LA_LPL_VARIANTS if (m, ratio) in self.choices]
            best = max(variants, key=lambda m: self.choices[m, ratio].mean(self.chosen(m, ratio)))
            for seed in seeds:
                for method in ("la", "ldam_drw", best):
                    setting = self.chosen(method, ratio)
                    runs.append(_run(self.root, "long", ratio, method, setting, seed, extra))
        return runs


# ------------------------------------------------------- the authors' protocol, emulated

# The authors' scripts log the best *test* accuracy over epochs and tune on test. The
# emulation trains LA and four LA + LPL points for 60 epochs with every epoch's test and
# validation accuracy logged (run.eval_test_every_epoch, used nowhere else), so that the
# three selections can be set side by side on the same runs.
EMULATION_RATIO = 100
EMULATION_SEEDS = (1, 2, 3)  # test seeds: none took part in a choice
EMULATION_TAILS = (0.3, 3.0)
EMULATION_HEADS = (0.3, 1.0)
EMULATION_FLAGS = ("--config.run.eval_test_every_epoch=True",)


def emulation_settings(la_choice: Setting) -> dict[str, tuple[Setting, ...]]:
    """LA at its choice; LA + LPL at tail budget x head scale (the paper's step) on it."""
    points = tuple(
        lpl_budget(t, h, "paper").chained(la_choice)
        for t in EMULATION_TAILS
        for h in EMULATION_HEADS
    )
    return {"la": (la_choice,), "la_lpl": points}


def emulation_runs(study: Study) -> list[sweep.Run]:
    from experiments.config.command_line import load_config

    ratio = EMULATION_RATIO
    base = load_config(_config(ratio))
    extra = (*_set(epochs=LONG_EPOCHS_FACTOR * base.optim.num_epochs), *EMULATION_FLAGS)
    settings = emulation_settings(study.chosen("la", ratio))
    return [
        _run(study.root, "emulation", ratio, method, setting, seed, extra)
        for seed in EMULATION_SEEDS
        for method, group in settings.items()
        for setting in group
    ]


# ----------------------------------------------------------------------------- reports


def write_validation_report(study: Study) -> None:
    """``validation.md`` (every setting; finalists with their three seeds; the choice in
    bold) and the landscape figures."""
    lines = [
        "# Validation round (balanced validation split; the test split is not used)",
        "",
        f"Seed {VALIDATION_SEEDS[0]} for every grid point; the {FINALISTS} best of each "
        f"method also with seeds {', '.join(map(str, VALIDATION_SEEDS[1:]))}; the choice "
        "(bold) is the best mean over the three seeds.",
        "",
        "| r | method | setting | overrides | seed 0 % | mean of 3 seeds % |",
        "|---|---|---|---|---:|---:|",
    ]
    for (method, ratio), choice in sorted(study.choices.items(), key=lambda x: (-x[0][1], x[0][0])):
        best = choice.best
        for setting, runs in choice.tried:
            if not _finished(runs[0]):
                continue
            scores = choice.scores(setting)
            first = f"{100 * scores[0]:.2f}"
            mean = f"{100 * np.mean(scores):.2f}" if len(scores) > 1 else ""
            if setting == best:
                first, mean = f"**{first}**", f"**{mean}**"
            flags = " ".join(o.removeprefix("--config.") for o in setting.overrides)
            lines.append(f"| {ratio} | {method} | {setting.label} | `{flags}` | {first} | {mean} |")
    (study.root / "validation.md").write_text("\n".join(lines) + "\n")
    _landscape_figure(study)


def _landscape_figure(study: Study) -> None:
    """Validation accuracy (seed 0) over tail budget x head scale, per step rule, for LPL and
    LA + LPL, with LA's choice for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (m, r, rule)
        for r in study.ratios
        for m in ("lpl_varied", "la_lpl")
        if (m, r) in study.choices
        for rule in STEP_RULES
    ]
    if not panels:
        return
    fig, axes = plt.subplots(
        len(study.ratios),
        len(panels) // len(study.ratios),
        figsize=(16, 3.8 * len(study.ratios)),
        squeeze=False,
    )
    for ax, (method, ratio, rule) in zip(axes.flat, panels, strict=True):
        choice = study.choices[method, ratio]
        grid = np.full((len(HEAD_SCALES), len(TAIL_BUDGETS)), np.nan)
        for setting, runs in choice.tried:
            if setting.coord("rule") == rule and _finished(runs[0]) and "_k" not in setting.label:
                if "_heads" in setting.label:
                    continue
                i = HEAD_SCALES.index(setting.coord("head"))
                j = TAIL_BUDGETS.index(setting.coord("tail"))
                grid[i, j] = 100 * _score(runs[0])
        la = study.choices.get(("la", ratio))
        reference = 100 * la.scores(la.best)[0] if la else np.nanmax(grid)
        image = ax.imshow(grid - reference, cmap="RdBu", vmin=-10, vmax=10, origin="lower")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(TAIL_BUDGETS)), [f"{t:g}" for t in TAIL_BUDGETS])
        ax.set_yticks(range(len(HEAD_SCALES)), [f"{h:g}" for h in HEAD_SCALES])
        ax.set_xlabel("tail budget T (rarest class)")
        ax.set_ylabel("head scale h")
        ax.set_title(f"r = {ratio}: {method}, {rule} step", fontsize=10)
    fig.colorbar(image, ax=axes, label="validation accuracy - LA's (points)", shrink=0.8)
    fig.suptitle("Fashion-MNIST-LT validation accuracy % (seed 0) against head and tail budgets")
    fig.savefig(study.root / "validation_landscape.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _test_results(runs: list[sweep.Run]) -> dict[tuple[int, str], dict[int, dict]]:
    """``{(ratio, method): {seed: results}}`` of the finished runs."""
    table: dict[tuple[int, str], dict[int, dict]] = {}
    for run in runs:
        if _finished(run):
            ratio = int(run.workdir.parts[-4].removeprefix("r"))
            results = json.loads((run.workdir / "results.json").read_text())
            table.setdefault((ratio, run.method), {})[run.seed] = results
    return table


REPORT_COMMAND = "python -m studies.fashion_mnist_study --stage report"
NULL_METHOD = "balanced_softmax"  # LA with tau = 1, the same loss: the table's empirical null


def write_comparison(study: Study, runs: list[sweep.Run], path: pathlib.Path) -> None:
    """``comparison.md``: each method's test accuracy against LA's, seed by seed.

    The difference is paired (a seed fixes the training subset, the initialisation and
    the batches of both runs): its mean, the standard error of that mean (sd / sqrt(n))
    and the 95 % t-interval (:mod:`studies.statistics`); a gain or a loss is claimed only
    when the interval excludes 0. The number of comparisons is stated, and Balanced
    Softmax -- LA with tau = 1, the same loss -- is shown as the table's empirical null.
    Also the mean accuracy of the three rarest classes, and each method's choice.
    """
    table = _test_results(runs)
    rows, compared, null = [], [], []
    for ratio in study.ratios:
        la = table.get((ratio, "la"), {})
        for method in study.methods:
            by_seed = table.get((ratio, method))
            if not by_seed:
                continue
            acc = np.array([r["accuracy"] for r in by_seed.values()]) * 100
            spread = f" ± {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
            paired = [
                100 * (r["accuracy"] - la[s]["accuracy"]) for s, r in by_seed.items() if s in la
            ]
            diff, interval, verdict = "-", "", ""
            if method != "la" and len(paired) > 1:
                d = statistics.paired(paired)
                diff, interval, verdict = f"{d.mean:+.2f} ± {d.se:.2f}", d.interval(), d.verdict
                compared.append((ratio, method, d))
                if method == NULL_METHOD:
                    null.append((ratio, d))
            rarest = np.mean(
                [
                    np.mean(np.asarray(r["per_class_accuracy"])[np.argsort(r["class_counts"])[:3]])
                    for r in by_seed.values()
                ]
            )
            label = study.chosen(method, ratio).label
            rows.append(
                f"| {ratio} | {method} | `{label}` | {len(acc)} | {acc.mean():.2f}{spread} | "
                f"{diff} | {interval} | {verdict} | {100 * rarest:.1f} |"
            )
    gains = [f"{m} (r = {r})" for r, m, d in compared if d.verdict == "gain"]
    losses = sum(d.verdict == "loss" for _, _, d in compared)
    lines = [
        "# Compared with logit adjustment (test split, seeds as in report.md)",
        "",
        f"Generated by `{REPORT_COMMAND}`.",
        "",
        "Difference to LA: mean over seeds of (method - LA) on the same seed, ± its standard "
        "error (sd / sqrt(n)), and its 95 % t-interval (mean ± t(0.975, n - 1) SE; "
        f"t(0.975, 4) = {statistics.t_quantile_975(4):.3f} for 5 seeds, "
        f"t(0.975, 2) = {statistics.t_quantile_975(2):.3f} for 3). A gain or a loss is "
        "claimed only when the interval excludes 0; otherwise the method is level with LA.",
        "",
        f"**{len(compared)} comparisons** with LA in this table, each at 95 %: if nothing "
        f"differed from LA, about {0.05 * len(compared):.1f} intervals would exclude 0 by "
        f"chance alone. {len(gains)} exclude 0 above it"
        + (f" ({', '.join(gains)})" if gains else "")
        + f", {losses} below it.",
    ]
    if null:
        described = "; ".join(
            f"r = {r}: {d.mean:+.2f} ± {d.se:.2f} points, {d.interval()}" for r, d in null
        )
        lines += [
            "",
            f"**The empirical null**: `{NULL_METHOD}` is LA with tau = 1 (the same loss, "
            "log-prior offsets added to the logits), so its difference to LA is what two "
            "runs of one method differ by when only float rounding (and here the trainer "
            f"that made them) differs: {described}. A difference of that size is noise.",
        ]
    lines += [
        "",
        "| r | method | choice | seeds | test acc. % | - LA (points) ± SE | 95 % interval "
        "| verdict | 3 rarest % |",
        "|---|---|---|---:|---:|---:|---|---|---:|",
        *rows,
    ]
    path.write_text("\n".join(lines) + "\n")


# The paper's margins of LA + LPL over LA (ResNet-32, top-1 error % -> accuracy points;
# /docs/method.md section 7), and how the authors' scripts chose (best epoch on test).
PAPER_MARGINS = (
    ("CIFAR-10-LT, r = 100", 22.33, 21.46),
    ("CIFAR-100-LT, r = 100", 56.11, 53.89),
)
EMULATION_COMMAND = REPORT_COMMAND


def _emulation_table(runs: list[sweep.Run]) -> dict[str, dict[int, dict]]:
    """``{setting label: {seed: results}}`` of the finished emulation runs."""
    table: dict[str, dict[int, dict]] = {}
    for run in runs:
        if _finished(run):
            results = json.loads((run.workdir / "results.json").read_text())
            table.setdefault(run.workdir.parent.name, {})[run.seed] = results
    return table


def write_emulation_report(study: Study, runs: list[sweep.Run], root: pathlib.Path) -> None:
    """``emulation.md`` and ``logit_effect.png``: the authors' protocol set beside ours.

    On the same runs (LA and four LA + LPL points, 60 epochs, every epoch's test and
    validation accuracy logged), LA + LPL minus LA on the same seed under three selections:
    the point chosen on validation at the final epoch (ours); the best epoch on test; the
    best grid point on test. The gaps are the selection gain. Then what LA + LPL's delta
    does to the LA-adjusted logits over training.
    """
    table = _emulation_table(runs)
    la_label = study.chosen("la", EMULATION_RATIO).label
    la = table.get(la_label, {})
    points = {k: v for k, v in table.items() if k != la_label}
    seeds = sorted(set(la).intersection(*[set(v) for v in points.values()])) if points else []
    if not seeds:
        return
    labels = sorted(points)

    def final(results, key="accuracy"):
        return 100 * results[key]

    def best_epoch(results):
        return 100 * max(e["accuracy"] for e in results["epoch_history"])

    def mean_over_seeds(label, score):
        return float(np.mean([score(points[label][s]) for s in seeds]))

    chosen = max(
        labels, key=lambda p: mean_over_seeds(p, lambda r: final(r, "validation_accuracy"))
    )
    grid_final = max(labels, key=lambda p: mean_over_seeds(p, final))
    grid_best = max(labels, key=lambda p: mean_over_seeds(p, best_epoch))
    la_final = {s: final(la[s]) for s in seeds}
    la_best = {s: best_epoch(la[s]) for s in seeds}
    rows = [
        ("ours: chosen on validation, final epoch", chosen, final, la_final),
        ("best epoch on test, the validation-chosen point", chosen, best_epoch, la_final),
        ("best grid point on test, final epoch", grid_final, final, la_final),
        ("best grid point and best epoch on test (the authors' selection)", grid_best, best_epoch,
         la_final),
        ("the authors' selection against LA's best epoch on test", grid_best, best_epoch, la_best),
    ]  # fmt: skip
    ours = None
    lines = [
        "# The authors' protocol, emulated (r = 100, 60 epochs)",
        "",
        f"Generated by `{EMULATION_COMMAND}` from the runs of "
        "`python -m studies.fashion_mnist_study --ratios 100 --stage emulation` "
        f"(`runs/emulation/`: LA `{la_label}` and LA + LPL at tail budget T in "
        f"{{{', '.join(f'{t:g}' for t in EMULATION_TAILS)}}} x head scale h in "
        f"{{{', '.join(f'{h:g}' for h in EMULATION_HEADS)}}}, the paper's step, 30 inner "
        f"steps; seeds {', '.join(map(str, seeds))}; every epoch's test and validation "
        "accuracy logged with `run.eval_test_every_epoch`, used for this table only).",
        "",
        "**The best epoch on test and the best grid point on test are the authors' "
        "selection, not valid estimates**: they choose on the split they report. Only the "
        "first row is an estimate; the others measure how much choosing on test adds. "
        "Differences: LA + LPL minus LA on the same seed, in points, ± SE, 95 % t-interval"
        + (
            f" (t(0.975, {len(seeds) - 1}) = {statistics.t_quantile_975(len(seeds) - 1):.3f})."
            if len(seeds) > 1
            else " (one seed so far: no interval)."
        ),
        "",
        "| selection | LA + LPL point | LA + LPL test % | LA test % | LA + LPL - LA | 95 % "
        "interval | selection gain over ours |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, label, score, baseline in rows:
        values = np.array([score(points[label][s]) for s in seeds])
        base = np.array([baseline[s] for s in seeds])
        diff, interval = _difference(values - base)
        mean = float(np.mean(values - base))
        gain = "" if ours is None else f"{mean - ours:+.2f}"
        ours = mean if ours is None else ours
        lines.append(
            f"| {name} | `{label}` | {values.mean():.2f}{_spread(values)} | "
            f"{base.mean():.2f}{_spread(base)} | {diff} | {interval} | {gain} |"
        )
    la_gain, la_interval = _difference([la_best[s] - la_final[s] for s in seeds])
    every_run = [best_epoch(r) - final(r) for group in table.values() for r in group.values()]
    run_gain, run_interval = _difference(every_run)
    lines += [
        "",
        f"LA's own best epoch on test is {la_gain} points{_space(la_interval)} above its "
        f"final epoch; over all {len(every_run)} finished runs of this table (every setting "
        f"and seed), the best epoch on test is {run_gain} points{_space(run_interval)} above "
        "the final epoch. Choosing the epoch on test inflates any method, LPL or not; with "
        "this study's cosine schedule the last epochs barely move, so the best epoch is "
        "close to the final one (a step schedule, as in the authors' scripts, moves more).",
        "",
        "The paper's margins of LA + LPL over LA (ResNet-32; its numbers are top-1 error, "
        "here turned into accuracy points; the authors' scripts select the best epoch on "
        "test):",
        "",
        "| data | LA error % | LA + LPL error % | margin (points) |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {a:.2f} | {b:.2f} | {a - b:+.2f} |" for name, a, b in PAPER_MARGINS),
        "",
        "Every point, mean ± std over the seeds (test %; validation % at the final epoch):",
        "",
        "| setting | final test % | best-epoch test % | final validation % |",
        "|---|---:|---:|---:|",
    ]
    for label, group in ((la_label, la), *((p, points[p]) for p in labels)):
        f = np.array([final(group[s]) for s in seeds])
        b = np.array([best_epoch(group[s]) for s in seeds])
        v = np.array([final(group[s], "validation_accuracy") for s in seeds])
        lines.append(
            f"| `{label}` | {f.mean():.2f}{_spread(f)} | {b.mean():.2f}{_spread(b)} | "
            f"{v.mean():.2f}{_spread(v)} |"
        )
    lines += ["", *_logit_effect(points, labels, seeds, root / "logit_effect.png")]
    (root / "emulation.md").write_text("\n".join(lines) + "\n")


def write_grid_selection(study: Study, path: pathlib.Path) -> None:
    """``grid_selection.md``: on the committed validation grids (15 epochs, seed 0), the
    point the study chose (on validation) against the point the test split would choose.

    Every grid run also reports its test accuracy (never used for a choice); picking the
    best of a grid on test is the authors' selection of a setting, measured for free.
    """
    lines = [
        "# Choosing a grid point on test instead of validation (15 epochs, seed 0)",
        "",
        f"Generated by `{REPORT_COMMAND}` from the validation grids' runs (`runs/validation/`, "
        "seed 0). Each grid run also scored the test split at its end; the study never used "
        "that. Here it is used as the authors' scripts use it: the grid point with the best "
        "*test* accuracy, against the point chosen on validation. One seed: no interval; the "
        "spread of one setting over seeds is about 1 point at r = 100 (`README.md`).",
        "",
        "| r | method | points | LA test % | chosen on validation: point | test % | - LA "
        "| best on test: point | test % | - LA | selection gain |",
        "|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for ratio in study.ratios:
        la_choice = study.choices.get(("la", ratio))
        if la_choice is None:
            continue
        la_test = 100 * _test_score(dict(la_choice.tried)[la_choice.best][0])
        for method in ("la", *LA_LPL_VARIANTS, "lpl_varied"):
            choice = study.choices.get((method, ratio))
            if choice is None:
                continue
            tried = [(st, runs[0]) for st, runs in choice.tried if _finished(runs[0])]
            by_validation = choice.best  # the study's choice (best mean of the finalists)
            best = max(tried, key=lambda x: _test_score(x[1]))
            val_test = 100 * _test_score(dict(tried)[by_validation])
            test_best = 100 * _test_score(best[1])
            lines.append(
                f"| {ratio} | {method} | {len(tried)} | {la_test:.2f} | `{by_validation.label}` "
                f"| {val_test:.2f} | {val_test - la_test:+.2f} | `{best[0].label}` | "
                f"{test_best:.2f} | {test_best - la_test:+.2f} | {test_best - val_test:+.2f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def _test_score(run: sweep.Run) -> float:
    return json.loads((run.workdir / "results.json").read_text())["accuracy"]


def _space(text: str) -> str:
    return f" {text}" if text else ""


def _spread(values) -> str:
    """`` ± sample std`` of more than one value, else nothing."""
    return f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""


def _difference(values) -> tuple[str, str]:
    """``("mean ± SE", "[low, high]")`` of paired differences; one value: no interval."""
    if len(values) < 2:
        return f"{float(np.mean(values)):+.2f} (1 seed)", ""
    d = statistics.paired(values)
    return f"{d.mean:+.2f} ± {d.se:.2f}", d.interval()


def _logit_effect(points, labels, seeds, figure: pathlib.Path) -> list[str]:
    """The table and figure of what LA + LPL's delta does to the LA-adjusted logits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "## What LA + LPL does to the logits",
        "",
        "Measured in every training step on the batch (`perturbation_history`, one entry per "
        "logging window, averaged over the run and the seeds): the per-sample L1 norm of "
        "LPL's delta (logits moved), the median |LA-adjusted margin| `|z_y - max_{j != y} "
        "z_j|`, their ratio, and the predictions (arg-max) delta changes in a batch of 128. "
        "`logit_effect.png` shows them over training.",
        "",
        "| setting | delta L1 per sample | median margin | delta / margin | flipped per batch |",
        "|---|---:|---:|---:|---:|",
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for label in labels:
        curves = {k: [] for k in ("delta_l1", "reference_margin", "flips")}
        for seed in seeds:
            history = points[label][seed].get("perturbation_history", [])
            for key in curves:
                curves[key].append([w[key] for w in history])
        if not all(curves["delta_l1"]):
            continue
        n = min(len(c) for c in curves["delta_l1"])
        mean = {k: np.mean([c[:n] for c in v], axis=0) for k, v in curves.items()}
        lines.append(
            f"| `{label}` | {mean['delta_l1'].mean():.3f} | "
            f"{np.median(mean['reference_margin']):.2f} | "
            f"{100 * mean['delta_l1'].mean() / np.median(mean['reference_margin']):.1f} % | "
            f"{mean['flips'].mean():.2f} |"
        )
        epochs = np.linspace(0, 60, n + 1)[1:]
        for ax, key in zip(axes, curves, strict=True):
            ax.plot(epochs, mean[key], label=label.split("_", 1)[-1], lw=1)
    titles = ("delta L1 per sample (logits)", "median |LA-adjusted margin|", "flips per batch")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"LA + LPL on Fashion-MNIST-LT r = 100: its delta against LA's logits "
                 f"(mean over seeds {', '.join(map(str, seeds))})")  # fmt: skip
    fig.tight_layout()
    fig.savefig(figure, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return lines


def _is_flat_config(path: pathlib.Path) -> bool:
    """True for a ``config.json`` of the earlier trainer (flat keys, no ``method`` block)."""
    return not isinstance(json.loads(path.read_text()).get("method"), dict)


def write_provenance(root: pathlib.Path, path: pathlib.Path) -> None:
    """``earlier_trainer_runs.md``: every committed run made by the trainer before its
    rewrite (its ``config.json`` has the flat keys of that release)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    runs_root = root / "runs"
    for config in sorted(runs_root.rglob("config.json")):
        if (config.parent / "results.json").exists() and _is_flat_config(config):
            parts = config.parent.relative_to(runs_root).parts
            groups.setdefault(parts[:-1], []).append(parts[-1].removeprefix("seed"))
    total = sum(len(v) for v in groups.values())
    lines = [
        "# Runs made by the earlier trainer",
        "",
        f"Generated by `{REPORT_COMMAND}`.",
        "",
        f"{total} committed runs under `runs/` were trained before the train step was "
        "rewritten in the global view (their `config.json` has the flat keys of that "
        "release, e.g. `la_tau`, `batch_size`). Same configs, same arithmetic up to float "
        "rounding; their results are used as they are.",
        "",
        "| stage | r | method | setting | seeds |",
        "|---|---|---|---|---|",
    ]
    for key, seeds in sorted(groups.items()):
        stage, ratio, method, setting = key
        seeds = ", ".join(sorted(seeds, key=int))
        lines.append(f"| {stage} | {ratio.removeprefix('r')} | {method} | `{setting}` | {seeds} |")
    path.write_text("\n".join(lines) + "\n")


def plot_learned_theta(study: Study, runs: list[sweep.Run], path: pathlib.Path) -> None:
    """The signed bounds Meta-LPL learned, per class (mean over the test seeds), per ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _test_results(runs)
    panels = [(r, m) for r in study.ratios for m in ("meta_lpl", "la_meta_lpl") if (r, m) in table]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (ratio, method) in zip(axes[0], panels, strict=True):
        results = list(table[ratio, method].values())
        theta = np.mean([r["theta"] for r in results], axis=0)
        counts = np.asarray(results[0]["class_counts"])
        order = np.argsort(-counts, kind="stable")
        values = theta[order]
        ax.bar(range(len(order)), values, color=np.where(values > 0, "tab:red", "tab:blue"))
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(order)), [str(c) for c in order])
        ax.set_xlabel("class, most frequent first")
        ax.set_title(f"r = {ratio}: {method}", fontsize=10)
    axes[0, 0].set_ylabel("learned theta_c (> 0: maximised)")
    fig.suptitle("Meta-LPL's learned split and bounds (mean over the test seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m studies.fashion_mnist_study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--root", default="docs/results/fashion_mnist_lt")
    parser.add_argument("--ratios", default="100,10", help="comma-separated imbalance ratios")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds of the test table")
    parser.add_argument("--processes", type=int, default=2, help="runs in parallel")
    parser.add_argument("--methods", default=",".join(METHODS), help="a subset of the methods")
    parser.add_argument(
        "--stage",
        choices=("validation", "test", "all", "emulation", "report"),
        default="all",
        help="validation: the choices only; test: and the test table; all: and the longer "
        "runs; report: only the reports, from the finished runs",
    )
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root)
    ratios = [int(r) for r in args.ratios.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    for ratio in ratios:
        if not _config(ratio).is_file():
            parser.error(f"no config {_config(ratio)} for ratio {ratio}")
    seeds = [int(s) for s in args.seeds.split(",")]
    study = Study(root, ratios, methods, 0 if args.stage == "report" else args.processes)
    try:
        study.validate()
        write_validation_report(study)
        if args.stage == "validation":
            return 0
        runs = study.test_runs(seeds)
        if args.stage != "report":
            _execute_all(runs, study.processes)
        chained = any((m, r) in study.choices for m in LA_LPL_VARIANTS for r in ratios)
        long_seeds = seeds[:LONG_SEEDS]
        long = study.long_runs(long_seeds) if args.stage in ("all", "report") and chained else []
        if args.stage == "all":
            _execute_all(long, study.processes)
        emulated = []
        if args.stage in ("emulation", "report") and EMULATION_RATIO in ratios:
            emulated = emulation_runs(study)
        if args.stage == "emulation":
            _execute_all(emulated, study.processes)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, group in (("", runs), ("long", long)):
        finished = [run.workdir / "results.json" for run in group if _finished(run)]
        print(f"{name or 'test'} report of {len(finished)} of {len(group)} runs")
        if finished:
            summarize_runs.write_report(finished, root / name, metric="accuracy")
            write_comparison(study, group, root / name / "comparison.md")
    plot_learned_theta(study, runs, root / "learned_theta.png")
    write_provenance(root, root / "earlier_trainer_runs.md")
    write_grid_selection(study, root / "grid_selection.md")
    if emulated:
        write_emulation_report(study, emulated, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
