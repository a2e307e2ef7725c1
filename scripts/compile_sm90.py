"""Compile the activation, fused, row-norm and pooling kernels for sm_90
on a machine without a GPU (Triton's own compiler and bundled ptxas), to
catch what the interpreter forgives (constexpr branches, return types,
pointer arithmetic, int64 offsets) before the GPU run:

    python scripts/compile_sm90.py

Prints OK / ERR per kernel and specialization; exits 1 on any error."""

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # compile, do not interpret (lamina would switch the interpreter on)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import inspect  # noqa: E402

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import lamina.kernels.activation as A  # noqa: E402
import lamina.kernels.fused as K  # noqa: E402
import lamina.kernels.normalization as N  # noqa: E402
import lamina.kernels.pooling as PL  # noqa: E402

target = GPUTarget("cuda", 90, 32)
failures = []


def check(kernel, types, consts):
    fn = kernel
    params = inspect.signature(fn.fn).parameters
    names = list(params)
    # constexpr parameters left out take their defaults, as a launch does
    consts = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty
              and "constexpr" in str(p.annotation)} | consts
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        else:
            sig[n] = types.get(n, "i32")
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
    try:
        triton.compile(src, target=target)
        print("OK ", fn.fn.__name__, consts)
    except Exception as e:
        failures.append(fn.fn.__name__)
        print("ERR", fn.fn.__name__, consts, type(e).__name__, str(e)[:1500])


P = "*fp32"; B = "*bf16"; F = "fp32"
for act in range(8):  # every activation id, bfloat16 (7: GELU's erfc form)
    check(A._activation_forward_kernel, dict(x_ptr=B, y_ptr=B, mask_ptr="*u8", param=F), dict(ACT=act, WRITE_MASK=act == 1, BLOCK=2048))
    check(A._activation_backward_kernel, dict(dy_ptr=B, saved_ptr=B, dx_ptr=B, param=F), dict(ACT=act, BLOCK=2048))
for act in [-1, 0, 1, 4, 5, 6, 7]:  # 7: GELU's erfc form (16-bit tensors)
    check(K._bn_act_forward_kernel, dict(x_ptr=B, y_ptr=B, mean_ptr=P, rstd_ptr=P, w_ptr=P, b_ptr=P, param=F),
          dict(CHANNELS_ON_ROWS=True, HAS_W=True, HAS_B=True, ACT=act, BLOCK_R=8, BLOCK_K=512))
for fo, act in [(False, 6), (True, 1), (True, -1)]:
    for rows in (True, False):
        check(K._bn_act_backward_reduce_kernel, dict(dy_ptr=B, x_ptr=B, mean_ptr=P, rstd_ptr=P, w_ptr=P, b_ptr=P, param=F, part_ptr=P, plane="i64"),
              dict(CHANNELS_ON_ROWS=rows, HAS_W=True, HAS_B=True, ACT=act, FROM_OUTPUT=fo, BLOCK_R=64, BLOCK_K=64))
        check(K._bn_act_backward_input_kernel, dict(dy_ptr=B, x_ptr=B, dx_ptr=B, mean_ptr=P, rstd_ptr=P, w_ptr=P, b_ptr=P, param=F, sum_dz_ptr=P, sum_dz_xhat_ptr=P, inv_m=F),
              dict(CHANNELS_ON_ROWS=rows, HAS_W=True, HAS_B=True, ACT=act, FROM_OUTPUT=fo, TRAINING=True, BLOCK_R=64, BLOCK_K=64))
