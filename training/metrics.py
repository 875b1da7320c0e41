"""Held-out classification metrics, written into every store entry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics


def classification_metrics(
    y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str], positive_label: str | None
) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix.

    probs: (N, C) class probabilities. Binary tasks report precision / recall / F1 / AUC of ``positive_label``;
    others report macro averages and one-vs-rest AUC.
    """
    y = np.asarray(y_true)
    pred = probs.argmax(1)
    out: dict = {"n": len(y), "accuracy": float(metrics.accuracy_score(y, pred))}
    if positive_label is not None and len(labels) == 2:
        pos = labels.index(positive_label)
        p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, pos_label=pos, average="binary", zero_division=0)
        auc = metrics.roc_auc_score(y == pos, probs[:, pos]) if len(set(y.tolist())) == 2 else float("nan")
        out.update(positive_label=positive_label)
    else:
        p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        present = sorted(set(y.tolist()))
        auc = (
            metrics.roc_auc_score(y, probs, multi_class="ovr", labels=list(range(len(labels))))
            if len(present) == len(labels)
            else float("nan")
        )
    cm = metrics.confusion_matrix(y, pred, labels=list(range(len(labels))))
    out.update(
        precision=float(p),
        recall=float(r),
        f1=float(f),
        roc_auc=float(auc),
        confusion_matrix={"labels": list(labels), "rows_true_cols_predicted": cm.tolist()},
    )
    return out
