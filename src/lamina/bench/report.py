"""Results: assembled from the harness's raw record stream into one JSON, a
printed table and a PNG chart (fraction of copy bandwidth per cell, lamina
against its anchors). Pure Python plus matplotlib; no torch, no GPU.
"""

from __future__ import annotations

import json
import math
import os

from . import traffic
from .shapes import SHORT_DTYPE, SHORT_LAYOUT, Cell

IMPLS = ("lamina", "eager", "compile", "liger")
ANCHORS = ("eager", "compile", "liger")
COLORS = {"lamina": "#d62728", "eager": "#7f7f7f", "compile": "#1f77b4", "liger": "#2ca02c"}


# --- assembling ------------------------------------------------------------------

def _timing(ms, nbytes: int, copy: float | None) -> dict:
    out = {"ms": ms, "gbps": traffic.gbps(nbytes, ms)}
    out["frac"] = out["gbps"] / copy if copy else None
    return out


def assemble(cells: list[Cell], records: list[dict], copy: float | None, item_of: dict | None = None) -> list[dict]:
    """One dict per cell with every number: ms, GB/s and fraction of copy for
    lamina and each anchor, lamina's speedup over each, and whether lamina's
    values matched eager's. ``item_of`` maps a cell id to the ids of the items
    that time it, so an item that failed as a whole marks its cells."""
    by_cell: dict[str, dict] = {}
    item_errors: dict[str, str] = {}
    done: set = set()
    for rec in records:
        kind = rec.get("type")
        if kind == "cell":
            by_cell.setdefault(rec["cell"], {}).update({k: v for k, v in rec.items() if k not in ("type", "item", "cell")})
        elif kind == "compile":
            entry = {k: v for k, v in rec.items() if k not in ("type", "item", "cell")}
            by_cell.setdefault(rec["cell"], {}).setdefault("impls", {})["compile"] = entry
        elif kind == "done":
            done.add(rec["item"])
            if rec.get("error"):
                item_errors[rec["item"]] = rec["error"]
    out = []
    for cell in cells:
        nbytes = traffic.cell_bytes(cell.op, cell.shape, cell.kw, cell.dtype, cell.mode)
        row = {
            "id": cell.id, "label": cell.label, "op": cell.op, "family": cell.family, "shape": list(cell.shape),
            "dtype": cell.dtype, "layout": cell.layout, "mode": cell.mode, "kwargs": cell.kw, "small": cell.small,
            "bytes": nbytes,
        }
        raw = by_cell.get(cell.id, {})
        impls = raw.get("impls", {})
        for name in IMPLS:
            r = impls.get(name)
            if r is None:
                row[name] = None
            elif r.get("ms") is not None:
                row[name] = {**_timing(r["ms"], nbytes, copy), **{k: v for k, v in r.items() if k not in ("ms",)}}
            else:
                row[name] = {"error": r.get("error", "no time")}
        row["lamina_impl"] = raw.get("lamina_impl", "")
        row["match"] = raw.get("match")
        for i in (item_of or {}).get(cell.id, []):
            # an item that failed as a whole (worker died, timed out) fails the
            # implementations it was timing
            if i in item_errors:
                for name in ("compile",) if i.startswith("compile:") else ("lamina", "eager"):
                    if row[name] is None:
                        row[name] = {"error": item_errors[i]}
        errors = [f"{i}: {item_errors[i]}" for i in (item_of or {}).get(cell.id, []) if i in item_errors]
        not_run = [i for i in (item_of or {}).get(cell.id, []) if i not in done]
        lam = (row["lamina"] or {}).get("ms")
        row["speedup"] = {a: (row[a]["ms"] / lam if lam and row[a] and row[a].get("ms") else None) for a in ANCHORS}
        row["error"] = "; ".join(errors) or None
        row["not_run"] = not_run or None
        out.append(row)
    return out


def check_rows(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("type", "item")} for r in records if r.get("type") == "check"]


# --- the table -------------------------------------------------------------------

def _fmt(v, spec: str, missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    return format(v, spec)


def _impl_cell(r, key: str, spec: str) -> str:
    if r is None:
        return "-"
    if "error" in r and r.get("ms") is None:
        return "ERR"
    return _fmt(r.get(key), spec)


def _speedup_cell(speedup, anchor) -> str:
    if speedup:
        return f"{speedup:.2f}x"
    if anchor and anchor.get("error"):
        return "ERR"
    return "-"


def _ok(row: dict) -> str:
    if row.get("error") and row.get("lamina") is None:
        return "ERR"
    if row.get("not_run") and row.get("lamina") is None:
        return "-"
    lam = row.get("lamina")
    if lam is None or lam.get("ms") is None:
        return "ERR"
    m = row.get("match")
    if not m or m.get("ok") is None:
        return "n/a"
    return "yes" if m["ok"] else "NO"


HEADER = ("op", "shape", "dtype", "layout", "mode", "ok", "lamina ms", "GB/s", "frac", "x eager", "x compile", "x liger")


def format_table(rows: list[dict], meta: dict | None = None) -> str:
    """Fixed-width text: one line per cell."""
    lines = []
    if meta:
        lines.append(
            f"# {meta.get('card', '?')} | copy {_fmt(meta.get('copy_gbps'), '.0f')} GB/s | torch {meta.get('torch')} | "
            f"triton {meta.get('triton')} | lamina {meta.get('lamina')} | liger {meta.get('liger') or 'absent'} | {meta.get('date', '')}"
        )
    body = []
    for r in rows:
        lam = r.get("lamina")
        sp = r.get("speedup") or {}
        body.append((
            r["label"] + (" [small]" if r.get("small") else ""),
            "x".join(map(str, r["shape"])),
            SHORT_DTYPE.get(r["dtype"], r["dtype"]),
            SHORT_LAYOUT.get(r["layout"], r["layout"]),
            r["mode"],
            _ok(r),
            _impl_cell(lam, "ms", ".3f"),
            _impl_cell(lam, "gbps", ".0f"),
            _impl_cell(lam, "frac", ".2f"),
            *[_speedup_cell(sp.get(a), r.get(a)) for a in ANCHORS],
        ))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(HEADER)]
    left = 2  # op and shape left-aligned, numbers right-aligned

    def line(values):
        return "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    lines.append(line(HEADER))
    lines.append(line(["-" * w for w in widths]))
    lines.extend(line(b) for b in body)
    lines.append(
        "ok: lamina's output and gradients match torch eager's at this shape (2x the dtype's tolerance; dropout and "
        "dropout+add: drop rate and scale); frac: fraction of the copy bandwidth; x anchor: anchor ms / lamina ms (>1: lamina faster)"
    )
    lines.extend(format_errors(rows))
    return "\n".join(lines) + "\n"


