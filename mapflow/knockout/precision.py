"""What "the same numbers" means in half precision.

In float32 the fast engine and the naive recompute agree to ~1e-7 and tests hold them to 1e-5. In bfloat16 / float16
every matmul rounds to 8 / 11 mantissa bits, and two computations that mean the same thing (a different attention
kernel, a different batch composition, a different summation order) give different probabilities. The tolerance is
therefore measured, not fixed: it is the rounding spread of the precision on the sweep at hand,

    tau = max over cells and vocabulary |p_naive(sdpa) - p_naive(eager)|,

the difference between two naive recomputes that differ only in an equivalent attention kernel. The fast engine is a
third equivalent computation, so it must stay within a small multiple of that spread, and it must be no less exact
than the naive run when both are compared with a float64 reference of the same (rounded) weights.
"""

from __future__ import annotations

import torch

# fast vs naive: two computations each off by up to the spread tau differ by up to ~2 tau; 3 leaves room for the
# maximum over a sweep landing on a different cell
SPREAD_FACTOR = 3.0
# error vs the float64 reference: the fast engine may be at most this many times further off than the worse naive run
REFERENCE_FACTOR = 2.0


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return logits.double().softmax(-1)


def rounding_spread(naive: torch.Tensor, naive_other_kernel: torch.Tensor) -> float:
    """``tau``: the largest probability difference of two naive recomputes with equivalent kernels (logits in)."""
    return max_abs_diff(probabilities(naive), probabilities(naive_other_kernel))
