"""FLOPs per training token of crammed BERT, and the peak dense throughput of known GPUs, for MFU.

MFU = achieved model FLOP/s ÷ the GPU's peak. Model FLOPs count only the matmuls the model needs (no
recomputation, no attention-kernel overheads), as in the PaLM paper's appendix B.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from cramcli.budgets import ArchBudget

# Peak dense (not sparse) bf16/fp16 tensor-core TFLOP/s per GPU, from the vendors' data sheets. Matched by
# substring of torch.cuda.get_device_name(); the first match wins, so more specific names come first.
GPU_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A6000 Ada", 364.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("A40", 150.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A4000", 77.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("2080 Ti", 54.0),
    ("V100", 125.0),
    ("T4", 65.0),
]


def gpu_peak_tflops(device_name: str) -> float | None:
    """Peak bf16 TFLOP/s of a GPU by its name, or None when unknown (then MFU is not reported)."""
    for key, tflops in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def device_peak_tflops(device: torch.device) -> float | None:
    """The peak of a CUDA device from the table; None on a CPU or for an unknown GPU."""
    if device.type != "cuda":
        return None
    import torch

    return gpu_peak_tflops(torch.cuda.get_device_name(device))


def arch_flops_per_token(arch: ArchBudget, seq_length: int, predicted_fraction: float) -> float:
    """`training_flops_per_token` for an arch budget (v1 has the prediction head, v2 does not)."""
    return training_flops_per_token(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size, seq_length=seq_length, predicted_fraction=predicted_fraction,
        prediction_head=arch.layout == "v1", glu=arch.glu)


def training_flops_per_token(
    *,
    num_layers: int,
    hidden_size: int,
    intermediate_size: int,
    vocab_size: int,
    seq_length: int,
    predicted_fraction: float,
    prediction_head: bool,
    glu: bool = True,
) -> float:
    """Forward + backward matmul FLOPs per input token (×3 of the forward: one for forward, two for backward).

    Per layer and token: fused QKV (2·3h²), attention output (2·h²), gated FFN in (2·h·i) and out (2·(i/2)·h;
    2·i·h without the gate),
    scores QKᵀ and A·V (2·2·s·h). With sparse prediction only `predicted_fraction` of the tokens pass through
    the prediction head (2·h²) and the tied decoder (2·h·V)."""
    h, i = hidden_size, intermediate_size
    per_layer = 2 * 3 * h * h + 2 * h * h + 2 * h * i + 2 * (i // 2 if glu else i) * h + 2 * 2 * seq_length * h
    head = (2 * h * h if prediction_head else 0) + 2 * h * vocab_size
    forward = num_layers * per_layer + predicted_fraction * head
    return 3.0 * forward
