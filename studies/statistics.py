"""Paired differences over seeds with 95 % t-intervals (the study's reports).

A seed fixes the training subset, the initialisation and the batches of both runs, so
a method and its baseline are compared seed by seed: the mean of the differences, its
standard error ``sd / sqrt(n)`` and the 95 % interval ``mean ± t(0.975, n - 1) SE``. A
gain (or a loss) is claimed only when the interval excludes 0.

The t quantiles come from SciPy when it is installed, else from :data:`T_975`, the
two-sided 95 % quantiles for 1-30 degrees of freedom (beyond 30: the normal's 1.96 is
within 4 % of the truth and the table's last entry is used).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# t(0.975, df) for df = 1..30 (any statistics table; checked against SciPy in the tests).
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_quantile_975(df: int, *, use_scipy: bool = True) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom; got {df}.")
    if use_scipy:
        try:
            from scipy import stats
        except ImportError:
            pass
        else:
            return float(stats.t.ppf(0.975, df))
    return T_975[min(df, len(T_975)) - 1]


@dataclasses.dataclass(frozen=True)
class Paired:
    """A paired difference over ``n`` seeds: mean, standard error, 95 % t-interval."""

    n: int
    mean: float
    se: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``gain`` or ``loss`` when the interval excludes 0, else ``level``."""
        if self.low > 0:
            return "gain"
        if self.high < 0:
            return "loss"
        return "level"

    def interval(self, digits: int = 2) -> str:
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired(differences) -> Paired:
    """The paired difference of ``differences`` (one per seed; at least two)."""
    d = np.asarray(differences, np.float64)
    if d.size < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds; got {d.size}.")
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    half = t_quantile_975(d.size - 1) * se
    return Paired(int(d.size), mean, se, mean - half, mean + half)
