"""Is the run learning? Warnings from the variety judge's periodic scores (sagan_core.variety),
for a run that stays at collapse level past its first quarter:

- a class whose samples are near-identical: its variety (mean pairwise distance of its samples
  over that of its real images) under `COLLAPSED_VARIETY` at `PATIENCE` checks in a row (the
  judge's 20 samples of the class are then nearly one image whatever z is);
- samples that do not follow the class asked for: class_accuracy under `CHANCE_FACTOR` x chance
  while the judge reads real images well, `PATIENCE` checks in a row.

Each condition warns once per run (a resumed run may warn again). Early checks are skipped: at
step 200 of 2,000 a run is still allowed to look like noise.
"""

from __future__ import annotations

import math

COLLAPSED_VARIETY = 0.2
CHANCE_FACTOR = 1.5
PATIENCE = 2  # checks in a row
START_SHARE = 0.25  # of the run's steps before a warning is given
WHAT_TO_TRY = (
    "try: diff_augment/ada_target (augmentation), diversity_weight (mode seeking), "
    "class_warmup, a lower lr_g, or a sweep (README: 'Your own images')"
)


class CollapseWatch:
    def __init__(self, class_names: list[str], steps: int, per_class: int):
        self.names, self.steps, self.per_class = [str(n) for n in class_names], steps, per_class
        self.since: dict[object, int] = {}  # condition -> first step of its streak
        self.streak: dict[object, int] = {}
        self.warned: set[object] = set()

    def check(self, step: int, scores: dict) -> list[str]:
        """The warnings this check gives (each condition once)."""
        bad: dict[object, str] = {}
        for c, v in enumerate(scores.get("per_class_variety", [])):
            if not math.isnan(v) and v < COLLAPSED_VARIETY:
                bad[c] = (
                    f"class {c} ({self.names[c]!r}): {self.per_class} near-identical samples "
                    f"(variety {v:.2f} of real)"
                )
        chance = 1.0 / max(1, len(self.names))
        acc, judge = scores.get("class_accuracy", 1.0), scores.get("judge_accuracy", 0.0)
        if (
            len(self.names) > 1
            and acc < CHANCE_FACTOR * chance
            and judge > 2 * CHANCE_FACTOR * chance
        ):
            bad["accuracy"] = (
                f"samples do not follow the class asked for: class_accuracy {acc:.2f} "
                f"(chance {chance:.2f}; real images read at {judge:.2f})"
            )
        for key in list(self.streak):
            if key not in bad:
                self.streak.pop(key)
                self.since.pop(key)
        out = []
        for key, what in bad.items():
            self.since.setdefault(key, step)
            self.streak[key] = self.streak.get(key, 0) + 1
            late = step >= START_SHARE * self.steps
            if self.streak[key] >= PATIENCE and late and key not in self.warned:
                self.warned.add(key)
                out.append(f"not learning: {what} since step {self.since[key]}; {WHAT_TO_TRY}")
        return out
