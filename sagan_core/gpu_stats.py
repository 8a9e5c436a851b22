"""What a GPU did over a log window, as train metrics: memory peaks from torch's allocator, and
utilisation and power from NVML (nvidia-ml-py). On a CPU run there are none: absent, not zero, so
a curve of 0 GiB never reads as "no memory used"."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)
GIB = 2**30
_nvml_handles: dict[int, object] = {}  # CUDA index -> NVML handle; None: NVML unavailable
_nvml_failed = False


def _nvml_handle(index: int) -> object | None:
    """The NVML handle of CUDA device `index`, by PCI bus id (CUDA_VISIBLE_DEVICES renumbers the
    CUDA devices, NVML's indices do not move), or None when NVML is missing or fails."""
    global _nvml_failed
    if _nvml_failed:
        return None
    if index not in _nvml_handles:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_handles[index] = pynvml.nvmlDeviceGetHandleByPciBusId(pci_address(index))
        except Exception as e:  # no driver library, an old driver, no such attribute
            log.info("GPU utilisation and power not reported: NVML unavailable (%s)", e)
            _nvml_failed = True
            return None
    return _nvml_handles[index]


def pci_address(index: int) -> str:
    """NVML's "domain:bus:device.function" of CUDA device `index`: torch gives the three numbers
    as integers (passing its bus number alone finds nothing)."""
    props = torch.cuda.get_device_properties(index)
    domain = getattr(props, "pci_domain_id", 0)
    return f"{domain:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


def gpu_metrics(device: torch.device) -> dict[str, float]:
    """`gpu_mem_gib` and `gpu_mem_reserved_gib` (peaks since the last call), `gpu_util` (0..1,
    NVML's last sample period) and `gpu_power_w`; {} on a device that is not CUDA."""
    if device.type != "cuda":
        return {}
    index = device.index if device.index is not None else torch.cuda.current_device()
    out = {
        "gpu_mem_gib": torch.cuda.max_memory_allocated(index) / GIB,
        "gpu_mem_reserved_gib": torch.cuda.max_memory_reserved(index) / GIB,
    }
    torch.cuda.reset_peak_memory_stats(index)  # the next window's peak is its own
    handle = _nvml_handle(index)
    if handle is not None:
        try:
            import pynvml

            out["gpu_util"] = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
            out["gpu_power_w"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts
        except Exception as e:  # a GPU without a power sensor, a driver hiccup: memory still counts
            log.debug("NVML read failed: %s", e)
    return out
