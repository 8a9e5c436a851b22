"""The scores: FID, IS and KID over Inception features, in a registry looked up by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from .errors import EvaluationError
from .inception import Features
from .reference import ReferenceStats


def frechet_distance(features: torch.Tensor, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID between features (N, D) and reference (mu, sigma).

    tr sqrt(S_f S_r) is taken from a symmetric PSD matrix with the same nonzero eigenvalues as
    S_f S_r: (N x N) Xc S_r Xc^T / (N-1) when N <= D, else S_f^1/2 S_r S_f^1/2. Same value as
    torch-fidelity's eigvals route, in float64 on the features' device.
    """
    f = features.double()
    n = len(f)
    if n < 2:
        raise EvaluationError(f"FID needs at least 2 generated images; got {n}")
    mu_r = torch.as_tensor(mu, dtype=torch.float64, device=f.device)
    sigma_r = torch.as_tensor(sigma, dtype=torch.float64, device=f.device)
    mu_f = f.mean(0)
    xc = f - mu_f  # (N, D)
    if n - 1 <= f.shape[1]:
        m = xc @ sigma_r @ xc.T / (n - 1)  # (N, N)
    else:
        w, v = torch.linalg.eigh(xc.T @ xc / (n - 1))
        root = (v * w.clamp(min=0).sqrt()) @ v.T  # S_f^1/2
        m = root @ sigma_r @ root  # (D, D)
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu_f - mu_r
    tr_f = (xc * xc).sum() / (n - 1)
    return float(diff @ diff + tr_f + sigma_r.trace() - 2 * tr_covmean)


@dataclass
class MetricInputs:
    fake: Features
    reference: ReferenceStats | None
    seed: int = 0


MetricFn = Callable[[MetricInputs], dict[str, float]]
METRICS: dict[str, tuple[MetricFn, bool]] = {}  # name -> (function, needs reference images)


def register_metric(name: str, *, needs_reference: bool = True) -> Callable[[MetricFn], MetricFn]:
    def wrap(fn: MetricFn) -> MetricFn:
        METRICS[name] = (fn, needs_reference)
        return fn

    return wrap


def available_metrics() -> list[str]:
    return sorted(METRICS)


def check_metric_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise EvaluationError(f"unknown metrics {unknown}; available: {available_metrics()}")


def calc_metrics(
    names: Sequence[str], fake: Features, reference: ReferenceStats | None = None, seed: int = 0
) -> dict[str, float]:
    check_metric_names(names)
    inputs = MetricInputs(fake, reference, seed)
    out: dict[str, float] = {}
    for name in names:
        fn, needs_reference = METRICS[name]
        if needs_reference and reference is None:
            raise EvaluationError(f"metric {name!r} needs reference images")
        out.update(fn(inputs))
    return out


@register_metric("is", needs_reference=False)
def inception_score(inputs: MetricInputs) -> dict[str, float]:
    logits = inputs.fake.logits.cpu()
    splits = max(1, min(10, len(logits) // 2))
    r = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=inputs.seed)
    return {"is": r["inception_score_mean"], "is_std": r["inception_score_std"]}


@register_metric("fid")
def fid(inputs: MetricInputs) -> dict[str, float]:
    return {"fid": frechet_distance(inputs.fake.pool, inputs.reference.mu, inputs.reference.sigma)}


@register_metric("kid")
def kid(inputs: MetricInputs) -> dict[str, float]:
    ref = torch.from_numpy(inputs.reference.kid_features)
    fake = inputs.fake.pool.float().cpu()
    subset = min(1000, len(fake), len(ref))
    if subset < 2:
        raise EvaluationError("KID needs at least 2 generated and 2 reference images")
    r = kid_features_to_metric(
        fake, ref, kid_subsets=100, kid_subset_size=subset, rng_seed=inputs.seed, verbose=False
    )
    return {
        "kid": r["kernel_inception_distance_mean"],
        "kid_std": r["kernel_inception_distance_std"],
    }
