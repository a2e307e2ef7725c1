"""The memory table of issue #4: what each layer keeps for backward, lamina
against torch, and the three claims checked on the numbers.

For every standard case of lamina.bench.memory (dropout, max-pool 3x3/s2/p1,
relu, batch norm + relu / silu, in-place BatchNormAct2d), in float32 and
bfloat16, the bytes autograd saved, by kind (input, param, output, new: see
lamina.bench.memory), for lamina and for the same layer written with torch.
The claims:

  * dropout saves no mask: lamina's 'new' bytes are at most 8 (the seed);
  * max-pool saves at most 1 byte per output element (the window position);
  * in-place BatchNormAct2d saves no separate input: the one input-sized
    storage it keeps is the input's, now holding y, plus the statistics.

Usage:
    python scripts/memory_table.py --device cuda --out bench/results/memory
    python scripts/memory_table.py --device cpu --out /tmp/memory

Writes <out>/memory.json (device, card, torch version, date, every row and
claim) and <out>/memory.md (the table). Exit status 1 when a claim fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402

import lamina  # noqa: E402
from lamina.bench.memory import compare_standard_cases  # noqa: E402
from lamina.bench.traffic import pool_output_hw  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_SHAPE = (8, 16, 32, 32)  # compare_standard_cases' default
KINDS = ("new", "input", "output", "param", "total")
SEED_BYTES = 8  # the Philox seed, one int64
STAT_BYTES = 4  # batch statistics are float32 whatever the input's dtype


def check_claims(rows_by_layer: dict, shape: tuple, dtype: torch.dtype) -> list[dict]:
    """The three claims on one dtype's rows, each with the numbers behind it."""
    n, c, h, w = shape
    numel = math.prod(shape)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    claims = []

    drop = rows_by_layer["dropout"]["lamina"]
    claims.append({
        "claim": "dropout saves no mask",
        "ok": drop["new"] <= SEED_BYTES,
        "detail": f"lamina new {drop['new']} B (seed: {SEED_BYTES} B; a mask would be >= {numel} B); "
                  f"torch new {rows_by_layer['dropout']['torch']['new']} B",
    })

    ho, wo = pool_output_hw(h, w, 3, 2, 1)
    outputs = n * c * ho * wo
    pool = rows_by_layer["max_pool2d_3x3s2"]["lamina"]
    claims.append({
        "claim": "max-pool saves at most 1 byte per output",
        "ok": pool["new"] <= outputs and not pool["saves_input"],
        "detail": f"lamina new {pool['new']} B for {outputs} outputs ({pool['new'] / outputs:.2f} B each); "
                  f"torch new {rows_by_layer['max_pool2d_3x3s2']['torch']['new']} B",
    })

    bn = rows_by_layer["batch_norm_act_inplace"]["lamina"]
    stats = 2 * c * STAT_BYTES  # mean and inverse std per channel
    claims.append({
        "claim": "in-place BatchNormAct2d saves no separate input",
        "ok": bool(bn["input_holds_output"] and bn["input"] == numel * itemsize and bn["output"] == 0 and bn["new"] <= stats),
        "detail": f"lamina keeps the input's storage holding y ({bn['input']} B), new {bn['new']} B "
                  f"(statistics <= {stats} B), no other output; torch total {rows_by_layer['batch_norm_act_inplace']['torch']['total']} B "
                  f"against lamina's {bn['total']} B",
    })
    return claims


def card_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu {platform.processor() or platform.machine()}"


def build(device: str, dtypes: list[str], shape: tuple) -> dict:
    rows, claims = [], []
    for name in dtypes:
        dtype = DTYPES[name]
        torch.manual_seed(0)
        per_layer = {r["layer"]: r for r in compare_standard_cases(device, dtype, shape)}
        rows += [{"dtype": name, **r} for r in per_layer.values()]
        claims += [{"dtype": name, **cl} for cl in check_claims(per_layer, shape, dtype)]
    meta = {
        "device": device, "card": card_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "lamina": lamina.__version__, "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shape": list(shape),
    }
    return {"meta": meta, "rows": rows, "claims": claims, "ok": all(cl["ok"] for cl in claims)}


def to_markdown(result: dict) -> str:
    meta = result["meta"]
    shape = "x".join(map(str, meta["shape"]))
    lines = [
        "# Saved for backward: lamina against torch",
        "",
        f"{meta['card']}, device {meta['device']}, torch {meta['torch']}, lamina {meta['lamina']}, {meta['date']}; "
        f"input {shape}. Bytes autograd keeps for backward, by kind: new = exists only for backward "
        "(masks, indices, pre-activations, statistics, seeds); input / output / param = a storage the network "
        "holds anyway (lamina.bench.memory).",
        "",
        "| layer | dtype | " + " | ".join(f"lamina {k}" for k in KINDS) + " | " + " | ".join(f"torch {k}" for k in KINDS) + " |",
        "|---|---|" + "---:|" * (2 * len(KINDS)),
    ]
    for r in result["rows"]:
        cells = [f"{r[who][k]:,}" for who in ("lamina", "torch") for k in KINDS]
        lines.append(f"| {r['layer']} | {r['dtype']} | " + " | ".join(cells) + " |")
    lines += ["", "| claim | dtype | result | numbers |", "|---|---|---|---|"]
    for cl in result["claims"]:
        lines.append(f"| {cl['claim']} | {cl['dtype']} | {'PASS' if cl['ok'] else 'FAIL'} | {cl['detail']} |")
    passed = sum(cl["ok"] for cl in result["claims"])
    lines += ["", f"Claims: {passed}/{len(result['claims'])} passed."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Bytes saved for backward per layer, lamina against torch (issue #4's memory table).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu (default: cuda when present)")
    p.add_argument("--out", required=True, help="directory for memory.json and memory.md")
    p.add_argument("--dtype", default="float32,bfloat16", help="comma-separated: float32, bfloat16 (default both)")
    p.add_argument("--shape", default="x".join(map(str, DEFAULT_SHAPE)), help="N x C x H x W input (default 8x16x32x32)")
    args = p.parse_args(argv)
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if any(d not in DTYPES for d in dtypes):
        p.error(f"--dtype: expected float32 and/or bfloat16, got {args.dtype!r}")
    try:
        shape = tuple(int(v) for v in args.shape.split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4:
        p.error(f"--shape must be NxCxHxW, got {args.shape!r}")
    result = build(args.device, dtypes, shape)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "memory.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    text = to_markdown(result)
    with open(os.path.join(args.out, "memory.md"), "w") as f:
        f.write(text)
    print(text, end="")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
