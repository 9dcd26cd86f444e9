"""Test setup: eight fake CPU devices, so sharding tests run on any machine.

The flag must be set before jax initialises its backends, hence at import time
of this conftest (pytest imports it before any test module).
"""

import os
import tempfile

_FLAGS = ["--xla_force_host_platform_device_count=8"]
# The fake devices are threads of one process: on two loaded cores a device can reach a
# collective long after the others. XLA aborts the process when a rendezvous waits past
# its termination timeout (tens of seconds by default); a slow machine is not a deadlock.
_FLAGS += [
    "--xla_cpu_collective_call_terminate_timeout_seconds=900",
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300",
]
# The tests compile hundreds of small programs and run each a few times: XLA's cheapest
# CPU backend settings cut the time of the suite by about a quarter.
# LPJAX_TEST_OPTIMIZED=1 keeps XLA's defaults.
# Subprocesses the tests spawn (the trainer's command line) inherit the flags.
if os.environ.get("LPJAX_TEST_OPTIMIZED", "0") != "1":
    _FLAGS += ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
# XLA's persistent compilation cache, shared by the pytest-xdist workers and the trainer
# processes the tests start: most end-to-end tests compile the same small train steps.
# It holds compiled programs only (keyed by program, flags and jax version), never results.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"lpjax-tests-xla-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow (used only by the tfds input pipeline) must never grab an accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_collection_modifyitems(config, items):
    """The slow (end-to-end) tests first: pytest-xdist's workers then finish together
    instead of one running the longest tests alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
