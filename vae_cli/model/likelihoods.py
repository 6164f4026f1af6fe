"""Decoder likelihoods p(x|z): decoder output -> a torch.distributions object.

Every family hands back a distribution over a whole image, event shape (C, H, W), so that
`dist.log_prob(x)` is the exact log-density of each example in nats, summed over all data
dimensions with every constant included; `dist.mean` is what `vae sample` shows by default
and `dist.sample()` is what `--stochastic` draws. Training never samples x: the ELBO's
reconstruction term is `log_prob` evaluated in closed form.

Adding a family is one class with a `@register("flag-value")` decorator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Laplace,
    Normal,
    constraints,
)
from torch.distributions.utils import broadcast_all

from vae_cli.model import continuous_bernoulli

if TYPE_CHECKING:  # a registry is a leaf: it takes a config, it never imports one
    from vae_cli.settings import Config


# What data a family scores, so the data module can present it on the right support:
#   binary   -- {0, 1} pixels (binarised)
#   unit     -- a density on [0, 1]: 8-bit data uniformly dequantised, (k + u) / 256
#   discrete -- the 8-bit integer values 0..255 themselves
Support = Literal["binary", "unit", "discrete"]

LIKELIHOODS: dict[str, type[Likelihood]] = {}


def register(name: str):
    def add(cls: type[Likelihood]) -> type[Likelihood]:
        cls.name = name
        LIKELIHOODS[name] = cls
        return cls

    return add


class Likelihood(nn.Module):
    """Turns decoder output of shape (B, params_per_channel * C, H, W) into p(x|z)."""

    name: ClassVar[str]
    params_per_channel: ClassVar[int] = 1
    support: ClassVar[Support]

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls()

    def forward(self, params: Tensor) -> Distribution:
        return self.distribution(params)

    def distribution(self, params: Tensor) -> Distribution:
        raise NotImplementedError

    def split(self, params: Tensor) -> tuple[Tensor, ...]:
        """(B, P*C, H, W) -> P tensors of shape (B, C, H, W)."""
        b, pc, h, w = params.shape
        return params.view(b, self.params_per_channel, pc // self.params_per_channel, h, w).unbind(1)

    def extra_metrics(self) -> dict[str, Tensor]:
        """Learned scalars worth logging (e.g. a learned sigma)."""
        return {}

    def encoder_input(self, x: Tensor) -> Tensor:
        """What q(z|x) sees: the scored data itself, except that 0..255 values are put
        on [0, 1] so every family's encoder works on the same scale."""
        return x / (LEVELS - 1) if self.support == "discrete" else x


def image(dist: Distribution) -> Independent:
    """Reinterpret the per-pixel batch dims (C, H, W) as one event: log_prob sums over them."""
    return Independent(dist, 3)


class BernoulliImage(Independent):
    """Independent(Bernoulli(logits), 3) with the same log_prob, summed before it is negated.

    Bernoulli.log_prob negates the per-pixel BCE and Independent then sums it: a pass over
    every pixel, forward and backward, which the training profile showed costing ~1 ms per
    batch-512 step on CPU. Summing first leaves one negation per example.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(self.base_dist.logits, value, reduction="none")
        return -bce.flatten(-3).sum(-1)


@register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod Bernoulli(sigmoid(logit)): 'sigmoid + BCE' is exactly -log_prob."""

    support = "binary"

    def distribution(self, params: Tensor) -> Distribution:
        return BernoulliImage(Bernoulli(logits=params, validate_args=False), 3)


@register("gaussian")
class GaussianLikelihood(Likelihood):
    """N(x; mu, sigma^2) per pixel with a fixed sigma (`--sigma`).

    -log p = ||x - mu||^2 / (2 sigma^2) + D log sigma + D/2 log(2 pi): the MSE with the
    scale 1/(2 sigma^2) and the constant that a pixel-averaged MSE silently drops.
    """

    support = "unit"

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        self.sigma = sigma

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(sigma=cfg.sigma)

    def distribution(self, params: Tensor) -> Distribution:
        return image(Normal(params, self.sigma, validate_args=False))


@register("gaussian-learned")
class LearnedGaussianLikelihood(Likelihood):
    """sigma-VAE 'shared': one learned log-sigma for all pixels, trained with the ELBO."""

    support = "unit"

    def __init__(self, init_sigma: float = 0.1) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma)))

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(init_sigma=cfg.sigma)

    def distribution(self, params: Tensor) -> Distribution:
        scale = self.log_sigma.exp().expand_as(params)
        return image(Normal(params, scale, validate_args=False))

    def extra_metrics(self) -> dict[str, Tensor]:
        return {"sigma": self.log_sigma.detach().exp()}


