"""The study's paired t-intervals, against textbook quantiles and a hand computation."""

import math

import numpy as np
import pytest

from studies import statistics

# Two-sided 95 % quantiles of Student's t, as printed in any statistics table.
TEXTBOOK = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086,
            29: 2.045, 30: 2.042}  # fmt: skip


@pytest.mark.parametrize("df, expected", sorted(TEXTBOOK.items()))
def test_the_table_matches_the_textbook_quantiles(df, expected):
    assert statistics.t_quantile_975(df, use_scipy=False) == pytest.approx(expected, abs=6e-4)


def test_the_table_matches_scipy_for_every_degree_of_freedom():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        table = statistics.t_quantile_975(df, use_scipy=False)
        assert table == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)
        assert statistics.t_quantile_975(df) == pytest.approx(table, abs=1e-4)


def test_beyond_the_table_the_last_entry_is_used_and_df_zero_is_refused():
    assert statistics.t_quantile_975(100, use_scipy=False) == statistics.T_975[-1]
    with pytest.raises(ValueError, match="degree of freedom"):
        statistics.t_quantile_975(0)


def test_paired_interval_by_hand():
    d = [0.5, 0.1, 0.3, 0.2, 0.4]  # mean 0.3, sd sqrt(0.025), n 5
    p = statistics.paired(d)
    se = math.sqrt(0.025) / math.sqrt(5)
    assert (p.n, p.mean, p.se) == (5, pytest.approx(0.3), pytest.approx(se))
    assert p.low == pytest.approx(0.3 - 2.7764 * se, abs=1e-4)
    assert p.high == pytest.approx(0.3 + 2.7764 * se, abs=1e-4)
    assert p.verdict == "gain"
    assert p.interval() == f"[{p.low:+.2f}, {p.high:+.2f}]"


def test_verdicts_need_the_interval_to_exclude_zero():
    # Two standard errors above 0 with n = 5 is not enough: t(4) = 2.78.
    d = np.array([0.1, 0.2, 0.3, 0.4, 1.1])
    p = statistics.paired(d)
    assert p.mean > 2 * p.se and p.low < 0
    assert p.verdict == "level"
    assert statistics.paired(-d - 1).verdict == "loss"
    with pytest.raises(ValueError, match="at least 2"):
        statistics.paired([0.3])
