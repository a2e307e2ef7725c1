"""The 16-bit activation forms on the card: each activation's kernel with its
float32 form and its 16-bit form (kernels/activation.py: TANH_16BIT,
SWISH_16BIT, GELU_TANH_16BIT, GELU_ERFC), forward and backward, bfloat16 and
float16 at 2**26 elements, next to torch eager and torch.compile and a copy.
Then the float32 erf-GELU forward (libdevice's erff, the one float32 form
below eager in the matrix) at a few elements-a-thread shapes. GB/s of the
textbook bytes (forward 2n, backward 3n), do_bench median.

    PYTHONPATH=src python scripts/probe_activation_forms.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from lamina.kernels import activation as K
from lamina.kernels.launch import cdiv
from sweep import bench, copy_gbs, gbs, print_header

N = 2**26
# name -> (float32 form, 16-bit form, param, torch function)
FORMS = {
    "silu": (K.SWISH, K.SWISH_16BIT, 1.0, TF.silu),
    "gelu_tanh": (K.GELU_TANH, K.GELU_TANH_16BIT, 0.0, lambda t: TF.gelu(t, approximate="tanh")),
    "tanh": (K.TANH, K.TANH_16BIT, 0.0, torch.tanh),
    "gelu": (K.GELU, K.GELU_ERFC, 0.0, TF.gelu),
}
# (elements a program, warps) for the float32 GELU forward; the first is the default
FP32_SHAPES = ((1024, 8), (2048, 8), (1024, 4), (2048, 4))


def main() -> None:
    print_header()
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(N, device="cuda", dtype=dtype)
        dy = torch.randn_like(x)
        size = N * x.element_size()
        print(f"{dtype}: copy {copy_gbs(x)}", flush=True)
        for name, (wide, short, param, fn) in FORMS.items():
            compiled = torch.compile(fn)
            compiled(x)
            line = [f"  {name}: eager fwd {gbs(2 * size, bench(lambda: fn(x)))}",
                    f"compile fwd {gbs(2 * size, bench(lambda: compiled(x)))}"]
            for label, act in (("float32 form", wide), ("16-bit form", short)):
                saved = K.activation_forward(x, act, param)
                fwd = bench(lambda: K.activation_forward(x, act, param))
                # (tanh's backward reads y, the others x)
                bwd = bench(lambda: K.activation_backward(dy, saved if name == "tanh" else x, act, param))
                line.append(f"{label} fwd {gbs(2 * size, fwd)} bwd {gbs(3 * size, bwd)}")
            print(" | ".join(line), flush=True)
    fp32_gelu_shapes()


def fp32_gelu_shapes() -> None:
    x = torch.randn(N, device="cuda")
    size = N * x.element_size()
    compiled = torch.compile(TF.gelu)
    compiled(x)
    line = [f"float32 gelu: copy {copy_gbs(x)}", f"eager fwd {gbs(2 * size, bench(lambda: TF.gelu(x)))}",
            f"compile fwd {gbs(2 * size, bench(lambda: compiled(x)))}"]
    y = torch.empty_like(x)
    for block, warps in FP32_SHAPES:
        def launch():
            K._activation_forward_kernel[(cdiv(N, block),)](
                x, y, x, N, 0.0, ACT=K.GELU.value, WRITE_MASK=False, BLOCK=block, num_warps=warps)
        launch()
        torch.testing.assert_close(y, TF.gelu(x))
        line.append(f"{block}/{warps} warps {gbs(2 * size, bench(launch))}")
    print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