# --------------------------------------------------------------------------- more families
@register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1].

    p(x|lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x); the normaliser C(lambda) is what
    the 'Bernoulli on grey levels' trick leaves out. Its mean is not lambda.
    """

    support = "unit"

    def distribution(self, params: Tensor) -> Distribution:
        return image(StableContinuousBernoulli(logits=params, validate_args=False))


class StableContinuousBernoulli(ContinuousBernoulli):
    """torch's ContinuousBernoulli with the log-normaliser computed from the logit.

    torch forms C(lambda) from probs = sigmoid(logit), and 1 - lambda loses its precision
    as the logit saturates, which decoders do on a black background: in float32 torch's
    density integrates to 0.9993 at logit 12, 0.996 at 16 and 0.80 at 20. With lambda = sigmoid(l),
    C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2), exact from l itself, with
    the Taylor series 2 + l^2/6 - l^4/360 near l = 0 where both sides vanish. The mean,
    variance, CDF, entropy and the inverse CDF behind sample()/rsample() come from the logit
    too (vae_cli.model.continuous_bernoulli): torch's saturate with its clamped probs, so that its
    mean at logit 30 is 0.937 for a density whose mean is 0.967.
    """

    def _logits(self) -> Tensor:
        """The logit in at least float32 (half-precision expm1/log1p put zeros among the draws
        at large logits), with +-inf as the largest finite float: the limit of every formula
        (a point mass at 0 or 1), where inf itself would give inf - inf = NaN. NaN stays NaN."""
        logits = self.logits.float() if self.logits.dtype in (torch.float16, torch.bfloat16) else self.logits
        big = torch.finfo(logits.dtype).max
        return logits.clamp(-big, big)

    def _as_input(self, x: Tensor) -> Tensor:
        return x.to(self.logits.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        logits, value = broadcast_all(self._logits(), value)  # broadcasts like torch's
        log_lik = -F.binary_cross_entropy_with_logits(logits, value.to(logits.dtype), reduction="none")
        return self._as_input(log_lik + continuous_bernoulli_log_norm(logits))

    @property
    def mean(self) -> Tensor:
        return self._as_input(continuous_bernoulli.mean(self._logits()))

    @property
    def variance(self) -> Tensor:
        return self._as_input(continuous_bernoulli.variance(self._logits()))

    def cdf(self, value: Tensor) -> Tensor:
        logits, value = broadcast_all(self._logits(), value)
        return self._as_input(continuous_bernoulli.cdf(logits, value.to(logits.dtype)))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Inverse-CDF draws with u ~ U[0, 1) in at least float32: a bfloat16 u is exactly 0
        about once in 400 draws, and icdf(0) = 0 whatever the logit."""
        logits = self._logits()
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=logits.dtype, device=logits.device)
        return self._as_input(continuous_bernoulli.icdf(logits.expand(shape), u))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def icdf(self, value: Tensor) -> Tensor:
        logits, value = broadcast_all(self._logits(), value)
        return self._as_input(continuous_bernoulli.icdf(logits, value.to(logits.dtype)))

    def entropy(self) -> Tensor:
        logits = self._logits()
        return self._as_input(continuous_bernoulli.entropy(logits, continuous_bernoulli_log_norm(logits)))


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)  # no 0/0 in the unused branch
    sq = logits * logits
    taylor = torch.log(2 + sq / 6 - sq * sq / 360)
    exact = torch.log(safe / torch.tanh(safe / 2))
    return torch.where(small, taylor, exact)


class OptimalSigmaNormal(Normal):
    """N(mu, sigma^2) whose sigma is the analytic optimum sqrt(MSE) of the scored batch.

    In training mode log_prob(x) sets sigma^2 = mean over the whole batch of (x - mu)^2,
    detached (sigma-VAE 'optimal'), and folds it into the owner's running estimate; in eval
    mode sigma is that running estimate, so evaluation scores every example with one fixed
    density. The scale passed in is the running estimate (used by mean/sample/eval).
    """

    def __init__(self, loc: Tensor, owner: OptimalGaussianLikelihood) -> None:
        super().__init__(loc, owner.sigma().to(loc).expand_as(loc), validate_args=False)
        self.owner = owner

    def log_prob(self, value: Tensor) -> Tensor:
        if not self.owner.training:
            return super().log_prob(value)
        var = (value - self.loc).detach().pow(2).mean().clamp_min(self.owner.min_sigma**2)
        self.owner.update(var)
        return Normal(self.loc, var.sqrt().expand_as(self.loc), validate_args=False).log_prob(value)


