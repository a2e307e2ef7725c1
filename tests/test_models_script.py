"""scripts/gpu_models.py's structure on the CPU (--cpu-smoke: tiny stand-in
models): every model is patched completely, loads the unpatched state_dict,
and lamina.patch's losses follow eager's. No timing is asserted."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import gpu_models  # noqa: E402


def test_cpu_smoke_writes_results_and_patched_losses_follow_eager(tmp_path):
    out = gpu_models.main(["--cpu-smoke", "--skip-compile", "--steps", "3", "--out", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["log.txt", "loss_curves.png", "models.json"]
    saved = json.loads((tmp_path / "models.json").read_text())
    assert saved["cuda_graph"] == {"skipped": "no CUDA device"}
    assert set(out["models"]) == {"resnet50", "gpt2", "gn_silu"}
    for name, entry in saved["models"].items():
        assert "error" not in entry, (name, entry)
        assert entry["patch_replaced_every_supported_layer"] and entry["patch_left_unpatched"] == []
        assert entry["state_dict_keys_equal"] and entry["patched_loads_unpatched_state_dict"] is True
        assert set(entry["variants"]) >= {"eager", "lamina.patch"}
        for variant in ("eager", "lamina.patch"):
            assert entry["variants"][variant]["samples_per_s"] > 0
            assert len(entry["loss_curves"][variant]) == 3
        # same seed, same data, dropout off: the first loss is the same model on the same batch
        assert entry["loss_rel_diff_first_step"] < 1e-2, name
        assert entry["loss_max_rel_diff_patch_vs_eager"] < 5e-2, name
        # eager's rerun, the noise floor: on the CPU the same run twice is the same curve
        assert entry["loss_max_rel_diff_eager_rerun"] == 0.0, name


def test_variants_option_runs_only_the_named_variants(tmp_path):
    out = gpu_models.main(["--cpu-smoke", "--models", "resnet50", "--variants", "eager,lamina.patch",
                           "--steps", "2", "--out", str(tmp_path)])
    entry = out["models"]["resnet50"]
    assert set(entry["variants"]) == {"eager", "lamina.patch"}
    assert set(entry["loss_curves"]) == {"eager", "lamina.patch"}
