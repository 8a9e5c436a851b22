"""Quality experiment: train one config on a small dataset, then print time, accuracy and variety.

    python -m sagan_core.bench quality                                # the digits defaults
    python -m sagan_core.bench quality --set steps=2000 --set g_ch=8 --set d_ch=8
    python -m sagan_core.bench quality --set preset=paper --set steps=400 --threads 2

`--set FIELD=VALUE` is any TrainConfig field (JSON values: numbers, true/false, strings); left-out
fields are the defaults a user gets. Training runs on the CPU unless `--set device=...` says
otherwise. After training, G_ema is scored by `sagan_core.variety.VarietyJudge` on
`--per-class` samples of every class, with z untruncated and truncated at 1.0 (the sampling API's
default). The report is one Markdown table row plus a JSON line (for collecting runs), with the
1-minute load average at start and end: on a shared machine a slow run may be a busy one.
`--grid PATH` writes a PNG of every class (rows) for two seeds (left and right halves).

    python -m sagan_core.bench quality --compare     # before #22 vs the defaults, both data sets

`--compare` trains digits and the colour set (`color_shapes`) with the recipe before issue #22
(tiny, no augmentation) and with today's defaults (ADA on small data), and prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint import load_generator
from ..config import TrainConfig, parse_assignments
from ..data import build_dataset
from ..recipe import choose_preset
from ..sample import eval_mode, grid_png, sample
from ..trainer import Trainer, TrainerCallbacks
from ..variety import VarietyJudge


class _Curve(TrainerCallbacks):
    """Keeps the trainer's periodic class_accuracy/variety; prints them as they come."""

    def __init__(self, quiet: bool):
        self.points: list[tuple[int, float, float]] = []
        self.quiet = quiet

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "variety" in metrics:
            self.points.append((step, metrics["class_accuracy"], metrics["variety"]))
            if not self.quiet:
                losses = " ".join(
                    f"{k} {metrics[k]:.2f}" for k in ("d_real", "d_fake", "g_loss") if k in metrics
                )
                print(
                    f"  step {step}: class_accuracy {metrics['class_accuracy']:.3f} "
                    f"variety {metrics['variety']:.3f} (min {metrics['variety_min']:.3f}) "
                    f"nearest_real {metrics.get('nearest_real', float('nan')):.2f} {losses}",
                    file=sys.stderr,
                    flush=True,
                )


def _time_calls(obj: object, method: str) -> list[float]:
    """Wrap obj.method to record the seconds of each call; returns the (growing) list."""
    seconds: list[float] = []
    inner = getattr(obj, method)

    def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    setattr(obj, method, timed)
    return seconds


def class_grid(G: torch.nn.Module, num_classes: int, seeds=(0, 1), per_seed: int = 8) -> bytes:
    """Rows of classes; each row `per_seed` samples of each seed side by side (truncation off)."""
    rows = []
    for c in range(num_classes):
        for seed in seeds:
            rows.append(sample(G, c, per_seed, seed=seed, truncation=30.0))
    return grid_png(torch.cat(rows), nrow=per_seed * len(seeds))


@torch.no_grad()
def z_share(G: torch.nn.Module, num_classes: int, per_class: int = 32, seed: int = 0) -> dict:
    """Where G loses z: at each block's output, the share of the activations' variance that is
    across z within a class (the rest is across classes). 1.0 at the input linear (no class
    there yet); ~0 at the image means every z of a class gives the same image.

    The same `per_class` z are used for every class; G runs in eval mode.
    """
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn((per_class, G.z_dim), generator=rng).repeat(num_classes, 1)  # (K*M, Z)
    y = torch.arange(num_classes).repeat_interleave(per_class)  # (K*M,)
    device = next(G.parameters()).device
    outputs: dict[str, torch.Tensor] = {}
    named = [("linear", G.linear)] + [(f"blocks.{i}", b) for i, b in enumerate(G.blocks)]
    hooks = [
        m.register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, out))
        for name, m in named
    ]
    try:
        with eval_mode(G):
            outputs["image"] = G(z.to(device), y.to(device))
    finally:
        for h in hooks:
            h.remove()
    shares = {}
    for name, out in outputs.items():
        a = out.float().reshape(num_classes, per_class, -1).cpu()  # (K, M, F)
        within = a.var(dim=1).mean()  # across z, per class and feature
        total = a.reshape(num_classes * per_class, -1).var(dim=0).mean()
        shares[name] = round(float(within / total.clamp_min(1e-12)), 3)
    return shares


