"""Helpers shared by the benchmark scripts: XLA setup, interleaved timing, JSON lines, tables.

Nothing here imports jax at module level, so a script can set ``XLA_FLAGS`` (fake CPU
devices, compiler flags) with :func:`configure_xla` before jax initialises.

Timing: every figure is a median over repeats, and every variant is timed in the same
process as its baseline, interleaved round by round (A, B, C, A, B, C, ...), so that a
change of machine load hits all of them alike. Two clocks are kept per call: wall time
(``perf_counter``) and process CPU time (``process_time``, all threads). On a shared
machine the CPU time is the steadier of the two: it counts the work done, not the time
spent waiting for a core.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
JAXPR_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


def configure_xla(num_devices: int | None = None, extra_flags: Iterable[str] = ()) -> None:
    """Sets ``XLA_FLAGS`` (fake host devices, extra flags); must run before jax is imported."""
    if "jax" in sys.modules:
        raise RuntimeError("configure_xla must be called before jax is imported.")
    flags = os.environ.get("XLA_FLAGS", "").split()
    if num_devices is not None:  # replaces a device count already in XLA_FLAGS
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={int(num_devices)}")
    flags.extend(extra_flags)
    os.environ["XLA_FLAGS"] = " ".join(flags)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a figure was measured on: versions, devices, CPU, load, flags, date."""
    import jax
    import jaxlib

    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
    }


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Times each zero-argument function ``repeats`` times, interleaved round by round.

    Each function must return what it computed (it is passed to ``jax.block_until_ready``
    inside the timed region). ``warmup`` untimed calls of each come first (compilation,
    first-touch allocation). The order of the functions rotates from round to round.

    Returns:
      ``{name: {"wall_s": [...], "cpu_s": [...]}}``.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            block(fns[name]())
    samples = {name: {"wall_s": [], "cpu_s": []} for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            block(fns[name]())
            samples[name]["wall_s"].append(time.perf_counter() - wall)
            samples[name]["cpu_s"].append(time.process_time() - cpu)
    return samples


def summarize(sample: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Median, min and interquartile range of the wall and CPU times (seconds)."""
    out = {}
    for clock in ("wall_s", "cpu_s"):
        values = sorted(sample[clock])
        out[f"median_{clock}"] = statistics.median(values)
        out[f"min_{clock}"] = values[0]
        if len(values) >= 4:
            q = statistics.quantiles(values, n=4)
            out[f"iqr_{clock}"] = q[2] - q[0]
    out["repeats"] = len(sample["wall_s"])
    return out


def ratio(a: float, b: float) -> float:
    return float("nan") if b == 0 else a / b


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class RssSampler:
    """Peak growth of the current RSS while the ``with`` body runs (sampled every 0.5 ms).

    A cross-check of XLA's own memory figures, not a replacement: memory the allocator
    reuses from earlier frees (e.g. the compiler's) does not show up as growth.
    """

    def __enter__(self):
        self.start = current_rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())
        self.growth = self.peak - self.start
        return False


class CompileCounter:
    """Counts jaxpr traces and XLA backend compilations (jax.monitoring events)."""

    def __init__(self):
        import jax

        self.traces = 0
        self.compiles = 0

        def listener(event, duration, **kwargs):
            if event == BACKEND_COMPILE_EVENT:
                self.compiles += 1
            elif event == JAXPR_TRACE_EVENT:
                self.traces += 1

        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)

    def reset(self):
        self.traces = 0
        self.compiles = 0

    def close(self):
        import jax

        jax.monitoring.unregister_event_duration_listener(self._listener)


def memory_stats(compiled) -> dict[str, int]:
    """XLA's buffer assignment of a compiled executable (``memory_analysis()``), in bytes."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    out = {
        key: int(getattr(stats, key))
        for key in (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        if hasattr(stats, key)
    }
    if hasattr(stats, "peak_memory_in_bytes"):
        out["peak_memory_in_bytes"] = int(stats.peak_memory_in_bytes)
    out["total_in_bytes"] = (
        out.get("argument_size_in_bytes", 0)
        + out.get("output_size_in_bytes", 0)
        - out.get("alias_size_in_bytes", 0)
        + out.get("temp_size_in_bytes", 0)
    )
    return out


class Emitter:
    """Prints each record as one JSON line (and appends it to ``path`` if given)."""

    def __init__(self, path: str | None = None, **common_fields):
        self.path = path
        self.common = common_fields
        self.records: list[dict] = []
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: Mapping[str, Any]) -> dict:
        record = _rounded({**self.common, **record})
        self.records.append(record)
        line = json.dumps(record, default=_json_default)
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        return record


def _rounded(x):
    """Floats to 6 significant digits (JSON lines stay readable)."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def _json_default(x):
    try:
        return x.item()
    except AttributeError:
        return str(x)


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000 or (value != 0 and abs(value) < 10 ** (-digits)):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A plain-text table of ``rows`` (dicts) restricted to ``columns``."""
    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print(flush=True)


def run_json_subprocess(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout=None):
    """Runs a python command, echoes its stderr tail on failure, returns its JSON-line records."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    records = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        print(f"[subprocess failed rc={proc.returncode}] {' '.join(args)}\n{tail}", file=sys.stderr)
    return records, proc.returncode
