"""The trainer's command line: ``python -m experiments.train``.

    python -m experiments.train [--config experiments/configs/NAME.py] [--workdir DIR]
                                [--config.BLOCK.FIELD=VALUE ...]

e.g. ``--config.method.name=la --config.la.tau=1.5`` (the manual: experiments/README.md).

With no ``--config`` it trains LA + LPL on long-tailed scikit-learn digits (offline; a
fresh run took 19 s on two shared CPU cores, start-up and compilation included).
``--config`` takes a path (relative to the current directory) or the name of a shipped
config (``--config fashion_mnist_lt_r100``). A work directory receives ``config.json``,
``metrics.jsonl`` and TensorBoard events, orbax checkpoints, plots, ``results.json`` and
``details.log`` (third-party logging); running again on it resumes from the latest
checkpoint. The default work directory is ``workdirs/<config>_<method>_seed<seed>``,
with ``_<hash>`` appended when the overrides change anything else (8 hex digits of the
resolved config's sha256; the keys that never change results, e.g. ``data.threads``,
are left out).

Exit status: 0 done; 2 a mistake in the command line, config, work directory or data
(one ``error:`` line); 1 the run failed (a non-finite loss, a full disk, an unexpected
error: one line, the traceback in ``WORKDIR/details.log``); 128 + N stopped by signal N
after saving a checkpoint.

A locked ``--workdir`` is refused at once, before JAX is imported (this module imports
only the standard library and :mod:`experiments.run` at first); the run itself is
:func:`experiments.train.train_and_evaluate`.
"""

from __future__ import annotations

import pathlib
import re
import sys

from experiments.run import console, errors, lock


def plain_text(text: str) -> str:
    """``text`` without reST markup: ````code```` and ``:role:`name``` as plain words.

    >>> plain_text("see :func:`experiments.train.main` and ``--config``")
    'see experiments.train.main and --config'
    """
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def _help_text(argv: list[str]) -> str:
    """This docstring, the methods, data sets, models and every config key, with the
    values of the config named by ``--config`` (the default config without one)."""
    from experiments import methods, models
    from experiments.config import command_line
    from experiments.data import registry

    given = command_line._values_of("--config", argv)
    name = given[-1] if given else None
    try:
        values = command_line.flat_items(command_line.load_config(name))
    except (ValueError, FileNotFoundError) as error:
        raise errors.UserError(str(error)) from None
    keys = "\n".join(f"  --config.{k}={v!r}" for k, v in sorted(values.items()))
    which = f"the values of {name}" if name else "values of the default config"

    def method_lines(multilabel: bool) -> str:
        lines = []
        for name in methods.NAMES:
            entry = methods.entry(name)
            if entry.multilabel == multilabel:
                blocks = f" [{', '.join(entry.blocks)}]" if entry.blocks else ""
                lines.append(f"  {name:17s} {entry.summary}{blocks}")
        return "\n".join(lines)

    aliases = ", ".join(f"{old} (now {new})" for old, new in methods.ALIASES.items())
    return (
        f"{plain_text(__doc__)}\n"
        f"methods (--config.method.name=; [the config blocks each reads]):\n"
        f"{method_lines(multilabel=False)}\n"
        f" multi-label:\n{method_lines(multilabel=True)}\n"
        f" older names, still accepted: {aliases}\n"
        f"datasets (--config.data.name=): {', '.join(registry.NAMES)}\n"
        f"models (--config.model.name=): {', '.join(models.MODELS)}\n\n"
        f"config keys ({which}; each is commented in "
        f"experiments/config/base.py and, for the method blocks, "
        f"experiments/methods/registry.py):\n{keys}"
    )


def command_line(argv: list[str]):
    """``(config, workdir, reference)``: ``reference`` is the config file's own config.

    ``-h`` / ``--help`` prints the methods, data sets, models and config keys, and exits.
    """
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        print(_help_text(argv))
        sys.exit(0)
    from experiments.config import command_line as config_command_line

    try:
        parsed = config_command_line.parse_command_line(argv)
    except (ValueError, FileNotFoundError) as error:
        raise errors.UserError(str(error)) from None
    workdir = parsed.workdir or config_command_line.default_workdir(parsed)
    return parsed.config, workdir, parsed.file_config


