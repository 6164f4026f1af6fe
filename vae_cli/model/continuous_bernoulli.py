"""Moments, CDF and inverse CDF of the continuous Bernoulli, computed from the logit l.

The density is p(x) = l e^{lx} / (e^l - 1) on [0, 1] (= C(lambda) lambda^x (1-lambda)^(1-x)
with lambda = sigmoid(l)). torch.distributions.ContinuousBernoulli forms all of these from
probs = sigmoid(l) clamped to [eps, 1 - eps], so in float32 every |l| beyond ~15.9 is
treated as 15.9: its mean at l = 30 is 0.937 instead of 0.967. Here nothing goes through
lambda, nothing overflows up to the largest float, and every formula has an exact
replacement (a Taylor series, or the value itself) where it would cancel near l = 0.

With a = |l| and t = 1 / expm1(a) (in [0, inf), never overflows):
    E[x]   = [l > 0] + sign(l) t - 1/l      = 1/(1 - e^-l) - 1/l
    Var[x] = 1/l^2 - t (1 + t)              = 1/l^2 - e^l / (e^l - 1)^2
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _branches(logits: Tensor, power: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(small, l, t, s): where the series applies; the logit and t = 1/expm1(|l|) for the exact
    form (l = 1 where small: no 1/0); the logit for the series (0 elsewhere: no inf * 0).
    Each branch sees only safe inputs, so torch.where passes no NaN gradient.

    The series applies for |l| < (5e7 eps)^(1/power), about where its first dropped term
    meets the exact form's cancellation error (power 10 for the mean: l^9 / 5e7 against
    eps / l); that cut is ~1.2 in float32 and ~0.2 in float64.
    """
    small = logits.abs() < (torch.finfo(logits.dtype).eps * 5e7) ** (1 / power)
    lo = torch.where(small, torch.ones_like(logits), logits)
    t = torch.exp(-lo.abs()) / -torch.expm1(-lo.abs())  # 1/expm1(a) whose gradient never meets inf
    return small, lo, t, torch.where(small, logits, torch.zeros_like(logits))


def mean(logits: Tensor) -> Tensor:
    """E[x] = 1/(1 - e^-l) - 1/l; near 0 its series 1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600
    (1/2 + sum_n B_2n l^(2n-1) / (2n)!), since the exact form cancels there like eps / |l|."""
    small, lo, t, s = _branches(logits, 10)
    exact = (lo > 0).to(lo.dtype) + torch.sign(lo) * t - 1 / lo
    sq = s * s
    series = 0.5 + s * (1 / 12 + sq * (-1 / 720 + sq * (1 / 30240 - sq / 1209600)))
    return torch.where(small, series, exact)


def variance(logits: Tensor) -> Tensor:
    """Var[x] = 1/l^2 - e^l/(e^l - 1)^2 (the derivative of the mean); near 0 its series
    1/12 - l^2/240 + l^4/6048 - l^6/172800 + l^8/5322240, the exact form cancelling like eps / l^2."""
    small, lo, t, s = _branches(logits, 12)
    exact = 1 / (lo * lo) - t * (1 + t)
    sq = s * s
    series = 1 / 12 + sq * (-1 / 240 + sq * (1 / 6048 + sq * (-1 / 172800 + sq / 5322240)))
    return torch.where(small, series, exact)


def icdf(logits: Tensor, u: Tensor) -> Tensor:
    """The inverse CDF x = log1p(u expm1(l)) / l, differentiable in l (so rsample works).

    As written wherever expm1(l) is finite, except that where u expm1(l) < -1/2 (l < 0, u
    near 1) the argument 1 + u expm1(l) is summed as (1 - u) + u e^l, which does not cancel.
    Beyond that (l > 87.7 in float32),
    log1p(w) is taken as softplus(log w), log w = log u + l + log(1 - e^-l), which cannot
    overflow. |l| below sqrt(eps): the series u + l u (1 - u) / 2, whose dropped l^2 term
    is below rounding (and which has no 0/0 at l = 0).
    """
    small = logits.abs() < torch.finfo(logits.dtype).eps ** 0.5
    big = logits > math.log(torch.finfo(logits.dtype).max) - 1
    mid = torch.where(small | big, torch.ones_like(logits), logits)  # safe input per branch
    top = torch.where(big, logits, torch.ones_like(logits))
    w = u * torch.expm1(mid)
    # near w = -1 (l < 0, u -> 1) 1 + w cancels; (1 - u) + u e^l is then the same sum, exact
    direct = torch.where(w < -0.5, torch.log((1 - u) + u * torch.exp(mid)), torch.log1p(w)) / mid
    overflow = F.softplus(torch.log(u) + top + torch.log(-torch.expm1(-top))) / top
    series = u + logits * u * (1 - u) / 2
    x = torch.where(small, series, torch.where(big, overflow, direct))
    return x.clamp(0, 1)  # rounding may step a hair outside the support


def cdf(logits: Tensor, value: Tensor) -> Tensor:
    """P(X <= x) = expm1(l x) / expm1(l); for l > 0 as e^{l(x-1)} expm1(-l x) / expm1(-l),
    which cannot overflow. l = 0: x itself (expm1 keeps relative precision everywhere else)."""
    zero = logits == 0
    neg = torch.where(logits < 0, logits, -torch.ones_like(logits))
    pos = torch.where(logits > 0, logits, torch.ones_like(logits))
    c_neg = torch.expm1(neg * value) / torch.expm1(neg)
    c_pos = torch.exp(pos * (value - 1)) * torch.expm1(-pos * value) / torch.expm1(-pos)
    c = torch.where(zero, value, torch.where(logits < 0, c_neg, c_pos))
    return c.clamp(0, 1)


def entropy(logits: Tensor, log_norm: Tensor) -> Tensor:
    """-E[log p(x)] with log p(x) = log C + l x - softplus(l): softplus(l) - log C - l E[x]."""
    return F.softplus(logits) - log_norm - logits * mean(logits)
