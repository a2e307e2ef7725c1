"""Why torch.compile's float32 row-norm forward runs at the copy roof and
lamina's at ~0.965 of it (layer/RMS norm 32768x4096, tune_row_norm.py): prints
Inductor's generated Triton source for the layer-norm forward (as in
training: the input requires grad), then times lamina's forward kernel next to
copies of it that differ in one memory hint each (load eviction policy, store
cache modifier). Then the two other float32 forwards a few percent below
torch.compile in the matrix, PReLU (64x64x128x128, a slope a row) and bias +
erf-GELU (32768x4096, a bias a column), as lamina's kernels with the load
hint and the warps varied.

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


@triton.jit
def _rows_hinted(x_ptr, v_ptr, y_ptr, R, K, BIAS_GELU: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                 LOAD_EVICT: tl.constexpr):
    # lamina's _prelu_forward_kernel (a slope a row) or _bias_act_forward_kernel (bias a column, erf-GELU)
    n_k = tl.cdiv(K, BLOCK_K)
    rows = (tl.program_id(0) // n_k) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = (tl.program_id(0) % n_k) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    x = tl.load(x_ptr + offs, eviction_policy=LOAD_EVICT)
    if BIAS_GELU:
        z = x + tl.load(v_ptr + cols)[None, :]
        y = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    else:
        y = tl.where(x > 0, x, tl.load(v_ptr + rows % 64)[:, None] * x)
    tl.store(y_ptr + offs, y)


def rows_variants() -> None:
    for name, shape, bias_gelu in (("prelu", (64, 64, 128 * 128), False), ("bias+gelu", (32768, 1, 4096), True)):
        x = torch.randn(shape, device="cuda")
        v = torch.rand(shape[2] if bias_gelu else shape[1], device="cuda")
        y = torch.empty_like(x)
        r, k = shape[0] * shape[1], shape[2]
        if bias_gelu:
            fn = torch.compile(lambda t: TF.gelu(t + v))
        else:
            fn = torch.compile(lambda t: TF.prelu(t, v))
        fn(x)
        nbytes = 2 * x.numel() * 4
        line = [f"{name}: compile fwd {gbs(nbytes, bench(lambda: fn(x)))}"]
        for block_r, block_k in ((1, 1024), (1, 4096), (4, 1024)):
            for warps in (4, 8):
                for evict in ("", "evict_last"):
                    def launch():
                        _rows_hinted[(r // block_r * (k // block_k),)](x, v, y, r, k, BIAS_GELU=bias_gelu,
                                                                       BLOCK_R=block_r, BLOCK_K=block_k,
                                                                       LOAD_EVICT=evict, num_warps=warps)
                    launch()
                    line.append(f"{block_r}x{block_k}/{warps} {evict or '-'} {gbs(nbytes, bench(launch))}")
        print(" | ".join(line), flush=True)


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
    rows_variants()


if __name__ == "__main__":
    main()
