"""GPU check: the `flash` attention backend (flash-attn) against `pytorch` (SDPA), in bf16, on the same weights.

Where CUDA and flash-attn exist: builds the 24-hour arch (or `--hidden/--layers/--heads`), runs unpadded and
padded batches through both backends under bf16 autocast, prints max |Δhidden| on the real tokens and the
forward time of each (median of timed repeats after a warm-up). Elsewhere it prints why it skipped and exits
with SKIPPED (3), never 0: a check that did not run must not read as passed.

    python -m bench.flash_check [--batch 128] [--seq 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

TOLERANCE = 0.1  # bf16 keeps ~3 significant digits; outputs are LayerNorm-scaled (O(1))
PASSED, FAILED, SKIPPED = 0, 1, 3
"""Exit codes; `status()` names them."""


def status(code: int) -> str:
    return {PASSED: "passed", FAILED: "failed", SKIPPED: "skipped"}.get(code, f"error (exit {code})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from cramcli.model.attention import flash_available

    if not torch.cuda.is_available():
        print("flash check: SKIPPED (no CUDA GPU on this machine); flash-attn is not checked")
        return SKIPPED
    if not flash_available():
        print("flash check: SKIPPED (flash-attn is not installed: pip install -e '.[flash]'); flash-attn is not checked")
        return SKIPPED

    from cramcli import budgets
    from cramcli.model import CrammedBertConfig, CrammedBertModel

    arch = budgets.load("arch", "24")
    sizes = {k: v for k, v in (("hidden_size", args.hidden), ("num_layers", args.layers),
                               ("num_heads", args.heads)) if v is not None}
    arch = arch.model_copy(update={**sizes, "max_seq_length": max(arch.max_seq_length, args.seq)})
    dev = torch.device("cuda")
    torch.manual_seed(0)
    sdpa = CrammedBertModel(CrammedBertConfig.from_arch(arch, attention="pytorch")).to(dev).eval()
    flash = CrammedBertModel(CrammedBertConfig.from_arch(arch, attention="flash")).to(dev).eval()
    flash.load_state_dict(sdpa.state_dict())

    ids = torch.randint(7, arch.vocab_size, (args.batch, args.seq), device=dev)
    mask = torch.ones_like(ids)
    mask[args.batch // 2:, args.seq // 2:] = 0  # half the rows half padded: exercises the varlen path
    ok = True
    print(f"flash check on {torch.cuda.get_device_name(dev)}: {arch.num_layers}×{arch.hidden_size}, "
          f"{arch.num_heads} heads, batch {args.batch}×{args.seq}, bf16 autocast")
    for label, m in (("unpadded", None), ("padded", mask)):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            a = sdpa(ids, m).last_hidden_state.float()
            b = flash(ids, m).last_hidden_state.float()
        real = torch.ones_like(ids, dtype=torch.bool) if m is None else m.bool()
        delta = (a[real] - b[real]).abs().max().item()
        times = {name: _time(model, ids, m, args.repeats) for name, model in (("sdpa", sdpa), ("flash", flash))}
        ok &= delta <= TOLERANCE
        print(f"  {label:9s} max |Δhidden| = {delta:.4f} (≤ {TOLERANCE})  forward: sdpa {times['sdpa'] * 1e3:.2f} ms,"
              f" flash {times['flash'] * 1e3:.2f} ms, flash/sdpa = {times['flash'] / times['sdpa']:.2f}")
    print("flash check: " + ("PASS" if ok else "FAIL"))
    return PASSED if ok else FAILED


def _time(model: object, ids: object, mask: object, repeats: int) -> float:
    import torch

    samples = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(repeats + 3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(ids, mask)  # type: ignore[operator]
            torch.cuda.synchronize()
            if i >= 3:
                samples.append(time.perf_counter() - start)
    return statistics.median(samples)


if __name__ == "__main__":
    sys.exit(main())