for act in (-1, 0, 6):  # plain group norm (IDENTITY), relu, silu: the kernels both share
    gn = dict(HAS_WEIGHT=True, HAS_BIAS=act != -1, ACT=act, C_BLOCK=16, S_BLOCK=256)
    check(N._group_norm_apply_kernel, dict(x_ptr=B, y_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, act_param=F), gn)
    check(N._group_norm_forward_whole_kernel, dict(x_ptr=B, y_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, inv_count=F, eps=F,
                                                   var_ptr=P, act_param=F), dict(gn, STORE_VAR=False))
    check(N._group_norm_backward_partial_kernel, dict(dy_ptr=B, x_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, act_param=F,
                                                      group_part_ptr=P, channel_part_ptr=P), gn)
    check(N._group_norm_backward_dx_kernel, dict(dy_ptr=B, x_ptr=B, dx_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, act_param=F,
                                                 group_sums_ptr=P, inv_count=F), gn)
for rms in (False, True):
    # prenorm (s stored, saved, read back) and not (s never stored: backward rebuilds it from x and residual),
    # with and without dropout (the mask drawn once for s and dx), the pipelined loop and the plain one
    for prenorm in (True, False):
        for dropout in (True, False):
            check(K._add_norm_forward_kernel, dict(x_ptr=B, res_ptr=B, s_ptr=B, y_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, seed_ptr="*i64", offset="i64", p=F, multiplier=F, eps=F),
                  dict(RMS=rms, HAS_W=True, HAS_B=not rms, DROPOUT=dropout, ROWS=4, BLOCK=1024, STORE_S=prenorm))
            for prefetch in (True, False):
                check(K._add_norm_backward_kernel, dict(dy_ptr=B, dsx_ptr=B, v_ptr=B, res_ptr=B, w_ptr=B, mean_ptr=P, rstd_ptr=P, ds_ptr=B, dx_ptr=B, part_ptr=P, seed_ptr="*i64", offset="i64", p=F, multiplier=F),
                      dict(RMS=rms, HAS_W=True, HAS_B=not rms, HAS_DS=prenorm, DROPOUT=dropout, ROWS=4, BLOCK=1024, PREFETCH=prefetch,
                           RECOMPUTE=not prenorm))
for act in [0, 4, 5, 6, 7, -1]:
    check(K._bias_act_forward_kernel, dict(x_ptr=B, b_ptr=B, y_ptr=B), dict(ACT=act, ROWS=4, BLOCK_N=1024))
    check(K._bias_act_backward_kernel, dict(dy_ptr=B, x_ptr=B, b_ptr=B, dx_ptr=B, part_ptr=P), dict(ACT=act, ROWS=4, BLOCK_N=1024))
for has_weight in (False, True):  # group norm's one-tile backward (shares _group_dz_xhat)
    for act in (-1, 6):  # plain, and GroupNormAct's silu
        check(N._group_norm_backward_whole_kernel, dict(dy_ptr=B, x_ptr=B, dx_ptr=B, w_ptr=B, mean_ptr=P, rstd_ptr=P,
                                                        channel_part_ptr=P, inv_count=F, b_ptr=B, act_param=F),
              dict(HAS_WEIGHT=has_weight, C_BLOCK=16, S_BLOCK=256, HAS_BIAS=has_weight, ACT=act))
for rms in (False, True):  # the plain row norms (their per-row divisions are _div_rn); N=1 as Triton specializes it
    for n_const in ({}, {"N": 1}):
        flags = dict(RMS=rms, HAS_WEIGHT=True, HAS_BIAS=not rms, **n_const)
        check(N._row_norm_forward_kernel, dict(x_ptr=B, y_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, eps=F),
              dict(flags, ROWS=4, BLOCK=1024))
        check(N._row_norm_forward_wide_kernel, dict(x_ptr=B, y_ptr=B, w_ptr=B, b_ptr=B, mean_ptr=P, rstd_ptr=P, eps=F),
              dict(flags, BLOCK=4096))
        for prefetch in (False, True):  # the software-pipelined loop and the plain one
            check(N._row_norm_backward_kernel, dict(dy_ptr=B, x_ptr=B, w_ptr=B, mean_ptr=P, rstd_ptr=P, dx_ptr=B, part_ptr=P),
                  dict(flags, ROWS=4, BLOCK=1024, PREFETCH=prefetch))
        check(N._row_norm_backward_wide_kernel, dict(dy_ptr=B, x_ptr=B, w_ptr=B, mean_ptr=P, rstd_ptr=P, dx_ptr=B, part_ptr=P),
              dict(flags, BLOCK=4096))
