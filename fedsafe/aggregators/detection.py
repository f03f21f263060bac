"""Detection quality of a defense's flags against the true malicious set.

precision = tp / (tp + fp), defined as 0.0 when nothing is flagged (no correct detections);
recall = tp / (tp + fn), defined as 1.0 when no client is malicious (nothing was missed).
"""

from __future__ import annotations

from typing import Sequence


def detection_metrics(flagged: Sequence[bool], malicious: Sequence[bool]) -> dict:
    if len(flagged) != len(malicious):
        raise ValueError(f"flagged ({len(flagged)}) and malicious ({len(malicious)}) differ in length")
    pairs = [(bool(f), bool(m)) for f, m in zip(flagged, malicious)]
    tp = sum(f and m for f, m in pairs)
    fp = sum(f and not m for f, m in pairs)
    fn = sum(m and not f for f, m in pairs)
    tn = len(pairs) - tp - fp - fn
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }
