"""scripts/memory_table.py on the CPU: the files it writes and the claims it
checks. The saved-bytes values themselves are asserted in test_fused.py
(test_memory_standard_cases); here, that the script reports them, that its
claims pass on lamina's real numbers and fail on doctored ones."""

import copy
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import memory_table  # noqa: E402

SHAPE = (2, 4, 8, 8)


def test_writes_json_and_markdown_with_every_claim_passing(tmp_path):
    result = memory_table.main(["--device", "cpu", "--out", str(tmp_path), "--shape", "2x4x8x8"])
    assert sorted(os.listdir(tmp_path)) == ["memory.json", "memory.md"]
    saved = json.loads((tmp_path / "memory.json").read_text())
    assert saved == json.loads(json.dumps(result))
    meta = saved["meta"]
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__ and meta["card"].startswith("cpu")
    assert meta["date"][:4].isdigit() and meta["shape"] == list(SHAPE)
    layers = {"dropout", "max_pool2d_3x3s2", "relu", "batch_norm_relu", "batch_norm_silu", "batch_norm_act_inplace"}
    assert {(r["layer"], r["dtype"]) for r in saved["rows"]} == {(l, d) for l in layers for d in ("float32", "bfloat16")}
    assert len(saved["claims"]) == 6 and all(c["ok"] for c in saved["claims"]) and saved["ok"]
    # the numbers the claims rest on, as the JSON has them
    n, pooled = 2 * 4 * 8 * 8, 2 * 4 * 4 * 4
    for r in saved["rows"]:
        if r["layer"] == "dropout":
            assert r["lamina"]["new"] <= 8 and r["torch"]["new"] >= n  # a seed against torch's mask
        if r["layer"] == "max_pool2d_3x3s2":
            assert r["lamina"]["new"] <= pooled < r["torch"]["new"]
    md = (tmp_path / "memory.md").read_text()
    assert md.count("| PASS |") == 6 and "FAIL" not in md and "Claims: 6/6 passed." in md
    assert "| dropout | float32 | 8 |" in md


def test_claims_fail_on_a_mask_wide_indices_or_a_separate_input():
    rows = {r["layer"]: r for r in memory_table.compare_standard_cases("cpu", torch.float32, SHAPE)}
    assert all(c["ok"] for c in memory_table.check_claims(rows, SHAPE, torch.float32))
    n = 2 * 4 * 8 * 8
    for layer, change, failing in (
        ("dropout", {"new": 8 + n}, "dropout saves no mask"),  # a byte mask kept
        ("max_pool2d_3x3s2", {"new": 8 * 2 * 4 * 4 * 4}, "max-pool saves at most 1 byte per output"),  # int64 indices
        ("batch_norm_act_inplace", {"input_holds_output": False}, "in-place BatchNormAct2d saves no separate input"),
        ("batch_norm_act_inplace", {"new": 128 + 4 * n}, "in-place BatchNormAct2d saves no separate input"),
    ):
        doctored = copy.deepcopy(rows)
        doctored[layer]["lamina"].update(change)
        verdict = {c["claim"]: c["ok"] for c in memory_table.check_claims(doctored, SHAPE, torch.float32)}
        assert verdict[failing] is False and sum(not ok for ok in verdict.values()) == 1, (layer, change)
