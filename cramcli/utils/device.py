"""The one device setup every stage uses: the device from `--device` / `--gpu`, fast maths on it (TF32 on CUDA,
the allocator setting on a CPU), and the one precision rule pretraining and GLUE share (`resolve_precision`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cramcli.utils.cpu import keep_freed_memory
from cramcli.utils.errors import UsageError


def resolve_device(device: str | None, gpu: int | None) -> torch.device:
    """`--gpu N` is shorthand for `--device cuda:N`; no flag means CUDA when present, else CPU."""
    if gpu is not None:
        if device not in (None, "cuda", f"cuda:{gpu}"):
            raise UsageError(f"--gpu {gpu} conflicts with --device {device}; pass only one of them")
        device = f"cuda:{gpu}"
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: unsupported; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"--device {device}: only {count} GPU(s) visible (cuda:0..cuda:{count - 1})")
    return dev


def setup_device(device: str | None, gpu: int | None) -> torch.device:
    """Resolve `--device`/`--gpu` and switch on fast maths for it."""
    dev = resolve_device(device, gpu)
    enable_fast_math(dev)
    return dev


@dataclass(frozen=True)
class Precision:
    """What a budget's `precision` means on one device."""

    name: str
    """What runs: `bf16`, `fp16` or `fp32` (a CPU always says `fp32`)."""
    autocast: torch.dtype | None
    """The autocast dtype; None: plain fp32."""
    scaler: bool
    """fp16 only: a GradScaler keeps small gradients from flushing to zero."""


FP32 = Precision("fp32", None, False)


def resolve_precision(precision: str, device: torch.device,
                      say: Callable[[str], None] | None = None) -> Precision:
    """The one precision rule (pretraining and GLUE alike), the original's: autocast on CUDA only, so a CPU runs
    fp32 whatever the budget says; `fp16` brings a GradScaler; `bf16` on a GPU without it (T4, V100, 2080 Ti)
    falls back to fp16 with the GradScaler, as the original trains there, and `say` gets one line about it."""
    if device.type != "cuda" or precision == "fp32":
        return FP32
    if precision == "bf16" and not bf16_supported(device):
        if say is not None:
            say(f"{torch.cuda.get_device_name(device)} has no bf16: running fp16 with a loss scaler instead "
                "(as the original does on such GPUs)")
        precision = "fp16"
    return Precision(precision, torch.bfloat16 if precision == "bf16" else torch.float16, precision == "fp16")


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 on this GPU (emulated bf16 is slower than fp16, so it does not count)."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def enable_fast_math(dev: torch.device) -> None:
    """TF32 matmuls on CUDA; on a CPU, keep freed buffers in the process (see utils/cpu.py)."""
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        keep_freed_memory()


def device_name(dev: torch.device) -> str:
    """What the device is, for reports and model cards: the GPU's name, or the CPU model and its core count."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import os
    import platform

    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:  # Linux: the marketing name is only here
            model = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU {model or platform.machine()} ({os.cpu_count()} cores)".replace("  ", " ")
