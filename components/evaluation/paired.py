"""Two classifiers judged on the same test rows: the paired comparison the
accuracy-drop gates use (a variant against the framework model, a candidate
against the champion), so that on a small test set one row is not a verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class PairedDrop:
    """A classifier (`variant`: an int8 file, a retrained candidate) against a
    `reference` (the framework model, the champion) on the same test rows. Only
    the rows where the two answer differently say which is better: `worse` rows
    the reference gets right and the variant wrong, `better` the other way.
    `p_value`: the exact one-sided McNemar test (a binomial on the differing rows,
    half and half were the two equally good) that the variant is this much worse
    by chance alone. Exact, not the chi-squared approximation: on a small test
    set a handful of rows differ."""

    drop: float
    worse: int
    better: int
    p_value: float

    @classmethod
    def of(
        cls, reference: np.ndarray, variant: np.ndarray, y: np.ndarray
    ) -> PairedDrop:
        ref_right = np.asarray(reference == y, dtype=bool)
        var_right = np.asarray(variant == y, dtype=bool)
        worse = int((ref_right & ~var_right).sum())
        better = int((~ref_right & var_right).sum())
        p = (
            float(binomtest(worse, worse + better, 0.5, alternative="greater").pvalue)
            if worse + better
            else 1.0
        )
        return cls((worse - better) / max(len(y), 1), worse, better, p)

    def refused(self, budget: float, alpha: float) -> bool:
        """Over the budget, and worse beyond chance: on a small test set one row is
        not evidence (1 of 1 differing rows: p = 0.5)."""
        return self.drop > budget + 1e-12 and self.p_value < alpha