def _score_checkpoint(args: argparse.Namespace) -> int:

    G, cfg, _ = load_generator(args.score)
    judge = VarietyJudge.for_dataset(build_dataset(cfg))
    row = {"checkpoint": str(args.score)}
    for name, truncation in (("", None), ("_t1", 1.0)):
        scores = judge.score(G, args.per_class, seed=args.seed, truncation=truncation)
        for k in ("class_accuracy", "variety", "variety_min", "nearest_real"):
            row[k + name] = round(scores[k], 3)
    row["z_share"] = z_share(G, cfg.num_classes)
    if args.grid:
        args.grid.write_bytes(class_grid(G, cfg.num_classes))
    print("JSON " + json.dumps(row), flush=True)
    return 0


# `--compare`: the recipe before issue #22 (the tiny preset tuned on digits, ch 4, set by hand, no
# augmentation) against today's defaults, on grey digits and the colour set, in one run.
BEFORE = {"preset": "tiny", "g_ch": 4, "d_ch": 4, "diff_augment": "", "ada_target": 0.0}
COMPARED = (("digits", "before", BEFORE), ("digits", "defaults", {}),
            ("color_shapes", "before", BEFORE), ("color_shapes", "defaults", {}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sagan_core.bench quality", description=__doc__.split("\n")[0]
    )
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--per-class", type=int, default=100, help="samples per class for the score")
    p.add_argument("--seed", type=int, default=1234, help="z seed of the final score")
    p.add_argument("--label", default="", help="a name for this run in the table row")
    p.add_argument("--grid", type=Path, default=None, help="write a class-by-seed PNG grid here")
    p.add_argument("--run-dir", type=Path, default=None, help="keep checkpoints here")
    p.add_argument("--quiet", action="store_true", help="no per-interval lines on stderr")
    p.add_argument(
        "--compare",
        action="store_true",
        help="train digits and color_shapes with the recipe before #22 and with today's "
        "defaults (--set applies to all four runs) and print one table",
    )
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also score G itself (not the EMA) and print z_share per G layer",
    )
    p.add_argument(
        "--score",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="train nothing: score this checkpoint's G_ema (and --grid it)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.score:
        return _score_checkpoint(args)

    try:
        sets = parse_assignments(args.sets)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not args.compare:
        row = train_and_score({"device": "cpu", **sets}, args)
        print(_table_row(args.label or json.dumps(row["set"]), row))
        print("JSON " + json.dumps(row), flush=True)
        return 0
    rows = []
    for dataset, label, recipe in COMPARED:
        fields = {"device": "cpu", "dataset": dataset, **recipe, **sets}
        rows.append((f"{dataset} {label}", train_and_score(fields, args)))
        print("JSON " + json.dumps(rows[-1][1]), flush=True)
    print(f"\n{HEADER}")
    for label, row in rows:
        print(_table_row(label, row))
    return 0


HEADER = (
    "| run | preset, augmentation | steps | train s | class_accuracy | judge (real) | ratio "
    "| variety | variety_min | nearest_real |\n|---|---|---|---|---|---|---|---|---|---|"
)


def _table_row(label: str, row: dict) -> str:
    ratio = row["class_accuracy"] / max(row["judge_accuracy"], 1e-9)
    recipe = f"{row['preset']}, {row['diff_augment'] or 'none'}"
    if row["ada_target"]:
        recipe += f" ADA {row['ada_target']} (p {row['augment_p']:.2f})"
    return (
        f"| {label} | {recipe} | {row['steps']} | {row['train_s']:.0f} "
        f"| {row['class_accuracy']:.3f} | {row['judge_accuracy']:.3f} | {ratio:.2f} "
        f"| {row['variety']:.3f} | {row['variety_min']:.3f} | {row['nearest_real']:.2f} |"
    )


def train_and_score(fields: dict, args: argparse.Namespace) -> dict:
    """Train one config (left-out fields as a user gets them on this CPU) and score G_ema."""
    cfg = TrainConfig.from_dict(fields).validate()
    if cfg.preset is None:  # as the service and `sagan train` choose on CPU workers
        cfg.preset = choose_preset(False, None, cfg.resolution).preset
    resolved = cfg.resolved()
    dataset = build_dataset(resolved)
    t_fit = time.perf_counter()
    judge = VarietyJudge.for_dataset(dataset)  # the trainer's own check reuses it (cached)
    fit_s = time.perf_counter() - t_fit
    curve = _Curve(args.quiet)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp)
        t_build = time.perf_counter()
        trainer = Trainer(cfg, run_dir, callbacks=curve, dataset=dataset)
        build_s = time.perf_counter() - t_build
        judged_s = _time_calls(trainer, "_variety_metrics")  # the trainer's own variety checks
        t0 = time.perf_counter()
        trainer.run()
        train_s = time.perf_counter() - t0
    load_end = os.getloadavg()[0]
    G = trainer.G_ema
    free = judge.score(G, args.per_class, seed=args.seed, truncation=None)
    trunc = judge.score(G, args.per_class, seed=args.seed, truncation=1.0)
    extra = {}
    if args.diagnose:
        raw = judge.score(trainer.G, args.per_class, seed=args.seed, truncation=None)
        extra = {
            "variety_g": round(raw["variety"], 3),
            "class_accuracy_g": round(raw["class_accuracy"], 3),
            "z_share_ema": z_share(G, trainer.config.num_classes),
            "z_share_g": z_share(trainer.G, trainer.config.num_classes),
        }
    if args.grid:
        grid = args.grid
        if args.compare:  # one grid per run: name.digits-before.png
            grid = grid.with_suffix(
                f".{cfg.dataset}-{'before' if cfg.ada_target == 0 else 'new'}.png"
            )
        grid.write_bytes(class_grid(G, trainer.config.num_classes))

    final = trainer.config
    return {
        "label": args.label,
        "set": {k: v for k, v in fields.items() if k != "device"},
        "dataset": final.dataset,
        "preset": final.preset,
        "diff_augment": final.diff_augment,
        "ada_target": final.ada_target,
        "augment_p": round(float(trainer.augment.p), 3),
        "steps": final.steps,
        "train_s": round(train_s, 1),
        "build_s": round(build_s, 1),
        "judge_fit_s": round(fit_s, 2),
        "judge": type(judge.classifier).__name__,
        "variety_s": round(sum(judged_s), 2),
        "variety_checks": len(judged_s),
        "load_start": round(load_start, 2),
        "load_end": round(load_end, 2),
        "threads": torch.get_num_threads(),
        "params_g": sum(p.numel() for p in trainer.G.parameters()),
        "params_d": sum(p.numel() for p in trainer.D.parameters()),
        "class_accuracy": round(free["class_accuracy"], 3),
        "variety": round(free["variety"], 3),
        "variety_min": round(free["variety_min"], 3),
        "nearest_real": round(free["nearest_real"], 3),
        "class_accuracy_t1": round(trunc["class_accuracy"], 3),
        "variety_t1": round(trunc["variety"], 3),
        "judge_accuracy": round(judge.judge_accuracy, 3),
        "per_class_variety": [round(v, 2) for v in free["per_class_variety"]],
        "per_class_accuracy": [round(v, 2) for v in free["per_class_accuracy"]],
        "curve": [(s, round(a, 3), round(v, 3)) for s, a, v in curve.points],
        **extra,
    }


if __name__ == "__main__":
    raise SystemExit(main())
