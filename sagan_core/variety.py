"""Does G make the class asked for, and many different ones? A judge fitted on the real data.

Two figures, both from images downsampled to the data's native size (8x8 for digits, at most
`MAX_FEATURE_SIZE`), grey when the data is grey, scaled to [0, 1]:

- `class_accuracy`: the share of generated samples that a classifier trained on the real images
  (logistic regression on those features) puts in the class they were generated for. Read it
  beside `judge_accuracy`, the same classifier's accuracy on held-out real images (~0.96 on
  digits): that is the most a perfect generator can get.
- `variety`: per class, the mean pairwise L2 distance between generated samples divided by the
  same for the real images of that class, averaged over classes. ~1.0 is as varied as the data;
  ~0 is one image per class whatever z is (within-class mode collapse). `variety_min` is the
  least varied class.
- `nearest_real`: per class, the mean distance from a generated sample to its nearest real image
  of the class, divided by the same for the real images (each to its nearest other real one),
  averaged over classes. ~1.0: samples lie as close to the data as real images do; well above 1:
  off the data (noise, smudges: variety bought with garbage); well below 1: copies of training
  images.

Mean pairwise distance over all pairs i != j does not depend on how many images are drawn (it is
an unbiased estimate of the expected distance between two independent draws), so 20 generated
samples per class are compared fairly with a class's hundreds of real images; 20 give the
per-class figure to about +-10%.

Which datasets are judged (`judged_by_default`): built-in or stored (a packed memmap), at most
`MAX_CLASSES` classes, `MAX_IMAGES` images and `MAX_JUDGED_BYTES` of pixels, so that fitting the
judge takes seconds (digits: ~1 s with pixels; coloured shapes ~8 s with the CNN). Others (CIFAR's
50,000 images) are judged only when asked for, on a seeded subset of `MAX_IMAGES` images. Judges
are cached per process by a fingerprint of the data, so a process that trains several runs on one
dataset fits it once.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from .judge_net import ImageClassifier
from .sample import eval_mode, latents, to_uint8

MAX_CLASSES = 100
MAX_IMAGES = 20_000
# A data set judged by default is read whole into memory once (a stored one from its memmap):
# 64 MB of pixels is 20,000 images at 32 px, 1,300 at 128 px.
MAX_JUDGED_BYTES = 64 * 2**20
MAX_FEATURE_SIZE = 16  # features are at most 16x16 (x3 for colour): 768 numbers
REAL_PER_CLASS = 1000  # real images per class for the reference distances (a seeded subset)
HELD_OUT = 0.2  # share of the real images kept out of the judge's fit to measure its accuracy
DEFAULT_PER_CLASS = 20
# Inverse regularisation of the judge's logistic regression on [0, 1] features. Measured on
# digits (80/20 split): C=10 0.969 held-out accuracy in ~100 iterations (~1 s); C=1 0.964.
CLASSIFIER_C = 10.0
# A judge whose pixel classifier reads fewer held-out real images right than this also fits a
# small CNN (sagan_core.judge_net) and keeps the better: digits stay on pixels (0.97), coloured
# shapes anywhere in the frame get the CNN (pixels 0.71, CNN ~0.98).
CNN_BELOW = 0.9


def judged_by_default(dataset) -> bool:  # noqa: ANN001  (a sagan_core.data.ImageDataset)
    """The rule for turning the judge on when the config leaves `variety_every` out."""
    pixels = int(np.prod(dataset.images.shape))  # uint8: one byte each
    return (
        dataset.num_classes <= MAX_CLASSES
        and len(dataset) <= MAX_IMAGES
        and pixels <= MAX_JUDGED_BYTES
    )


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of rows of (n, d) features (n >= 2)."""
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 images for a pairwise distance, got {features.shape[0]}")
    return float(torch.pdist(features.double()).mean())


