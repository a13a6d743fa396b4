"""Detection metrics. Each takes ``(is_anomaly, anomaly_score)`` like scikit-learn's ``(y_true, y_score)``.

Positive classes (README, "Results schema"): AUROC and AUPR-out treat anomalies / OOD as positive; AUPR-in treats
in-distribution samples as positive (scored by minus the anomaly score); FPR95 is the fraction of
anomalies accepted at the threshold that accepts 95% of normal samples.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _check(is_anomaly, anomaly_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_anomaly).astype(bool).ravel()
    s = np.asarray(anomaly_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"is_anomaly has {y.size} entries but anomaly_score has {s.size}")
    if y.all() or not y.any():
        raise ValueError("need both normal and anomalous samples")
    if not np.isfinite(s).all():
        raise ValueError("anomaly scores contain NaN or infinity")
    return y, s


def auroc(is_anomaly, anomaly_score) -> float:
    """Area under the ROC curve, anomalies positive; ties count one half."""
    y, s = _check(is_anomaly, anomaly_score)
    return float(roc_auc_score(y, s))


def aupr_out(is_anomaly, anomaly_score) -> float:
    """Average precision with anomalies (OOD) as the positive class."""
    y, s = _check(is_anomaly, anomaly_score)
    return float(average_precision_score(y, s))


def aupr_in(is_anomaly, anomaly_score) -> float:
    """Average precision with normal (in-distribution) samples as the positive class."""
    y, s = _check(is_anomaly, anomaly_score)
    return float(average_precision_score(~y, -s))


def fpr_at_95_tpr(is_anomaly, anomaly_score) -> float:
    """Fraction of anomalies accepted when the threshold accepts at least 95% of normal samples.

    A sample is accepted as normal when its score is at or below the threshold; the threshold is
    the smallest score that accepts 95% of the normal samples, so tied anomalies are accepted too.
    """
    y, s = _check(is_anomaly, anomaly_score)
    normal = np.sort(s[~y])
    k = int(np.ceil(0.95 * normal.size)) - 1  # index of the 95th-percentile normal score
    threshold = normal[max(k, 0)]
    return float(np.mean(s[y] <= threshold))


def fpr_at_95_tpr_openood(is_anomaly, anomaly_score) -> float:
    """OpenOOD v1.5's FPR@95 (`auc_and_fpr_recall` of openood/evaluators/metrics.py): OOD is the
    positive class, so it is the fraction of *normal* samples flagged at the first ROC threshold
    that catches 95% of the anomalies. `fpr_at_95_tpr` (the ODIN / CSI convention) is the
    fraction of anomalies accepted where 95% of normal samples are; the two differ."""
    from sklearn.metrics import roc_curve

    y, s = _check(is_anomaly, anomaly_score)
    fpr, tpr, _ = roc_curve(y, s)
    return float(fpr[np.argmax(tpr >= 0.95)])


def accuracy(labels, predictions) -> float:
    """Fraction of correct class predictions (labeled protocols, in-distribution test split)."""
    y = np.asarray(labels).ravel()
    p = np.asarray(predictions).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError("labels and predictions must be non-empty and of the same length")
    return float(np.mean(y == p))


# every metric a row may hold (a fraction each), and those where lower is better: the one place
# that says so (leaderboards sort and mark by it, comparisons too)
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood", "accuracy")
LOWER_IS_BETTER = ("fpr95", "fpr95_openood")

DETECTION_METRICS = {
    "auroc": auroc,
    "aupr_in": aupr_in,
    "aupr_out": aupr_out,
    "fpr95": fpr_at_95_tpr,
}


# metrics an OOD table's rows may carry beyond those (its `metrics`, bench/protocols.py)
TABLE_METRICS = {"fpr95_openood": fpr_at_95_tpr_openood}


def detection_metrics(is_anomaly, anomaly_score, extra: tuple[str, ...] = ()
                      ) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR95 of one score variant, and the `extra` metrics of
    TABLE_METRICS a table's rows carry (OpenOOD v1.5's FPR@95 on its table)."""
    out = {name: fn(is_anomaly, anomaly_score) for name, fn in DETECTION_METRICS.items()}
    out.update({name: TABLE_METRICS[name](is_anomaly, anomaly_score) for name in extra})
    return out