def main(argv: list[str]) -> int:
    """Runs the command line; returns the exit status (2: a user error, one line).

    Third-party output goes to ``WORKDIR/details.log`` (:mod:`experiments.run.console`);
    every failure is one ``error:`` line on stderr (and at most one hint line).
    """
    with console.capture():
        try:
            import jax

            from experiments import metrics, train
            from experiments.data import in_memory

            try:
                config, workdir, reference = command_line(argv)
                results = train.train_and_evaluate(config, workdir, reference=reference)
            except in_memory.DatasetNotPreparedError as error:
                raise errors.UserError(str(error)) from None
        except errors.UserError as error:
            console.error(str(error))
            return 2
        except FileNotFoundError as error:
            return _report_missing(error, argv)
        except errors.NonFiniteLossError as error:
            console.error(str(error))
            return 1
        except errors.TrainingInterrupted as interrupted:
            console.say(f"\n{interrupted}")
            return interrupted.exit_code
        except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
            console.error(
                "stopped at once by Ctrl-C, without saving a checkpoint; run the same "
                "command again to resume from the last one."
            )
            return 130
        except Exception as error:  # noqa: BLE001 - one line; the traceback to the log
            return _report_failure(error, argv)
    if jax.process_index() == 0:
        print(f"\nResults of {config.method.name} on {config.data.name} in {workdir}:")
        names = (*metrics.SINGLE_LABEL_METRICS, "validation_accuracy", *metrics.MULTILABEL_METRICS)
        for name in names:
            if name in results:
                value = results[name]
                why = metrics.EMPTY_GROUP.get(name, "no value")
                shown = f"{100 * value:.2f}%" if value is not None else f"-  ({why}: no class)"
                print(f"  {name:22s} {shown}")
    return 0


def _workdir_removed(argv: list[str]) -> bool:
    """Whether the run's work directory was removed while the run was using it (one line)."""
    if console.log_path() is None:  # the run had not started
        return False
    try:
        workdir = pathlib.Path(command_line(argv)[1]).resolve()
    except Exception:  # noqa: BLE001 - the one line matters more than its details
        return False
    if workdir.is_dir():
        return False
    console.error(
        f"the work directory {workdir} was removed while the run was using it; run the same "
        "command again to start over."
    )
    return True


def _report_missing(error: FileNotFoundError, argv: list[str]) -> int:
    """One line for a file that vanished: the work directory removed under a running run
    (status 1), else the missing file named (status 2)."""
    if _workdir_removed(argv):
        return 1
    console.error(f"{error.filename or error} does not exist ({error.strerror or 'not found'}).")
    return 2


def _report_failure(error: Exception, argv: list[str]) -> int:
    """One ``error:`` line for a failure that is not a mistake in the command (status 1)."""
    import traceback

    from experiments.run import workdir as workdir_lib

    details = "".join(traceback.format_exception(error))
    console.log(details)
    log = console.log_path()
    if _workdir_removed(argv):
        return 1
    disk_full = workdir_lib.disk_full(error)
    if disk_full:
        try:
            workdir = pathlib.Path(command_line(argv)[1]).resolve()
            kept = workdir_lib.complete_checkpoints(workdir)
        except Exception:  # noqa: BLE001 - the one line matters more than its details
            workdir, kept = "the work directory", []
        resume = f"checkpoint {kept[-1]}" if kept else "the start (no checkpoint yet)"
        console.error(
            f"the disk of {workdir} is full ({disk_full}). Free some space and run the same "
            f"command again: the run resumes from {resume}."
        )
        return 1
    if log is None:  # no work directory yet: the traceback is all there is
        console.say(details.rstrip())
    where = f"; the traceback is in {log}" if log else ""
    console.error(f"unexpected {type(error).__name__}: {errors.one_line(error)}{where}")
    return 1


def entry_point() -> None:
    """``python -m experiments.train``: runs :func:`main` and exits with its status."""
    lock.refuse_a_locked_workdir(sys.argv[1:])  # before the heavy imports
    console.keep_capturing_until_exit()  # late third-party output still goes to the log
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entry_point()
