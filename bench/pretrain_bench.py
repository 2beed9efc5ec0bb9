"""Pretraining throughput and memory on CPU: cram's model and training step vs the eager reference.

Both sides train the same small arch (the demo budget's: 2 layers, hidden 128, seq 64) on the same random
rows with the same math per micro-step: v1 masking, forward with sparse prediction, backward, clipping and an
AdamW step. Each side runs in its own child process (spawned by this one), so peak RSS is the child's
ru_maxrss; tokens/s counts input tokens over the timed steps after a warm-up. Reported as cram ÷ reference.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

WARMUP, STEPS, BATCH = 3, 15, 32


def _train(side: str, queue: mp.Queue) -> None:
    import torch

    from cramcli import budgets
    from cramcli.train.masking import mask_tokens
    from cramcli.train.optim import make_optimizer

    torch.manual_seed(0)
    arch, train = budgets.load("arch", "demo"), budgets.load("train", "demo")
    if side == "cram":
        from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM

        model = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(arch))
    else:
        from bench.reference_model import ReferenceMLM

        model = ReferenceMLM(arch)
    model.eval()  # pretraining runs without dropout (recipe §2.6)
    optimizer = make_optimizer(model, train.optimizer, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, arch.vocab_size, (BATCH, arch.max_seq_length), generator=gen)
    start = 0.0
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        inputs, labels = mask_tokens(ids, train.masking, mask_id=6, vocab_size=arch.vocab_size,
                                     special_ids=tuple(range(7)), generator=gen)
        model(inputs, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    queue.put({"tokens_per_s": STEPS * ids.numel() / seconds,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _measure(side: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train, args=(side, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join()
    return result


def main() -> int:
    try:
        from cramcli.model import CrammedBertForMaskedLM  # noqa: F401
    except ImportError:
        print("pretrain bench: skipped (cramcli.model is not available)")
        return 0
    ref, cram = _measure("reference"), _measure("cram")
    print("pretrain bench (CPU, demo arch, batch 32×64):")
    for name, row in (("reference", ref), ("cram", cram)):
        print(f"  {name:9s}  {row['tokens_per_s']:10.0f} tokens/s  peak RSS {row['peak_rss_mb']:7.1f} MB")
    print(f"  ratio cram/reference: tokens/s {cram['tokens_per_s'] / ref['tokens_per_s']:.2f}×, "
          f"peak RSS {cram['peak_rss_mb'] / ref['peak_rss_mb']:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
