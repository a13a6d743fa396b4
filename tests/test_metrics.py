import numpy as np
import pytest

from bench.metrics import accuracy, aupr_in, aupr_out, auroc, detection_metrics, fpr_at_95_tpr


def test_auroc_hand_worked():
    # anomaly pairs: 0.35 > 0.1 yes, 0.35 > 0.4 no, 0.8 beats both -> 3 of 4
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auroc_ties_count_half():
    # anomalies 0.5, 0.9 vs normals 0.5, 0.5: two ties (0.5 each) and two wins
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.9]) == pytest.approx(0.75)


def test_aupr_in_and_out_differ_by_positive_class():
    y, s = [0, 0, 0, 1], [0.1, 0.2, 0.9, 0.5]
    # anomalies positive, ranked by score: N(0.9), A(0.5) -> precision 1/2 at the only anomaly
    assert aupr_out(y, s) == pytest.approx(0.5)
    # normals positive, ranked by -score: N, N, A, N -> (1 + 1 + 3/4) / 3
    assert aupr_in(y, s) == pytest.approx((1 + 1 + 0.75) / 3)


def test_fpr95_threshold_accepts_95_percent_of_normals():
    normals = np.arange(20.0)  # 95% of 20 = 19 accepted -> threshold = 18
    y = np.r_[np.zeros(20), np.ones(3)]
    assert fpr_at_95_tpr(y, np.r_[normals, [5.0, 18.5, 30.0]]) == pytest.approx(1 / 3)
    # an anomaly tied with the threshold is accepted
    assert fpr_at_95_tpr(np.r_[np.zeros(20), np.ones(2)], np.r_[normals, [18.0, 30.0]]) == 0.5


def test_fpr95_small_sets():
    # 95% of 3 normals needs all three: threshold 0.9 accepts the 0.5 anomaly
    assert fpr_at_95_tpr([0, 0, 0, 1], [0.1, 0.2, 0.9, 0.5]) == 1.0
    assert fpr_at_95_tpr([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.5]) == 0.0


def test_perfect_and_reversed_scores():
    y = [0, 0, 1, 1]
    m = detection_metrics(y, [0, 1, 2, 3])
    assert m == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    assert auroc(y, [3, 2, 1, 0]) == 0.0


def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75


@pytest.mark.parametrize("bad", [([0, 0], [1, 2]), ([1, 1], [1, 2]), ([0, 1], [np.nan, 1])])
def test_metrics_reject_degenerate_input(bad):
    with pytest.raises(ValueError):
        auroc(*bad)


def test_lower_is_better_is_declared_once_and_leaderboards_follow_it():
    """OpenOOD's FPR@95 sorts best (lowest) first, as the suite's FPR95 does."""
    import pandas as pd

    from bench.metrics import LOWER_IS_BETTER, METRICS
    from bench.reporting.leaderboard import summarise

    assert set(LOWER_IS_BETTER) <= set(METRICS)
    rows = pd.DataFrame({
        "protocol": "ood-labeled", "dataset": "cifar10", "preset": "paper",
        "ood_table": "openood-v1.5", "method": ["a", "b"], "score": "s", "features": "",
        "variant": "", "ood_dataset": "svhn", "normal_class": "all", "seed": 0,
        "metric": "fpr95_openood", "value": [0.9, 0.1], "protocol_version": "2",
        "config_hash": "h"})
    for metric in LOWER_IS_BETTER:
        table = next(iter(summarise(rows.assign(metric=metric), metric).tables.values()))
        assert list(table.index) == ["b/s", "a/s"], metric