for cl in (False, True):  # the pooling kernels' 2-D tiles (_tile), 32- and 64-bit offsets
    for i64 in (False, True):
        for mx in (True, False):
            geo = dict(KH=3, KW=3, SH=2, SW=2, PH=1, PW=1, DH=1, DW=1, IS_MAX=mx, COUNT_INCLUDE_PAD=True,
                       HAS_DIVISOR=False, CHANNELS_LAST=cl, INDEX64=i64, BLOCK_A=16, BLOCK_B=64)
            check(PL._pool2d_forward_kernel, dict(x_ptr=P, y_ptr=P, pos_ptr="*u8", idx_ptr="*i64", DIVISOR=F),
                  dict(geo, WRITE_INDICES=mx, PAIRS=False))
            if not cl:  # stride-2 columns read as contiguous row segments (sxw == 1, as Triton specializes it)
                for kw in (2, 3):
                    check(PL._pool2d_forward_kernel, dict(x_ptr=B, y_ptr=B, pos_ptr="*u8", idx_ptr="*i64", DIVISOR=F),
                          dict(geo, KW=kw, WRITE_INDICES=False, PAIRS=True, sxw=1))
            for non_overlap in (True, False):
                check(PL._pool2d_backward_kernel, dict(dy_ptr=P, pos_ptr="*u8", dx_ptr=P, DIVISOR=F),
                      dict(geo, NON_OVERLAP=non_overlap))
            tiles = dict(IS_MAX=mx, CHANNELS_LAST=cl, INDEX64=i64, BLOCK_A=16, BLOCK_B=64)
            check(PL._adaptive_pool2d_forward_kernel, dict(x_ptr=P, y_ptr=P, pos_ptr="*u8", idx_ptr="*i64"),
                  dict(tiles, KMAX_H=3, KMAX_W=3, WRITE_INDICES=mx))
            check(PL._adaptive_pool2d_backward_kernel, dict(dy_ptr=P, pos_ptr="*u8", dx_ptr=P),
                  dict(tiles, COVER_H=2, COVER_W=2))
        check(PL._global_avg_pool_backward_kernel, dict(dy_ptr=P, dx_ptr=P),
              dict(CHANNELS_LAST=cl, INDEX64=i64, BLOCK_A=16, BLOCK_B=64))
    for chunks in (4, 12):  # unrolled, and the loop of large planes
        check(PL._global_avg_pool_cl_kernel, dict(x_ptr=P, y_ptr=P), dict(BLOCK_HW=16, BLOCK_C=512, CHUNKS=chunks, INDEX64=i64))
check(K._dropout_add_kernel, dict(x_ptr=B, r_ptr=B, y_ptr=B, p=F, multiplier=F, seed_ptr="*i64", offset="i64"), dict(GROUP=1024))
for act, affine in ((-1, True), (-1, False), (6, True), (0, False)):  # group norm's persistent kernels, plain and GroupNormAct
    flags = dict(HAS_WEIGHT=affine, HAS_BIAS=affine, ACT=act, CB=1, SB=4096)
    check(N._gn_persistent_forward_kernel, dict(x_ptr=B, y_ptr=B, w_ptr=P, b_ptr=P, mean_ptr=P, rstd_ptr=P, eps=F, act_param=F), flags)
    check(N._gn_persistent_backward_kernel, dict(dy_ptr=B, x_ptr=B, dx_ptr=B, w_ptr=P, b_ptr=P, mean_ptr=P, rstd_ptr=P,
                                                 act_param=F, channel_part_ptr=P), flags)

sys.exit(1 if failures else 0)
