"""Comparisons of a reference array with a test array: largest error, cosine similarity, SQNR."""

from __future__ import annotations

import math

import numpy as np

from stages.stats.checks import require


def _paired_arrays(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    require(
        r.shape == t.shape, f"ref and test must have the same shape, got {r.shape} and {t.shape}"
    )
    require(r.size > 0, "ref and test must be non-empty, got size 0")
    return r.ravel(), t.ravel()


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    """Largest elementwise |ref - test|."""
    r, t = _paired_arrays(ref, test)
    return float(np.max(np.abs(r - t)))


def cosine_similarity(ref: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays; 1.0 when both are all-zero, 0.0 if one is."""
    r, t = _paired_arrays(ref, test)
    norm_r, norm_t = float(np.linalg.norm(r)), float(np.linalg.norm(t))
    if norm_r == 0 or norm_t == 0:
        return 1.0 if norm_r == norm_t else 0.0
    return float(np.dot(r, t) / (norm_r * norm_t))


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when identical, -inf for a zero signal."""
    r, t = _paired_arrays(ref, test)
    signal = float(np.sum(r**2))
    noise = float(np.sum((r - t) ** 2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)
