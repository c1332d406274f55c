"""Statistics of the study: accuracies and differences over seeds and questions, with honest uncertainty.

A model's scores form a matrix: one row per training seed (one row for the untuned base, which has none),
one column per evaluation question, in the same question order for every model. Uncertainty comes from a
two-level bootstrap that redraws both the seeds (training runs) and the questions, so an interval covers
what another set of training runs and another draw of questions would do. Two models trained with the same
seeds share each seed's training records of the sources they have in common, so their seeds are redrawn
together (paired); the questions are always paired.

With three seeds the seed level is coarse (a bootstrap of three values underestimates their spread), which
the report states; the per-seed differences are printed beside every interval so a reader can see it.
p-values are two-sided bootstrap p-values; a family of pre-declared comparisons is corrected with Holm's
step-down method.
"""

from statistics import NormalDist

import numpy as np

DRAWS = 10_000
Z_80_POWER = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)


def _draw_means(a: np.ndarray, b: np.ndarray | None, draws: int, seed: int) -> np.ndarray:
    """Bootstrap means of b - a (or of a alone when b is None), seeds and questions redrawn."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    out = np.empty(draws)
    for start in range(0, draws, 500):
        k = min(500, draws - start)
        items = rng.integers(n, size=(k, n))
        paired = b is not None and a.shape[0] == b.shape[0]
        seeds_a = rng.integers(a.shape[0], size=(k, a.shape[0]))
        mean_a = _mean_over(a, seeds_a, items)
        if b is None:
            out[start:start + k] = mean_a
            continue
        seeds_b = seeds_a if paired else rng.integers(b.shape[0], size=(k, b.shape[0]))
        out[start:start + k] = _mean_over(b, seeds_b, items) - mean_a
    return out


def _mean_over(m: np.ndarray, seeds: np.ndarray, items: np.ndarray) -> np.ndarray:
    per_item = m[seeds].mean(axis=1)  # draws x n: each draw's seed-average for every question
    return np.take_along_axis(per_item, items, axis=1).mean(axis=1)


def estimate(a, draws: int = DRAWS, seed: int = 0) -> dict:
    """A model's mean score with a 95% interval, and its spread over seeds."""
    a = np.asarray(a, dtype=float)
    boot = _draw_means(a, None, draws, seed)
    per_seed = a.mean(axis=1)
    return {"mean": float(a.mean()), "low": float(np.quantile(boot, 0.025)), "high": float(np.quantile(boot, 0.975)),
            "per_seed": [round(float(v), 4) for v in per_seed],
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else None}


def compare(a, b, draws: int = DRAWS, seed: int = 0) -> dict:
    """mean(b) - mean(a) with a 95% interval, a two-sided p-value, the standard error, the smallest
    difference this design detects with 80% power at 0.05 (about 2.8 standard errors) and the per-seed
    differences (seeds paired where both models have them)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"different questions: {a.shape[1]} vs {b.shape[1]}")
    boot = _draw_means(a, b, draws, seed)
    diff = float(b.mean() - a.mean())
    p = min(1.0, 2 * min((np.sum(boot <= 0) + 1) / (draws + 1), (np.sum(boot >= 0) + 1) / (draws + 1)))
    se = float(boot.std(ddof=1))
    if a.shape[0] == b.shape[0]:
        per_seed = (b.mean(axis=1) - a.mean(axis=1)).tolist()
    else:
        per_seed = (b.mean(axis=1) - a.mean()).tolist() if a.shape[0] == 1 else (b.mean() - a.mean(axis=1)).tolist()
    return {"diff": diff, "low": float(np.quantile(boot, 0.025)), "high": float(np.quantile(boot, 0.975)),
            "p": float(p), "se": se, "mde": Z_80_POWER * se, "per_seed": [round(v, 4) for v in per_seed]}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(result: dict, p_key: str = "p") -> str:
    if result[p_key] >= 0.05:
        return "no detectable difference"
    return "higher" if result["diff"] > 0 else "lower"
