"""Why torch.compile's float32 row-norm forward runs at the copy roof and
lamina's at ~0.965 of it (layer/RMS norm 32768x4096, tune_row_norm.py): prints
Inductor's generated Triton source for the layer-norm forward (as in
training: the input requires grad), then times lamina's forward kernel next to
copies of it that differ in one memory hint each (load eviction policy, store
cache modifier).

    PYTHONPATH=src python scripts/probe_cache_hints.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
import triton
import triton.language as tl

from lamina.kernels import normalization as N
from sweep import bench, copy_gbs, gbs, print_header

M, W = 32768, 4096


@triton.jit
def _ln_forward_hinted(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, M, N, eps,
                       ROWS: tl.constexpr, BLOCK: tl.constexpr, LOAD_EVICT: tl.constexpr, STORE_CACHE: tl.constexpr):
    # lamina's _row_norm_forward_kernel (layer norm, weight and bias), with hints
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    x = tl.load(x_ptr + rows[:, None] * N + cols[None, :], mask=mask, other=0.0, eviction_policy=LOAD_EVICT)
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
    tl.store(mean_ptr + rows, mean, mask=rows < M)
    tl.store(rstd_ptr + rows, rstd, mask=rows < M)
    y = xc * rstd[:, None] * tl.load(w_ptr + cols)[None, :] + tl.load(b_ptr + cols)[None, :]
    tl.store(y_ptr + rows[:, None] * N + cols[None, :], y, mask=mask, cache_modifier=STORE_CACHE)


def inductor_source() -> None:
    from torch._inductor.utils import run_and_get_code

    x = torch.randn(M, W, device="cuda", requires_grad=True)
    w = torch.ones(W, device="cuda", requires_grad=True)
    b = torch.zeros(W, device="cuda", requires_grad=True)
    _, sources = run_and_get_code(torch.compile(lambda t: TF.layer_norm(t, (W,), w, b)), x)
    for text in sources:
        start = text.find("@triton.jit")
        end = text.find("\'\'\'", start)
        print(text[start:end if end > 0 else start + 3000], flush=True)


def main() -> None:
    print_header()
    inductor_source()
    x = torch.randn(M, W, device="cuda")
    w, b = torch.randn(W, device="cuda"), torch.randn(W, device="cuda")
    y = torch.empty_like(x)
    mean, rstd = torch.empty(M, device="cuda"), torch.empty(M, device="cuda")
    nbytes = 2 * x.numel() * 4
    xg = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    compiled = torch.compile(lambda t: TF.layer_norm(t, (W,), wg, bg))
    compiled(xg)
    line = [f"copy {copy_gbs(x)}", f"compile fwd {gbs(nbytes, bench(lambda: compiled(xg)))}",
            f"lamina fwd {gbs(nbytes, bench(lambda: N.row_norm_forward(x, (W,), w, b, 1e-5, rms=False)))}"]
    for rows, warps in ((4, 16), (1, 8)):
        for evict in ("", "evict_first", "evict_last"):
            for cache in ("", ".cs", ".cg"):
                def launch():
                    _ln_forward_hinted[(M // rows,)](x, y, w, b, mean, rstd, M, W, 1e-5, ROWS=rows, BLOCK=W,
                                                     LOAD_EVICT=evict, STORE_CACHE=cache, num_warps=warps)
                launch()
                line.append(f"{rows}/{warps} {evict or '-'} {cache or '-'} {gbs(nbytes, bench(launch))}")
    torch.testing.assert_close(y, TF.layer_norm(x, (W,), w, b), rtol=1e-4, atol=1e-4)
    print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