@dataclass
class VarietyJudge:
    """A classifier and per-class reference distances fitted on one dataset's real images."""

    num_classes: int
    size: int  # features are size x size
    grey: bool  # features average the channels (the data's channels are all equal)
    classifier: object  # LogisticRegression on the features, or an ImageClassifier (CNN)
    real_variety: list[float]  # mean pairwise distance of each class's real images
    judge_accuracy: float  # the classifier's accuracy on held-out real images
    class_names: list[str] = field(default_factory=list)
    real_features: list[torch.Tensor] = field(default_factory=list)  # per class, (n_c, D)
    real_nearest: list[float] = field(default_factory=list)  # mean nearest-other-real distance

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def for_dataset(cls, dataset, seed: int = 0) -> VarietyJudge:  # noqa: ANN001
        """The judge of `dataset` (a sagan_core.data.ImageDataset), fitted once per process."""
        key = (_fingerprint(dataset), seed)
        judge = _CACHE.get(key)
        if judge is None:
            judge = _CACHE[key] = cls.fit(
                dataset.images,
                dataset.labels,
                dataset.num_classes,
                native_resolution=getattr(dataset, "native_resolution", None),
                class_names=list(dataset.class_names),
                seed=seed,
            )
        return judge

    @classmethod
    def fit(
        cls,
        images,  # noqa: ANN001  uint8 (N, C, R, R): a tensor or an array (memmap)
        labels: torch.Tensor,
        num_classes: int,
        native_resolution: int | None = None,
        class_names: list[str] | None = None,
        seed: int = 0,
    ) -> VarietyJudge:
        from sklearn.linear_model import LogisticRegression

        if num_classes > MAX_CLASSES:
            raise ValueError(f"the variety judge handles at most {MAX_CLASSES} classes")
        rng = np.random.default_rng(seed)
        n = len(labels)
        keep = np.sort(rng.permutation(n)[:MAX_IMAGES]) if n > MAX_IMAGES else np.arange(n)
        x = torch.as_tensor(np.asarray(images[keep]))  # (n, C, R, R) uint8
        y = torch.as_tensor(labels)[torch.from_numpy(keep)].long()
        resolution = int(x.shape[-1])
        size = min(native_resolution or resolution, resolution, MAX_FEATURE_SIZE)
        grey = bool(x.shape[1] == 1 or (x == x[:, :1]).all())
        probe = cls(num_classes, size, grey, None, [], 0.0)
        feats = probe.features(x)  # (n, D)

        real_variety, real_features, real_nearest = [], [], []
        for c in range(num_classes):
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < 2:
                raise ValueError(f"class {c} has {len(idx)} real image(s); the judge needs 2")
            if len(idx) > REAL_PER_CLASS:
                idx = idx[torch.from_numpy(rng.permutation(len(idx))[:REAL_PER_CLASS])]
            real_variety.append(mean_pairwise_distance(feats[idx]))
            real_features.append(feats[idx])
            d = torch.cdist(feats[idx].double(), feats[idx].double())
            d.fill_diagonal_(math.inf)
            real_nearest.append(float(d.min(dim=1).values.mean()))

        order = rng.permutation(len(y))
        n_held = max(1, int(len(y) * HELD_OUT))
        held, train = order[:n_held], order[n_held:]
        xs, ys = _classifier_input(feats), y.numpy()
        # One BLAS thread: on a busy 2-core machine the threaded fit took 14 s instead of 0.5 s.
        with threadpool_limits(1):
            clf = LogisticRegression(C=CLASSIFIER_C, max_iter=1000).fit(xs[train], ys[train])
            judge_accuracy = float(clf.score(xs[held], ys[held]))
        if judge_accuracy < CNN_BELOW:  # pixels do not tell these classes apart: try shapes
            held_t, train_t = torch.from_numpy(held), torch.from_numpy(train)
            net = ImageClassifier.fit(x[train_t], y[train_t], num_classes, grey, seed)
            net_accuracy = float((net.predict(x[held_t]) == y[held_t]).float().mean())
            if net_accuracy > judge_accuracy:
                clf, judge_accuracy = net, net_accuracy
        names = class_names or [str(c) for c in range(num_classes)]
        return cls(
            num_classes,
            size,
            grey,
            clf,
            real_variety,
            judge_accuracy,
            names,
            real_features,
            real_nearest,
        )

    # -- scoring --------------------------------------------------------------------------------

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, R, R) -> float32 (N, D) in [0, 1]: area-downsampled to size x size."""
        x = images.float().div(255.0)
        if self.grey:
            x = x.mean(1, keepdim=True)  # (N, 1, R, R)
        if x.shape[-1] != self.size:
            x = F.adaptive_avg_pool2d(x, self.size)  # (N, C', size, size)
        return x.flatten(1)

    def score_images(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Scores of images (uint8 (N, C, R, R)) generated for `labels` (N,)."""
        labels = torch.as_tensor(labels).long().cpu()
        feats = self.features(images.cpu())
        if isinstance(self.classifier, ImageClassifier):
            predicted = self.classifier.predict(images.cpu())
        else:
            with threadpool_limits(1):
                predicted = torch.from_numpy(self.classifier.predict(_classifier_input(feats)))
        per_acc: list[float] = []
        per_var: list[float] = []
        per_near: list[float] = []
        for c in range(self.num_classes):
            mine = labels == c
            if int(mine.sum()) < 2:
                per_acc.append(math.nan)
                per_var.append(math.nan)
                per_near.append(math.nan)
                continue
            per_acc.append(float((predicted[mine] == c).float().mean()))
            per_var.append(mean_pairwise_distance(feats[mine]) / self.real_variety[c])
            nearest = torch.cdist(feats[mine].double(), self.real_features[c].double()).min(dim=1)
            per_near.append(float(nearest.values.mean()) / self.real_nearest[c])
        scored = [v for v in per_var if not math.isnan(v)]
        if not scored:
            raise ValueError("no class has 2 or more images to score")
        return {
            "class_accuracy": float((predicted == labels).float().mean()),
            "variety": float(np.mean(scored)),
            "variety_min": float(np.min(scored)),
            "nearest_real": float(np.nanmean(per_near)),
            "judge_accuracy": self.judge_accuracy,
            "per_class_accuracy": per_acc,
            "per_class_variety": per_var,
            "per_class_nearest_real": per_near,
        }

    @torch.no_grad()
    def score(
        self,
        G: torch.nn.Module,
        n_per_class: int = DEFAULT_PER_CLASS,
        seed: int = 0,
        truncation: float | None = None,
        batch_size: int = 500,
    ) -> dict:
        """Generate `n_per_class` samples of every class from seeded z and score them.

        z is the sampling API's (`sagan_core.sample.latents`): the samples of class c are the
        images `/samples?class=c&seed=...` shows. `truncation` None is the plain normal (what
        training sees). G runs in eval mode and is put back as it was; the global RNGs are not
        touched.
        """
        if n_per_class < 2:
            raise ValueError(f"n_per_class must be >= 2 (got {n_per_class})")
        if G.num_classes != self.num_classes:
            raise ValueError(f"G has {G.num_classes} classes, the data {self.num_classes}")
        images, y = self.samples(G, n_per_class, seed, truncation, batch_size)
        return self.score_images(images, y)

    @torch.no_grad()
    def samples(
        self,
        G: torch.nn.Module,
        n_per_class: int,
        seed: int = 0,
        truncation: float | None = None,
        batch_size: int = 500,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What `score` judges: uint8 (n, 3, R, R) images, class by class, and their classes."""
        # Each class's samples are images 0..n_per_class-1 of the seed, as /samples draws them.
        z = latents(seed, n_per_class, G.z_dim, truncation).repeat(self.num_classes, 1)  # (n, Z)
        y = torch.arange(self.num_classes).repeat_interleave(n_per_class)  # (n,)
        device = next(G.parameters()).device
        with eval_mode(G):
            images = torch.cat(
                [
                    to_uint8(G(zb.to(device), yb.to(device))).cpu()
                    for zb, yb in zip(z.split(batch_size), y.split(batch_size), strict=True)
                ]
            )  # (n, 3, R, R) uint8
        return images, y


def _classifier_input(features: torch.Tensor) -> np.ndarray:
    return features.numpy().astype(np.float64)


def _fingerprint(dataset) -> str:  # noqa: ANN001
    """Name, shape and a hash of the labels and (a strided sample of) the images."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{dataset.name}|{tuple(dataset.images.shape)}|{dataset.num_classes}".encode())
    h.update(getattr(dataset, "native_resolution", None).__repr__().encode())
    h.update(np.ascontiguousarray(torch.as_tensor(dataset.labels).numpy()).tobytes())
    n = len(dataset)
    step = max(1, n // 2000)  # at most ~2,000 images hashed: cheap for any size
    h.update(np.ascontiguousarray(np.asarray(dataset.images[::step])).tobytes())
    return h.hexdigest()


_CACHE: dict[tuple[str, int], VarietyJudge] = {}
