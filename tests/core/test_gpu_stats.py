"""A train run's GPU figures (#24): memory peaks and NVML's utilisation and power on CUDA; on a CPU
run absent, not zero (scripts/gpu_check.sh runs this file on a lent GPU)."""

from __future__ import annotations

import pytest
import torch

from sagan_core import metric_names
from sagan_core.config import TrainConfig
from sagan_core.gpu_stats import gpu_metrics, pci_address
from sagan_core.trainer import Trainer, TrainerCallbacks

GPU_NAMES = {"gpu_mem_gib", "gpu_mem_reserved_gib", "gpu_util", "gpu_power_w"}


class Rows(TrainerCallbacks):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))


def _run(tmp_path, device: str) -> list[dict[str, float]]:
    cfg = TrainConfig(
        dataset="digits", resolution=32, g_ch=4, d_ch=4, z_dim=8, batch_size=8, steps=4,
        log_every=2, checkpoint_every=0, sample_every=0, variety_every=0, device=device, seed=0,
        path="plain",  # the figures do not hang on the path; the fast one compiles for a minute
    )  # fmt: skip
    rows = Rows()
    Trainer(cfg, tmp_path, callbacks=[rows]).run()
    return [r for r in rows.rows if "d_loss" in r]


def test_a_cpu_run_reports_no_gpu_figures(tmp_path):
    rows = _run(tmp_path, "cpu")
    assert rows and all("images_per_s" in r for r in rows)
    assert not any(GPU_NAMES & set(r) for r in rows), rows  # absent, not zero
    assert gpu_metrics(torch.device("cpu")) == {}


def test_the_gpu_figures_are_metrics_a_train_job_may_write():
    assert all(metric_names.can_write("train", n) for n in GPU_NAMES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (scripts/gpu_check.sh)")
def test_a_cuda_run_reports_its_memory_peaks_utilisation_and_power(tmp_path):
    rows = _run(tmp_path, "cuda")
    for r in rows:
        assert 0 < r["gpu_mem_gib"] <= r["gpu_mem_reserved_gib"], r
        print({k: round(v, 3) for k, v in r.items() if k in GPU_NAMES})
    import importlib.util

    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py not installed: memory checked, NVML's figures not")
    assert all(0 <= r["gpu_util"] <= 1 and r["gpu_power_w"] > 0 for r in rows), rows


def test_nvml_finds_the_device_by_its_wholepci_address(monkeypatch):
    # torch gives the address's parts as integers; NVML wants "domain:bus:device.function" (the
    # first GPU run passed the bus number alone, NVML found nothing and the figures were missing)
    class Props:
        pci_domain_id, pci_bus_id, pci_device_id = 0, 0x3B, 0

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props())
    assert pci_address(0) == "00000000:3b:00.0"
