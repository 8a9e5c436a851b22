"""The training loop: hinge loss, TTUR Adam, EMA of G; reports via callbacks, knows no storage."""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .augment import AdaptiveAugment, parse_policy
from .callbacks import CallbackList, DivergedError, Evaluator, TrainerCallbacks, TrainResult
from .checkpoint import (
    LEGACY_ARCH,
    build_generator,
    capture_rng,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .collapse import CollapseWatch
from .compiled import compile_failure, compiled_steps, fallback_note, uncompiled_steps
from .config import VARIETY_LOGS, ConfigError, Limits, TrainConfig
from .data import BatchSampler, DatasetError, build_dataset
from .device import check_device_available, resolve_device
from .distributed import NO_BUFFER_SYNC, Ranks, shard, sync_batch_norms
from .ema import ema_update, ema_update_foreach
from .finite import FiniteWatch
from .flops import step_flops
from .gpu_stats import gpu_metrics
from .losses import d_hinge_loss, g_hinge_loss, mode_seeking_term
from .models import Discriminator, Generator, attention_gamma_metrics
from .recipe import fill_augmentation
from .sample import class_rows_png
from .variety import DEFAULT_PER_CLASS, VarietyJudge, judged_by_default

# Fields that must match between a checkpoint and the config resuming it (they shape weights).
ARCH_FIELDS = ("resolution", "num_classes", "g_ch", "d_ch", "z_dim", "z_mode")


class Trainer:
    """One training run, built whole at construction: data, G, D, G_ema, optimisers.

    `dataset` defaults to the config's (`build_dataset`); `evaluator` is called every `eval_every`
    steps with G_ema; `callbacks` (one or several) hear metrics, checkpoints and samples and may
    stop the run. Checkpoints are written under `run_dir/checkpoints` and handed to the callbacks.
    The global RNGs are seeded here, so construct a trainer just before running it. `limits` are
    the operator's bounds on the config (None: `Limits()`'s defaults); a device this machine
    lacks is a ConfigError here, not a torch error later. With `variety_every` on (the default
    for a small data set) the variety judge is fitted here too (~1 s for digits, once per
    process) and G_ema's `class_accuracy`, `variety`, `variety_min` and `nearest_real` join the
    metrics.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path | str,
        callbacks: TrainerCallbacks | Sequence[TrainerCallbacks] = (),
        evaluator: Evaluator | None = None,
        dataset=None,  # noqa: ANN001  (a sagan_core.data dataset)
        limits: Limits | None = None,
        ranks: Ranks | None = None,
    ):
        config.validate(limits)
        cfg = self.config = config.resolved()
        # One of several processes (sagan_core.distributed): this rank's place, or None alone
        # (a world of one still runs the DDP path: what `bench ddp` compares with the plain one).
        self.ranks = ranks
        self.is_main = self.ranks is None or self.ranks.is_main
        self.run_dir = Path(run_dir)
        if isinstance(callbacks, TrainerCallbacks):
            callbacks = [callbacks]
        self.callbacks = CallbackList(callbacks)
        self.evaluator = evaluator
        self.device = check_device_available(resolve_device(cfg.device), cfg.device)
        if self.ranks is not None and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # this rank's cuda:r
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        cfg.num_classes = self.dataset.num_classes
        self.recipe_note = fill_augmentation(cfg, len(self.dataset))  # what the API left open
        if cfg.variety_every is None:
            judged = judged_by_default(self.dataset)
            cfg.variety_every = VARIETY_LOGS * cfg.log_every if judged else 0
        self.judge = VarietyJudge.for_dataset(self.dataset) if cfg.variety_every else None
        self.collapse = CollapseWatch(self.dataset.class_names, cfg.steps, DEFAULT_PER_CLASS)
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.sampler = BatchSampler(
            self.dataset, cfg.batch_size, self.device, self.data_gen, ranks=self.ranks
        )
        # D's augmentation (none: images unchanged), with ADA's p when ada_target is on
        policy = parse_policy(cfg.diff_augment)
        self.augment = AdaptiveAugment(policy, cfg.ada_target, self.device, cfg.seed)
        # The path (issue #14): "plain" is the eager fp32 unfused reference, "fast" the default
        # on CUDA: compiled G and D, fused (CUDA) or foreach (CPU) Adam, the EMA by foreach ops,
        # padded attention for the fused kernels, losses kept on the device between log lines,
        # channels_last (oneDNN's convolutions too: x1.2 eager on a 2-core CPU at 32 px, batch
        # 64); on CUDA also bf16 autocast.
        self.path = cfg.path = cfg.path or ("fast" if self.device.type == "cuda" else "plain")
        fast, cuda = self.path == "fast", self.device.type == "cuda"
        self.channels_last = fast
        self.cuda_graphs = fast and cuda and cfg.cuda_graphs and self.ranks is None
        self.G: Generator = build_generator(cfg).to(self.device)
        self.D = Discriminator(cfg.num_classes, cfg.resolution, cfg.d_ch).to(self.device)
        if self.ranks is not None and cfg.sync_bn:
            sync_batch_norms(self.G)  # batch statistics of the global batch
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        adam = {"fused": True} if fast and cuda else {"foreach": True} if fast else {}
        self.opt_g = torch.optim.Adam(
            self.G.parameters(), lr=cfg.lr_g, betas=betas, eps=1e-6, **adam
        )
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=cfg.lr_d, betas=betas, eps=1e-6, **adam
        )
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if cfg.precision == "bf16" or (fast and cuda)
            else contextlib.nullcontext()
        )
        # What train_step calls: the networks themselves, or (fast) their compiled forms, which
        # share their parameters and buffers (state dicts and checkpoints are unchanged).
        # Several processes: DDP averages the gradients of G's and D's updates (D_update; the G
        # step calls D itself, whose weights it does not update). Under no_grad (the D step's
        # fakes) DDP is a plain call. Buffers are not broadcast: spectral norm's u vectors are
        # the same on every rank by construction, batch-norm statistics too with sync_bn.
        self.G_step: torch.nn.Module = self.G
        self.D_step: torch.nn.Module = self.D
        self.D_update: torch.nn.Module = self.D
        if self.ranks is not None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if cuda else None
            self.G_step = DDP(
                self.G, device_ids=ids, gradient_as_bucket_view=True, **NO_BUFFER_SYNC
            )
            self.D_update = DDP(
                self.D, device_ids=ids, gradient_as_bucket_view=True, **NO_BUFFER_SYNC
            )
        if fast:
            self.G_step, self.D_step, self.D_update = compiled_steps(
                self.G_step, self.D, self.D_update, several=self.ranks is not None,
                cuda_graphs=self.cuda_graphs,
            )  # fmt: skip
        self._ema_tensors = (
            list(self.G_ema.parameters()),
            list(self.G.parameters()),
            list(self.G_ema.buffers()),
            list(self.G.buffers()),
        )
        self.finite = FiniteWatch()  # fast: non-finite losses noted on the device, read later
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None  # why the fast path runs uncompiled
        self.step = 0
        self.best_fid = math.inf
        self.last_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None
        self._saved_step = -1
        self.flops_per_step: int | None = None

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = ckpt["config"]
        for name in ARCH_FIELDS:
            was = saved.get(name) if saved.get(name) is not None else LEGACY_ARCH.get(name)
            if was != getattr(self.config, name):
                raise ConfigError(
                    name,
                    f"checkpoint {path} was trained with {name}={was!r}, "
                    f"the config says {getattr(self.config, name)!r}",
                )
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step = int(ckpt["step"])
        self.best_fid = float(ckpt.get("best_fid", math.inf))
        self.augment.load_state_dict(ckpt.get("augment", {}))
        restore_rng(ckpt["rng"], self.data_gen)
        self.last_checkpoint = Path(path)
        self._saved_step = self.step

    # -- one step: the seam for a later fast path (compile, channels_last, fused optimisers) -------

    def _latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Several processes: every rank draws the global batch's z and classes (the RNGs stay in
        # step) and keeps its slice: N ranks of batch B draw what one process of batch N*B does.
        B = self.config.batch_size
        n = B * (self.ranks.world_size if self.ranks is not None else 1)
        z = torch.randn(n, self.config.z_dim, device=self.device)  # (nB, Z)
        y = torch.randint(0, self.config.num_classes, (n,), device=self.device)  # (nB,)
        part = shard(B, self.ranks)
        return z[part], y[part]  # (B, Z), (B,)

    def _rows(self, parts: int) -> tuple[torch.Tensor | None, int | None]:
        """This rank's rows of a global batch of `parts` concatenated parts ([real; fake]), and
        its size: augmentation draws for the global batch, as `_latent` does (None alone)."""
        if self.ranks is None:
            return None, None
        n = self.config.batch_size * self.ranks.world_size
        part = torch.arange(n, device=self.device)[shard(self.config.batch_size, self.ranks)]
        return torch.cat([part + k * n for k in range(parts)]), parts * n

    def train_step(self) -> dict[str, torch.Tensor]:
        """d_steps discriminator updates, then one generator update; returns detached statistics."""
        cfg, G, D = self.config, self.G_step, self.D
        if self.cuda_graphs:  # a new step: the last step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        D.requires_grad_(True)
        if cfg.class_warmup:  # the step being taken is self.step + 1
            D.class_weight.fill_(min(1.0, (self.step + 1) / cfg.class_warmup))
        for _ in range(cfg.d_steps):
            x_real, y_real = self.sampler.next()  # (B, 3, R, R), (B,)
            z, y_fake = self._latent()
            with torch.no_grad(), self.autocast:
                x_fake = G(z, y_fake)  # (B, 3, R, R)
            with self.autocast:
                x = self.augment(torch.cat([x_real, x_fake]), *self._rows(2))  # (2B, 3, R, R)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.D_update(x, torch.cat([y_real, y_fake])).float()
            real_logits, fake_logits = logits.chunk(2)  # (B,), (B,)
            d_loss = d_hinge_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        D.requires_grad_(False)  # no D weight gradients during the G step
        z, y_fake = self._latent()
        half = cfg.batch_size // 2 if cfg.diversity_weight else 0
        if half:  # pairs (i, i + half) share a class: their z differ, their images should too
            y_fake = torch.cat([y_fake[:half], y_fake[:half], y_fake[2 * half :]])
        with self.autocast:
            x_fake = G(z, y_fake)  # (B, 3, R, R)
            g_logits = self.D_step(self.augment(x_fake, *self._rows(1)), y_fake).float()
        g_loss = g_hinge_loss(g_logits)
        loss = g_loss
        stats = {}
        if half:
            term, spread = mode_seeking_term(x_fake.float(), z, half, cfg.diversity_weight)
            loss = g_loss + term
            stats["g_spread"] = spread.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)
        stats = {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": real_logits.detach().mean(),
            "d_fake": fake_logits.detach().mean(),
            "d_real_sign": real_logits.detach().sign().mean(),  # ADA's r_t
            **stats,
        }
        world = self.ranks.world_size if self.ranks is not None else 1
        if self.ranks is not None:  # the global batch's means, the same on every rank
            means = self.ranks.mean(torch.stack([v.float() for v in stats.values()]))
            stats = dict(zip(stats, means.unbind(), strict=True))
        self.augment.update(stats["d_real_sign"], cfg.batch_size * cfg.d_steps * world)
        return stats

    # -- the loop -----------------------------------------------------------------------------

    def run(self, resume_from: Path | str | None = None) -> TrainResult:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            self._resume(Path(resume_from))
        if self.ranks is not None:  # ranks that start apart would train out of step, silently
            low, high = self.ranks.same(self.step)
            if low != high:
                raise RuntimeError(f"the ranks start at different steps ({low} to {high})")
        if self.recipe_note and self.step == 0 and self.is_main:
            self.callbacks.on_note(0, self.recipe_note)
        self.G.train()
        self.D.train()
        fast = self.path == "fast"
        self._compile_reported = False
        sums: dict = {}
        window, t0 = 0, time.perf_counter()

        while self.step < cfg.steps:
            stop = self.callbacks.should_stop(self.step)
            if self.ranks is not None:  # rank 0 decides; every rank stops at the same step
                stop = self.ranks.any(stop)
            if stop:
                if self._saved_step != self.step:
                    self._save({"latest"})
                return TrainResult(self.step, True, self.last_checkpoint)
            if fast:
                if self.flops_per_step is None:
                    self.flops_per_step = step_flops(cfg)
                if self.compile_seconds is None:  # the first call compiles G and D
                    started = time.perf_counter()
                    try:
                        stats = self.train_step()
                        self._sync()
                    except torch._dynamo.exc.TorchDynamoException as e:
                        self._run_uncompiled(e)  # no C compiler, a GPU Triton does not know
                        stats = self.train_step()
                    self.compile_seconds = time.perf_counter() - started
                else:
                    stats = self.train_step()
                self.step += 1
                self.finite.note(self.step, stats)  # on the device: no host sync inside the loop
                values = stats
            else:
                if self.flops_per_step is None and self.ranks is not None:
                    # Counted on meta copies: a counting mode around DDP's step would count the
                    # copies its collectives make too.
                    self.flops_per_step = step_flops(cfg)
                    stats = self.train_step()
                elif self.flops_per_step is None:
                    # Count the work of one real step once, so the log can show achieved TFLOP/s.
                    with FlopCounterMode(display=False) as counter:
                        stats = self.train_step()
                    self.flops_per_step = counter.get_total_flops()
                else:
                    stats = self.train_step()
                values = {k: float(v) for k, v in stats.items()}  # one host sync per step
                self.step += 1
                bad = [k for k in ("d_loss", "g_loss") if not math.isfinite(values[k])]
                if bad:
                    raise DivergedError(self.step, ", ".join(f"{k}={values[k]}" for k in bad))
            if self.is_main:  # (only rank 0 samples, evaluates and checkpoints G_ema)
                self._ema(0.0 if self.step <= cfg.ema_start else cfg.ema_decay)  # copy until start
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            window += 1

            step, final = self.step, self.step == cfg.steps
            if fast and self._read_due(step, final):
                self.finite.check()  # raises DivergedError naming the first bad step
            if not self.is_main:  # rank 0 reports, samples, evaluates and checkpoints
                if step % cfg.log_every == 0 or final:
                    sums, window = {}, 0
                continue
            if step % cfg.log_every == 0 or final:
                elapsed = time.perf_counter() - t0
                if fast:  # one read of the window's sums
                    sums = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True))
                metrics = {k: v / window for k, v in sums.items()}
                if self.compile_seconds is not None and not self._compile_reported:
                    metrics["compile_s"] = self.compile_seconds
                    self._compile_reported = True
                metrics.update(attention_gamma_metrics(self.G, self.D))
                world = self.ranks.world_size if self.ranks is not None else 1
                metrics["images_per_s"] = (
                    window * cfg.batch_size * cfg.d_steps * world / max(elapsed, 1e-9)
                )
                metrics["tflops"] = self.flops_per_step * window * world / max(elapsed, 1e-9) / 1e12
                metrics["lr_g"] = self.opt_g.param_groups[0]["lr"]
                metrics["lr_d"] = self.opt_d.param_groups[0]["lr"]
                if self.augment.adaptive:
                    metrics["augment_p"] = float(self.augment.p)
                metrics.update(gpu_metrics(self.device))  # none on CPU: absent, not zero
                if self._variety_due(step, final):  # on the same line when the steps meet
                    metrics.update(self._variety_metrics())
                self._emit_metrics(step, metrics)
                sums, window, t0 = {}, 0, time.perf_counter()
            elif self._variety_due(step, final):
                self._emit_metrics(step, self._variety_metrics())
            if cfg.sample_every and (step % cfg.sample_every == 0 or final):
                self._samples(step)
            tags = set()
            if cfg.eval_every and self.evaluator and (step % cfg.eval_every == 0 or final):
                scored = self.evaluator(step, self.G_ema)
                results = {k: float(v) for k, v in scored.items()}
                self._emit_metrics(step, results)
                if getattr(scored, "protocol", None):
                    self.callbacks.on_protocol(step, scored.protocol)
                if results.get("fid", math.inf) < self.best_fid:
                    self.best_fid = results["fid"]
                    tags.add("best")
            if final:
                tags |= {"final"}
            if tags or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                self._save({"latest"} | tags)
        if self._saved_step != self.step and self.is_main:
            self._save({"latest", "final"})  # e.g. resumed from a checkpoint already at `steps`
        return TrainResult(self.step, False, self.last_checkpoint)

    # -- the fast path's bookkeeping ------------------------------------------------------------

    def _run_uncompiled(self, error: Exception) -> None:
        """The fast path without torch.compile (the same modules, called eagerly) and a note
        saying why, rather than a failed job: a machine without a C compiler cannot compile."""
        self.G_step, self.D_step, self.D_update = uncompiled_steps(
            self.G_step, self.D_step, self.D_update
        )
        self.cuda_graphs = False
        self.compile_error = compile_failure(error)
        self.callbacks.on_note(self.step, fallback_note(self.compile_error))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _ema(self, decay: float) -> None:
        if self.path == "fast":
            ema_update_foreach(*self._ema_tensors, decay)
        else:
            ema_update(self.G_ema, self.G, decay)

    def _read_due(self, step: int, final: bool) -> bool:
        """Whether this step reports or saves anything (so the losses must be read first)."""
        cfg = self.config

        def every(n: int | None) -> bool:
            return bool(n) and step % n == 0

        return (
            final
            or every(cfg.log_every)
            or every(cfg.sample_every)
            or every(cfg.checkpoint_every)
            or (self.evaluator is not None and every(cfg.eval_every))
            or self._variety_due(step, final)
        )

    # -- reporting ----------------------------------------------------------------------------

    def _variety_due(self, step: int, final: bool) -> bool:
        every = self.config.variety_every
        return bool(self.judge and every and (step % every == 0 or final))

    def _variety_metrics(self) -> dict[str, float]:
        """G_ema judged on 20 samples per class from a fixed seed: the points of a curve."""
        scores = self.judge.score(self.G_ema, seed=0)
        for warning in self.collapse.check(self.step, scores):
            self.callbacks.on_warning(self.step, warning)
        return {k: scores[k] for k in ("class_accuracy", "variety", "variety_min", "nearest_real")}

    def _emit_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.callbacks.on_metrics(step, metrics)

    def _samples(self, step: int) -> None:
        self.callbacks.on_samples(step, class_rows_png(self.G_ema, self.dataset.class_names))

    def _save(self, tags: set[str]) -> Path:
        """Save the current state; keep only this, the previous latest's successor and the best."""
        self.finite.check()  # never a checkpoint of a diverged state (fast: read the flag first)
        if not self.is_main:  # rank 0's checkpoint is every rank's (their states are equal)
            return self.last_checkpoint
        path = checkpoint_path(self.run_dir, self.step)
        save_checkpoint(
            path,
            G=self.G.state_dict(),
            D=self.D.state_dict(),
            G_ema=self.G_ema.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            step=self.step,
            best_fid=self.best_fid,
            augment=self.augment.state_dict(),
            rng=capture_rng(self.data_gen),
            config=self.config.to_dict(),
            class_names=list(self.dataset.class_names),
        )
        self.callbacks.on_checkpoint(self.step, path, set(tags))
        previous = self.last_checkpoint
        self.last_checkpoint, self._saved_step = path, self.step
        if "best" in tags:
            if self.best_checkpoint not in (None, path, previous):
                self.best_checkpoint.unlink(missing_ok=True)
            self.best_checkpoint = path
        # Old checkpoints of this run dir go once a newer one is handed over (~1 GB each at 128px).
        if previous is not None and previous != path and previous != self.best_checkpoint:
            if previous.parent == path.parent:
                previous.unlink(missing_ok=True)
        return path


__all__ = [
    "CallbackList",
    "DatasetError",
    "DivergedError",
    "Evaluator",
    "TrainResult",
    "Trainer",
    "TrainerCallbacks",
]
