"""Does a cell's call wait for the GPU? Queue ~50 ms of GPU sleep, then time
one call on the host: a call that returns in microseconds never waits; one
that takes ~50 ms synchronizes somewhere (its forward, or its backward on
autograd's device thread). torch's own synchronizing calls are also
reported by torch.cuda.set_sync_debug_mode("warn").

    python scripts/probe_sync.py --cells batch_norm2d-32x64x56x56-bf16-contig-fwdbwd
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from probe_cells import cell_inputs, cells_by_id, implementations, make_step  # noqa: E402



def call_ms_behind_sleep(step, cycles=100_000_000):
    step()
    torch.cuda.synchronize()
    torch.cuda._sleep(cycles)
    t = time.perf_counter()
    step()
    ms = (time.perf_counter() - t) * 1e3
    torch.cuda.synchronize()
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", required=True)
    args = ap.parse_args()
    torch.cuda.synchronize()
    t = time.perf_counter()
    torch.cuda._sleep(100_000_000)
    torch.cuda.synchronize()
    print(f"the GPU sleep alone: {(time.perf_counter() - t) * 1e3:.1f} ms", flush=True)
    for cell in cells_by_id(args.cells):
        x0, p0 = cell_inputs(cell)
        for who, fn in implementations(cell):
            step = make_step(fn, x0, p0, cell)
            ms = call_ms_behind_sleep(step)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    step()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = sorted({str(w.message)[:80] for w in caught})
            print(f"{cell.id:50s} {who:6s} call behind the sleep: {ms:8.2f} ms; torch syncs: {syncs}", flush=True)
        del x0, p0
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
