#!/usr/bin/env python3
"""Spec fidelity of the PyTorch split path (models/finetune) against the
fixture's reference (tests/data/tiny-llava/reference.safetensors): for each
fixture AVQ file, indices (where the margin is clear), zhat, residual,
selected features and projector output, within 1e-4 relative per image."""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models", "finetune"))
from avq_finetune.model import build_avq_model  # noqa: E402


def rel(a, b):
    return float((a - b).flatten(1).norm(dim=1).div(b.flatten(1).norm(dim=1)).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/data/tiny-llava"))
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    ref = load_file(os.path.join(args.model, "reference.safetensors"))
    pv = ref["pixel_values"]
    passed = failed = 0
    for case in ("L0-derive", "L1-side8"):
        model, avq, _ = build_avq_model(args.model, os.path.join(args.model, f"avq-{case}.safetensors"),
                                        dlp_init="file")
        model.eval()
        avq.record = True
        with torch.no_grad():
            out = model.model.get_image_features(pv, vision_feature_layer=-2,
                                                 vision_feature_select_strategy="default",
                                                 output_hidden_states=True)
            proj = torch.stack(list(out.pooler_output))
            selected = out.hidden_states[-2][:, 1:]
        p = f"avq.{case}."
        margin = ref[p + "margin"]
        clear = margin > 1e-3
        idx_ok = bool((avq.last_indices.int() == ref[p + "indices"])[clear].all())
        flips = int((avq.last_indices.int() != ref[p + "indices"]).sum())
        res = {
            "zhat": rel(avq.last_zhat, ref[p + "zhat"]),
            "residual": rel(avq.last_xhat, ref[p + "residual"]),
            "selected": rel(selected, ref[p + "selected"]),
            "projector": rel(proj, ref[p + "projector"]),
        }
        ok = idx_ok and all(v <= args.tol for v in res.values())
        print(f"{case}: indices {'identical' if flips == 0 else f'{flips} differ (near ties)'}"
              f" (clear margins: {'ok' if idx_ok else 'MISMATCH'}); "
              + ", ".join(f"{k} {v:.2e}" for k, v in res.items()) + (" ok" if ok else " FAIL"))
        passed += ok
        failed += not ok
    print(f"verify_fixture: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
