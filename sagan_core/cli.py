"""Command line: `python -m sagan_core train|sample|pack`; the service's typer CLI forwards here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from .checkpoint import newest_checkpoint_file
from .classes import ClassError, resolve_class
from .config import ConfigError, TrainConfig
from .config_fields import DESCRIPTIONS
from .data import DatasetError, build_dataset
from .device import resolve_device
from .distributed import join_from_env, leave, threads_per_rank, under_elastic_agent
from .elastic import enter_rank, leave_rank
from .launch import ONE_MACHINE, train_distributed
from .recipe import BUILTIN_IMAGES, choose_preset
from .run_dir import RunDirectoryWriter
from .trainer import Trainer, TrainerCallbacks


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


class _ProgressCallbacks(TrainerCallbacks):
    """A tqdm bar: steps, it/s, ETA, and the latest losses in the postfix."""

    def __init__(self, total: int):
        self.total, self.bar = total, None  # the bar appears once training starts

    def _advance(self, step: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True)
        self.bar.update(step - self.bar.n)

    def should_stop(self, step: int) -> bool:
        self._advance(step)
        return False

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._advance(step)
        keys = ("d_loss", "g_loss", "images_per_s", "fid")
        self.bar.set_postfix({k: f"{metrics[k]:.3g}" for k in keys if k in metrics})

    def on_note(self, step: int, message: str) -> None:
        print(f"step {step}: {message}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base = next(
            (a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name]
        )
        if base is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument(
                flag, type=base, default=None, help=DESCRIPTIONS.get(f.name, f"default {f.default}")
            )


def build_parser(prog: str = "sagan_core") -> argparse.ArgumentParser:
    """`prog` is how usage lines name the command (the service's CLI passes `sagan`)."""
    parser = _Parser(prog=prog, description="Train and sample SAGAN models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model")
    _add_config_flags(t)
    t.add_argument("--config", type=Path, help="JSON file of config fields (flags override it)")
    t.add_argument("--run-dir", type=Path, help="output directory (default runs/<dataset>)")
    t.add_argument(
        "--resume", action="store_true", help="resume from the run dir's latest checkpoint"
    )
    t.add_argument(
        "--inception-weights",
        help="local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
        "(for --eval-every without internet; default: $SAGAN_INCEPTION_WEIGHTS, then download)",
    )

    s = sub.add_parser("sample", help="render a PNG grid from a checkpoint")
    s.add_argument(
        "--checkpoint", type=Path, required=True, help="a checkpoint file, or a run directory"
    )
    s.add_argument("--class", dest="cls", default="0", help="class index or class name")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--truncation",
        type=float,
        default=None,
        help="keep |z| <= T (e.g. 1.0: typical images, less variety); default: none",
    )
    s.add_argument("--nrow", type=int, default=None)
    s.add_argument("--device", default="cpu")
    s.add_argument("-o", "--output", type=Path, default=Path("samples.png"))

    k = sub.add_parser("pack", help="pack an image folder into one file for fast loading")
    k.add_argument("folder", type=Path)
    k.add_argument("--resolution", type=int, required=True)
    k.add_argument("-o", "--output", type=Path, required=True)
    return parser


