"""How a set of scores was measured, stored beside them: FID moves with the reference split and
count, the generated count, the Inception port and its weights, the resizer and the truncation,
so two FIDs are comparable only when these agree (a training-time FID on 5,000 samples reads
higher than a 50,000-sample one of the same model)."""

from __future__ import annotations

from collections.abc import Sequence

# torch-fidelity's inception-v3-compat resizes inside the network, as TF1's Inception did.
RESIZER = "bilinear to 299x299, TF1-compatible (torch-fidelity inception-v3-compat)"


def score_protocol(
    extractor,  # noqa: ANN001  (a FeatureExtractor)
    *,
    metrics: Sequence[str],
    generated: int,
    seed: int,
    resolution: int | None,
    reference_key: str | None,
    reference_count: int,
    classes: Sequence[int] = (),
    class_samples: int | None = None,
    generator: str = "G_ema",
    truncation: float | None = None,
) -> dict:
    """The protocol's fields; the caller adds the reference data's identity where it knows it
    (a stored data set's name and content hash) under "reference"."""
    protocol = {
        "metrics": list(metrics),
        "feature_extractor": f"torch-fidelity {extractor.name}",
        "weights_sha256": extractor.fingerprint,  # the first 16 hex digits
        "generated": int(generated),
        "generator": generator,
        "truncation": truncation,
        "seed": int(seed),
        "resolution": resolution,
        "resizer": RESIZER,
        "reference": {"key": reference_key, "split": "train", "count": int(reference_count)},
    }
    if classes:
        protocol["intra_fid"] = {
            "classes": [int(k) for k in classes],
            "per_class": class_samples or "as many as the class's reference images",
        }
    return protocol
