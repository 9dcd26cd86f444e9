"""Test setup: eight fake CPU devices, so sharding tests run on any machine.

The flag must be set before jax initialises its backends, hence at import time
of this conftest (pytest imports it before any test module).
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow (used only by the tfds input pipeline) must never grab an accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