def _train(args: argparse.Namespace) -> int:
    values = json.loads(args.config.read_text()) if args.config else {}
    for name in TrainConfig.field_names():
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    cfg = TrainConfig.from_dict(values).validate()
    if cfg.preset is None:  # as the service chooses: from this machine and the data set
        gpu = resolve_device(cfg.device).type == "cuda"
        choice = choose_preset(gpu, BUILTIN_IMAGES.get(cfg.dataset), cfg.resolution)
        cfg.preset = choice.preset
    run_dir = args.run_dir or Path("runs") / cfg.dataset
    resume = newest_checkpoint_file(run_dir) if args.resume else None
    if args.resume and resume is None:
        print(f"no checkpoint in {run_dir / 'checkpoints'}; starting fresh", file=sys.stderr)
    dataset = build_dataset(cfg.resolved())
    if "preset" not in values:  # said once the data is there: an error stays one line
        print(f"preset {cfg.preset}: {choice.reason}", file=sys.stderr)
    evaluator = None
    if cfg.eval_every and os.environ.get("RANK", "0") == "0":  # (under torchrun: rank 0's)
        from .evaluate import DirectoryStatsCache, make_training_evaluator

        # Reference statistics are shared by runs: cached beside the run directories.
        evaluator = make_training_evaluator(
            dataset,
            cfg.resolved(),
            weights_path=args.inception_weights,
            cache=DirectoryStatsCache(run_dir.parent / ".stats-cache"),
        )
    if under_elastic_agent():  # a worker of the user's own torchrun: no launch of our own
        return _train_as_rank(cfg, run_dir, evaluator, dataset, resume)
    if cfg.nodes > 1:
        raise ConfigError("nodes", ONE_MACHINE.format(nodes=cfg.nodes))
    progress = _ProgressCallbacks(cfg.resolved().steps)
    callbacks = [progress, RunDirectoryWriter(run_dir)]
    try:
        if cfg.gpus > 1:  # the elastic agent's ranks; the progress bar and files stay here
            result = train_distributed(cfg, run_dir, callbacks, evaluator, dataset, None, resume)
        else:
            trainer = Trainer(
                cfg, run_dir, callbacks=callbacks, evaluator=evaluator, dataset=dataset
            )
            result = trainer.run(resume_from=resume)
    finally:
        progress.close()
    print(f"step {result.step}: checkpoint {result.last_checkpoint}")
    return 0


def _train_as_rank(cfg: TrainConfig, run_dir: Path, evaluator, dataset, resume) -> int:  # noqa: ANN001
    """One rank of a run under torchrun (issue #25): its place from the environment; rank 0
    reports (progress bar, run directory, evaluation), the others train in run_dir/rank-N."""
    import torch

    kind = resolve_device(cfg.device).type
    if kind == "cpu":
        torch.set_num_threads(threads_per_rank())
    ranks = join_from_env(kind)
    resume = enter_rank(run_dir, ranks.rank, resume)
    try:
        cfg = dataclasses.replace(cfg, device=kind, gpus=ranks.world_size, nodes=1)
        progress = _ProgressCallbacks(cfg.resolved().steps) if ranks.is_main else None
        callbacks = [progress, RunDirectoryWriter(run_dir)] if ranks.is_main else []
        work_dir = run_dir if ranks.is_main else run_dir / f"rank-{ranks.rank}"
        trainer = Trainer(
            cfg, work_dir, callbacks, evaluator if ranks.is_main else None, dataset, ranks=ranks
        )
        try:
            result = trainer.run(resume_from=resume)
        finally:
            if progress is not None:
                progress.close()
        leave_rank(run_dir, ranks.rank)
    finally:
        leave()
    if ranks.is_main:
        print(f"step {result.step}: checkpoint {result.last_checkpoint}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .checkpoint import load_generator
    from .sample import grid_png, sample

    checkpoint = args.checkpoint
    if checkpoint.is_dir():  # a run directory: its latest checkpoint
        checkpoint = newest_checkpoint_file(checkpoint)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint in {args.checkpoint / 'checkpoints'}")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    G, _, class_names = load_generator(checkpoint, device=args.device)
    try:
        cls = resolve_class(args.cls, class_names)
    except ClassError as e:
        raise ValueError(f"--class: {e}") from e
    png = grid_png(sample(G, cls, args.n, args.seed, args.truncation), nrow=args.nrow)
    args.output.write_bytes(png)
    print(f"wrote {args.output}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from .data import pack_folder

    TrainConfig(resolution=args.resolution).validate()
    print(f"wrote {pack_folder(args.folder, args.output, args.resolution)}")
    return 0


def main(argv: list[str] | None = None, prog: str = "sagan_core") -> int:
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on bad flags
        return int(e.code or 0)
    try:
        return {"train": _train, "sample": _sample, "pack": _pack}[args.command](args)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