@register("gaussian-optimal")
class OptimalGaussianLikelihood(Likelihood):
    """sigma-VAE 'optimal': one shared sigma = sqrt(batch MSE) while training, a running
    estimate of it (exponential moving average of the batch MSE, momentum 0.05, floor
    1e-3, starting at --sigma^2) when evaluating or sampling."""

    support = "unit"
    momentum = 0.05
    min_sigma = 1e-3

    def __init__(self, init_sigma: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("running_var", torch.tensor(init_sigma**2))

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(init_sigma=cfg.sigma)

    def sigma(self) -> Tensor:
        return self.running_var.clamp_min(self.min_sigma**2).sqrt()

    @torch.no_grad()
    def update(self, batch_var: Tensor) -> None:
        self.running_var.lerp_(batch_var.to(self.running_var), self.momentum)

    def distribution(self, params: Tensor) -> Distribution:
        return image(OptimalSigmaNormal(params, self))

    def extra_metrics(self) -> dict[str, Tensor]:
        return {"sigma": self.sigma().detach()}


LOG_SIGMA_FLOOR = math.log(1e-3)


def floored(raw: Tensor, floor: float) -> Tensor:
    """floor + softplus(raw - floor): smooth, > floor, ~raw above it, finite gradients."""
    return floor + F.softplus(raw - floor)


@register("gaussian-pixel")
class PixelGaussianLikelihood(Likelihood):
    """Heteroscedastic: the decoder outputs a mean and a log-sigma per pixel.

    log sigma = log(1e-3) + softplus(raw - log(1e-3)) > log(1e-3): without a floor a pixel
    that is always 0 lets sigma -> 0 and the density (and the ELBO) -> infinity.
    """

    support = "unit"
    params_per_channel = 2

    def distribution(self, params: Tensor) -> Distribution:
        loc, raw = self.split(params)
        return image(Normal(loc, floored(raw, LOG_SIGMA_FLOOR).exp(), validate_args=False))


@register("laplace")
class LaplaceLikelihood(Likelihood):
    """Laplace(x; mu, b) per pixel with a fixed scale b = --sigma: an L1 reconstruction loss
    |x - mu| / b plus the constant D log(2b). (Its standard deviation is b sqrt(2).)"""

    support = "unit"

    def __init__(self, scale: float = 0.1) -> None:
        super().__init__()
        self.scale = scale

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(scale=cfg.sigma)

    def distribution(self, params: Tensor) -> Distribution:
        return image(Laplace(params, self.scale, validate_args=False))


@register("laplace-learned")
class LearnedLaplaceLikelihood(Likelihood):
    """Laplace with one learned shared log-scale (initialised at --sigma)."""

    support = "unit"

    def __init__(self, init_scale: float = 0.1) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(init_scale=cfg.sigma)

    def distribution(self, params: Tensor) -> Distribution:
        scale = self.log_scale.exp().expand_as(params)
        return image(Laplace(params, scale, validate_args=False))

    def extra_metrics(self) -> dict[str, Tensor]:
        return {"scale": self.log_scale.detach().exp()}


LEVELS = 256


class ValuedCategorical(Categorical):
    """Categorical over the pixel values 0..255 whose mean is the expected value
    (torch's Categorical reports NaN for a mean); sample() returns floats."""

    @property
    def mean(self) -> Tensor:
        values = torch.arange(LEVELS, device=self.probs.device, dtype=self.probs.dtype)
        return (self.probs * values).sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        return super().sample(sample_shape).to(self.logits.dtype)


@register("categorical")
class CategoricalLikelihood(Likelihood):
    """A 256-way softmax per channel value: an exact discrete model of 8-bit data."""

    support = "discrete"
    params_per_channel = LEVELS

    def distribution(self, params: Tensor) -> Distribution:
        b, pc, h, w = params.shape
        logits = params.view(b, LEVELS, pc // LEVELS, h, w).permute(0, 2, 3, 4, 1)
        return image(ValuedCategorical(logits=logits, validate_args=False))


class DiscretizedLogisticMixture(Distribution):
    """PixelCNN++'s discretised mixture of logistics (Salimans et al. 2017) per value.

    The 8-bit value k is rescaled to x = k/127.5 - 1 in [-1, 1]; its bin is [x - 1/255,
    x + 1/255], except that the edge bins take all the mass beyond them: k = 0 gets
    (-inf, x + 1/255] and k = 255 gets [x - 1/255, inf), so the 256 probabilities sum to
    exactly 1. The bin mass sigmoid(a) - sigmoid(b) is computed in log space, on the side
    of the component mean where it does not cancel: PixelCNN++ falls back to
    density x bin width when the difference is below 1e-5, which is not exactly normalised;
    here the same safe path is exact. log-scales are clamped at -7 as in PixelCNN++.
    Shapes: logit_probs, means, log_scales are (..., K); values are (...).
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.integer_interval(0, LEVELS - 1)
    min_log_scale = -7.0

    def __init__(self, logit_probs: Tensor, means: Tensor, log_scales: Tensor) -> None:
        self.logit_probs, self.means = logit_probs, means
        self.log_scales = log_scales.clamp(min=self.min_log_scale)
        super().__init__(batch_shape=means.shape[:-1], validate_args=False)

    def component_log_probs(self, value: Tensor) -> Tensor:
        """log P(value | component), shape (..., K)."""
        x = (value / 127.5 - 1).unsqueeze(-1)
        inv_s = torch.exp(-self.log_scales)
        a = inv_s * (x - self.means + 1 / 255)  # upper edge of the bin, standardised
        b = inv_s * (x - self.means - 1 / 255)  # lower edge
        # sigmoid(a) - sigmoid(b) == sigmoid(-b) - sigmoid(-a): use the side where both
        # sigmoids are small, so nothing cancels; (hi, lo) are chosen before any log.
        right = (a + b) > 0
        hi, lo = torch.where(right, -b, a), torch.where(right, -a, b)
        log_hi, log_lo = F.logsigmoid(hi), F.logsigmoid(lo)
        gap = (log_lo - log_hi).clamp(max=-1e-30)
        interior = log_hi + torch.log(-torch.expm1(gap))
        first = F.logsigmoid(a)  # k = 0: P(X <= upper edge)
        last = F.logsigmoid(-b)  # k = 255: P(X >= lower edge)
        k = value.unsqueeze(-1)
        return torch.where(k < 0.5, first, torch.where(k > LEVELS - 1.5, last, interior))

    def log_prob(self, value: Tensor) -> Tensor:
        log_mix = F.log_softmax(self.logit_probs, dim=-1)
        return torch.logsumexp(log_mix + self.component_log_probs(value), dim=-1)

    @property
    def mean(self) -> Tensor:
        """The exact mean of the discretised mixture: sum_k k P(k) over the 256 values."""
        total = torch.zeros(self.batch_shape, device=self.means.device, dtype=self.means.dtype)
        step = 32  # values per pass: memory stays that of 32 log_probs
        for start in range(0, LEVELS, step):
            k = torch.arange(start, start + step, device=total.device, dtype=total.dtype)
            k = k.view(-1, *([1] * len(self.batch_shape)))
            total = total + (k * self.log_prob(k.expand(step, *self.batch_shape)).exp()).sum(0)
        return total

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        k = Categorical(logits=self.logit_probs).sample(sample_shape).unsqueeze(-1)
        mu = self.means.expand(*shape, -1).gather(-1, k).squeeze(-1)
        log_s = self.log_scales.expand(*shape, -1).gather(-1, k).squeeze(-1)
        u = torch.rand(shape, device=mu.device, dtype=mu.dtype).clamp(1e-6, 1 - 1e-6)
        x = mu + log_s.exp() * (torch.log(u) - torch.log1p(-u))  # a logistic draw
        # bin k holds x in [k/127.5 - 1 -+ 1/255], i.e. (x + 1) * 127.5 in [k -+ 0.5]
        return ((x + 1) * 127.5).round().clamp(0, LEVELS - 1)


@register("logistic-mixture")
class LogisticMixtureLikelihood(Likelihood):
    """Discretised mixture of K logistics over the 256 values of each channel (PixelCNN++).

    Channels are independent given z (no autoregressive RGB coupling): 3K decoder outputs
    per channel, the mixture logits, means (in the [-1, 1] scale) and log-scales.
    """

    support = "discrete"
    params_per_channel = 3  # per component; from_config sets 3 * K on the instance

    def __init__(self, components: int = 5) -> None:
        super().__init__()
        self.components = components
        self.params_per_channel = 3 * components

    @classmethod
    def from_config(cls, cfg: Config) -> Likelihood:
        return cls(components=cfg.mixture_components)

    def distribution(self, params: Tensor) -> Distribution:
        b, _, h, w = params.shape
        parts = params.view(b, self.params_per_channel, -1, h, w).permute(0, 2, 3, 4, 1)
        logits, means, log_scales = parts.chunk(3, dim=-1)  # each (B, C, H, W, K), views
        return image(DiscretizedLogisticMixture(logits, means, log_scales))


def build(cfg: Config) -> Likelihood:
    return LIKELIHOODS[cfg.likelihood].from_config(cfg)