def format_errors(rows: list[dict]) -> list[str]:
    """Each distinct error once, with how many cells it hit and the first of them."""
    seen: dict[str, list[str]] = {}
    for r in rows:
        for e in _errors(r):
            seen.setdefault(e, []).append(r["id"])
    if not seen:
        return []
    out = ["errors:"]
    for e, ids in seen.items():
        more = f" (and {len(ids) - 1} more cells)" if len(ids) > 1 else ""
        out.append(f"  {ids[0]}{more}: {e}")
    return out


def _errors(row: dict) -> list[str]:
    """The cell's item error, then each implementation's own."""
    out = [row["error"][:300]] if row.get("error") else []
    for name in IMPLS:
        r = row.get(name)
        if r and r.get("error") and r["error"] not in (row.get("error") or ""):
            out.append(f"{name}: {r['error']}"[:300])
    return out


def format_check_table(rows: list[dict]) -> str:
    """One line per case and kwargs: passed/total per dtype, then the failures."""
    if not rows:
        return "correctness: no rows\n"
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    keyed: dict[tuple, dict] = {}
    for r in rows:
        keyed.setdefault((r["case"], r["kwargs"]), {}).setdefault(r["dtype"], []).append(r)
    header = ["case", "kwargs", *dtypes, "deterministic"]
    body = []
    for (case, kwargs), per in keyed.items():
        cols = []
        for d in dtypes:
            rs = per.get(d, [])
            passed = sum(1 for r in rs if r.get("ok"))
            cols.append("-" if not rs else f"{'ok' if passed == len(rs) else 'FAIL'} {passed}/{len(rs)}")
        all_rows = [r for rs in per.values() for r in rs]
        det = all(r.get("deterministic", True) for r in all_rows if r.get("error") is None)
        body.append([case, kwargs[:40], *cols, "yes" if det else "NO"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in [header, ["-" * w for w in widths], *body]]
    failed = [r for r in rows if not r.get("ok")]
    total = len(rows)
    lines.append(f"correctness: {total - len(failed)}/{total} passed")
    for r in failed:
        shape = "x".join(map(str, r["shape"]))
        why = r.get("error") or (f"{r.get('where')} err/tol {_fmt(r.get('worst'), '.3g', 'inf')}" + ("" if r.get("deterministic", True) else ", not deterministic"))
        lines.append(f"  FAIL {r['case']} {r['kwargs'][:40]} {r['dtype']} {shape} {r['layout']}: {why}"[:400])
    return "\n".join(lines) + "\n"


# --- files -------------------------------------------------------------------------

def _clean(obj):
    """JSON without NaN/Infinity (not valid JSON): they become strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str, obj) -> None:
    """Written to a temporary name first, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(obj), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def draw_chart(path: str, rows: list[dict], meta: dict | None = None) -> None:
    """Horizontal bars: fraction of copy bandwidth per cell, lamina and each
    anchor side by side; forward and forward+backward in two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("fwd", "fwdbwd") if any(r["mode"] == m for r in rows)] or ["fwd"]
    per_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    n = max(len(v) for v in per_mode.values()) or 1
    fig, axes = plt.subplots(1, len(modes), figsize=(9 * len(modes), 1.5 + 0.32 * n), squeeze=False)
    bar = 0.8 / len(IMPLS)
    for ax, mode in zip(axes[0], modes):
        mrows = per_mode[mode]
        labels = [
            f"{r['label']} {'x'.join(map(str, r['shape']))} {SHORT_DTYPE.get(r['dtype'], r['dtype'])}"
            + ("" if r["layout"] == "contiguous" else " cl")
            for r in mrows
        ]
        for k, name in enumerate(IMPLS):
            vals = [((r.get(name) or {}).get("frac") or 0.0) for r in mrows]
            ys = [i + (k - (len(IMPLS) - 1) / 2) * bar for i in range(len(mrows))]
            ax.barh(ys, vals, height=bar, color=COLORS[name], label=name)
        ax.set_yticks(range(len(mrows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        top = max([1.0] + [((r.get(name) or {}).get("frac") or 0.0) for r in mrows for name in IMPLS])
        ax.set_xlim(0, 1.1 * top)
        ax.set_xlabel("fraction of device-to-device copy bandwidth")
        ax.set_title("forward" if mode == "fwd" else "forward + backward")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    if meta:
        fig.suptitle(
            f"lamina {meta.get('lamina')} on {meta.get('card', '?')} (copy {_fmt(meta.get('copy_gbps'), '.0f')} GB/s), "
            f"torch {meta.get('torch')}, {meta.get('date', '')}",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
