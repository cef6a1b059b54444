"""Plausibility scoring: conformal p-values, posterior over origins and seasons, verdicts, evaluation.

Pure numpy: arrays in, plain results out (no torch, no SQL, no HTTP).
"""

from grainproof.scoring.conformal import benjamini_hochberg, conformal_p_value

__all__ = ["benjamini_hochberg", "conformal_p_value"]
