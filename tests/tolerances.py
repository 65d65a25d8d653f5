"""Tolerances derived from the quantity compared, never tuned to one machine's run.

Thread counts, BLAS kernels and CPU models change the order of float32 reductions, so two float32 computations of
the same quantity agree only up to rounding. Where a test claims exactness, it computes the quantity in float64 too:

* the plain float32 recompute's own distance from float64, measured in the same run on the same machine, is the
  scale of float32 rounding for this computation; a fast path must be as close to float64 as the plain path is, up
  to ``ORDER_HEADROOM`` (another summation order gives another, similar rounding; the largest error over many cells
  is a stable statistic) and a floor of a few ulps of the largest value (in case the plain path rounds exactly);
* derived quantities inherit their bound: probabilities from logits (log-softmax moves by at most twice the largest
  logit change), relative changes from probabilities (dividing by ``p_base`` amplifies their error by ``1/p_base``).
"""

import math

import torch

EPS32 = float(torch.finfo(torch.float32).eps)
ORDER_HEADROOM = 8.0
ULPS_FLOOR = 4.0


def rounding_bound(plain32: torch.Tensor, exact64: torch.Tensor) -> float:
    """How far any float32 computation of ``exact64`` may be from it (see the module docstring)."""
    exact64 = exact64.detach().double()
    error = float((plain32.detach().double() - exact64).abs().max())
    return ORDER_HEADROOM * error + ULPS_FLOOR * EPS32 * float(exact64.abs().max())


def assert_float32_exact(candidate: torch.Tensor, plain32: torch.Tensor, exact64: torch.Tensor, what: str = ""):
    """``candidate`` (a float32 path) is as close to the float64 value as the plain float32 recompute is."""
    bound = rounding_bound(plain32, exact64)
    diff = float((candidate.detach().double() - exact64.detach().double()).abs().max())
    assert diff <= bound, f"{what}: max |candidate - float64| = {diff:.3g} > derived bound {bound:.3g}"
    return bound


def probability_bound(p, logit_bound: float):
    """Largest change of softmax probabilities ``p`` when every logit moves by at most ``logit_bound``, plus the
    rounding of the softmax itself."""
    return p * math.expm1(2 * logit_bound) + ULPS_FLOOR * EPS32


def rel_change_bound(p_knockout: float, p_base: float, dp_knockout: float, dp_base: float) -> float:
    """Error of ``100 (p_knockout - p_base) / p_base`` when the probabilities are off by ``dp_*``: first order in
    both, so a small ``p_base`` amplifies it."""
    return 100 * (dp_knockout + abs(p_knockout / p_base) * dp_base) / p_base
