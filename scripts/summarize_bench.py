"""The acceptance counts of a benchmark run (bench.json), one rule for every run:

  vs anchors   cells at least as fast as the best of eager, torch.compile, Liger
  fractions    #3: activations, dropout and the row / group / instance norms
               forward >= 0.90 and forward+backward >= 0.85 of copy; batch
               norm forward+backward >= 0.55; pooling forward+backward >= 0.80;
               #4: fused forward+backward >= 0.85 (batch_norm+relu >= 0.55).
               Small shapes are left out (their target is eager's wall time).
  small        small-shape cells no slower than eager

    python scripts/summarize_bench.py bench/results/<run>/bench.json [...]
"""

from __future__ import annotations

import json
import sys

FRACTION_FAMILIES = ("activation", "dropout", "normalization", "fused", "pooling")


def target(cell: dict) -> float | None:
    """The copy fraction this cell must reach, or None (no fraction target)."""
    if cell["small"]:
        return None
    op, mode, family = cell["op"], cell["mode"], cell["family"]
    if op in ("batch_norm", "batch_norm_relu"):
        return 0.55 if mode == "fwdbwd" else None
    if family == "pooling":
        return 0.80 if mode == "fwdbwd" else None
    if family_of(cell) == "fused":
        return 0.85 if mode == "fwdbwd" else None
    return 0.90 if mode == "fwd" else 0.85


def family_of(cell: dict) -> str:
    """batch_norm+relu and group_norm+silu sit with the norms in the matrix
    but are #4's fused layers (BatchNormAct2d, GroupNormAct)."""
    return "fused" if cell["op"] in ("batch_norm_relu", "group_norm_silu") else cell["family"]


def summarize(path: str) -> str:
    data = json.load(open(path))
    cells = [c for c in data["cells"] if c.get("lamina") and c["lamina"].get("ms")]
    beat = [c for c in cells if all(s is None or s >= 1.0 for s in c["speedup"].values())
            and any(s is not None for s in c["speedup"].values())]
    lines = [f"{path}: {len(beat)} of {len(data['cells'])} cells at least as fast as the best anchor"]
    for family in FRACTION_FAMILIES:
        mine = [c for c in cells if family_of(c) == family and target(c) is not None]
        met = [c for c in mine if c["lamina"]["frac"] >= target(c)]
        lines.append(f"  fraction targets, {family}: {len(met)}/{len(mine)}")
    small = [c for c in cells if c["small"] and c["mode"] == "fwdbwd"]
    lines.append(f"  small shapes fwd+bwd no slower than eager: "
                 f"{sum(1 for c in small if (c['speedup'].get('eager') or 0) >= 1.0)}/{len(small)}")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summarize(p))
