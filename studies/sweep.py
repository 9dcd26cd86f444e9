"""Run a grid of (config, method, seed) and report it: ``python -m studies.sweep``.

    python -m studies.sweep --grid experiments/configs/default.py:ce,la,la_lpl \\
        --seeds 0,1,2 --root workdirs/sweep [--processes 2] [--config.KEY=VALUE ...]

Each run trains in its own process into ``ROOT/<config>/<method>/seed<k>``. The sweep
is resumable: finished runs (with ``results.json``) are skipped and interrupted ones
resume from their checkpoints. At the end ``studies.summarize_runs`` writes the table and
figures of everything under ROOT into ROOT/report (or ``--report-dir``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import pathlib
import subprocess
import sys

from studies import summarize_runs


@dataclasses.dataclass(frozen=True)
class Run:
    config: pathlib.Path
    method: str
    seed: int
    workdir: pathlib.Path
    settings: tuple[str, ...] = ()  # this run's own --config.KEY=VALUE overrides

    def command(self, overrides: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "experiments.train",
            "--config",
            str(self.config),
            "--workdir",
            str(self.workdir),
            f"--config.method.name={self.method}",
            f"--config.seed={self.seed}",
            *self.settings,
            *overrides,
        ]


def plan(grid: list[str], seeds: list[int], root: pathlib.Path) -> list[Run]:
    """The runs of ``CONFIG:METHOD,METHOD`` entries times seeds, in order."""
    runs = []
    for entry in grid:
        config, sep, methods = entry.rpartition(":")
        if not sep or not config or not methods:
            raise ValueError(f"--grid entries look like CONFIG.py:METHOD,METHOD; got {entry!r}.")
        config = pathlib.Path(config)
        if not config.is_file():
            raise ValueError(f"Config file {str(config)!r} in --grid does not exist.")
        for method in methods.split(","):
            for seed in seeds:
                workdir = root / config.stem / method / f"seed{seed}"
                runs.append(Run(config, method, seed, workdir))
    return runs


def execute(run: Run, overrides: list[str]) -> tuple[Run, int, str]:
    run.workdir.mkdir(parents=True, exist_ok=True)
    with (run.workdir / "train.log").open("a") as log:
        code = subprocess.call(run.command(overrides), stdout=log, stderr=subprocess.STDOUT)
    return run, code, str(run.workdir / "train.log")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="append", required=True, help="CONFIG.py:METHOD,...")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--root", default="workdirs/sweep", help="work directories go here")
    parser.add_argument("--processes", type=int, default=1, help="runs in parallel")
    parser.add_argument("--report-dir", default=None, help="default: ROOT/report")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"unrecognised arguments {bad}; overrides look like --config.KEY=VALUE")
    if args.processes < 1:
        parser.error(f"--processes must be >= 1; got {args.processes}")

    root = pathlib.Path(args.root)
    runs = plan(args.grid, [int(s) for s in args.seeds.split(",")], root)
    pending = [r for r in runs if not (r.workdir / "results.json").exists()]
    print(f"{len(runs)} runs, {len(runs) - len(pending)} already finished.", flush=True)
    failures = []
    with concurrent.futures.ThreadPoolExecutor(args.processes) as pool:
        futures = [pool.submit(execute, run, overrides) for run in pending]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run, code, log = future.result()
            status = "ok" if code == 0 else f"FAILED (exit {code}, see {log})"
            print(
                f"[{done}/{len(pending)}] {run.config.stem} {run.method} seed {run.seed}: {status}",
                flush=True,
            )
            if code:
                failures.append(run)
    report_dir = pathlib.Path(args.report_dir) if args.report_dir else root / "report"
    summarize_runs.write_report([root], report_dir)
    if failures:
        print(f"{len(failures)} runs failed; rerun the same command to retry them.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
