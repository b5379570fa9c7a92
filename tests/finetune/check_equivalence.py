#!/usr/bin/env python3
"""Does the C engine run the fine-tuned model the way PyTorch trained it?

  check_equivalence.py --avq trained.safetensors --reference reference.safetensors
                       [--cli build/lib/cli/avq] [--model tests/data/tiny-llava]

Compares the C CLI against the PyTorch outputs that finetune_test.py wrote:
  indices   `avq encode` frames (parsed per AVQ-SPEC 6) vs `indices`:
            identical wherever the squared-distance margin is clear
  features  `avq features` on those frames vs `image_features`: relative
            L2 error per image <= --tol (1e-4) when all indices agree
  answer    `avq ask --print-ids -n 8` vs `greedy_ids` (LoRA applied), up to
            the first step whose logit margin is not clear; a C answer equal
            to `base_greedy_ids` instead means the engine ignored lora.*
First-token logits are in the reference (`first_logits`) for a C test; the
CLI prints none. Needs only numpy and safetensors (no torch).
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EOS = 2


def parse_frames(data: bytes):
    """AVQ v1 frames, concatenated (AVQ-SPEC 6)."""
    frames = []
    off = 0
    while off < len(data):
        if len(data) - off < 16:
            raise ValueError("truncated frame header")
        version, flags, tokens, ibits, sbits, reserved = struct.unpack_from("<BBHBBH", data, off)
        cid = data[off + 8:off + 16].hex()
        if version != 1 or flags & ~3 or reserved != 0:
            raise ValueError(f"unknown frame version {version} flags {flags:#x}")
        off += 16
        nbytes = (tokens * ibits + 7) // 8
        bits = int.from_bytes(data[off:off + nbytes], "little")
        indices = [(bits >> (t * ibits)) & ((1 << ibits) - 1) for t in range(tokens)]
        off += nbytes
        fr = {"tokens": tokens, "index_bits": ibits, "side_bits": sbits, "codebook": cid,
              "indices": np.array(indices, dtype=np.int64)}
        if flags & 2:
            fr["side_range"] = np.frombuffer(data[off:off + 16], dtype="<f4").copy()
            off += 16
            nbytes = (2 * tokens * sbits + 7) // 8
            bits = int.from_bytes(data[off:off + nbytes], "little")
            codes = [(bits >> (k * sbits)) & ((1 << sbits) - 1) for k in range(2 * tokens)]
            fr["side_q"] = np.array(codes, dtype=np.int64).reshape(tokens, 2)
            off += nbytes
        frames.append(fr)
    return frames


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avq", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build/lib/cli/avq"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/data/tiny-llava"))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--index-margin", type=float, default=1e-3, help="squared-distance gap counted as clear")
    ap.add_argument("--logit-margin", type=float, default=1e-3, help="logit gap counted as clear")
    ap.add_argument("--skip-llm", action="store_true", help="compare the vision path only")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()

    ref = load_file(a.reference)
    with safe_open(a.reference, "np") as f:
        meta = f.metadata()
    with safe_open(a.avq, "np") as f:
        avq_meta = f.metadata()
        has_lora = any(k.startswith("lora.") for k in f.keys())
    images = [os.path.join(ROOT, p) for p in meta["images"].split(",")]
    results = []

    def report(name, ok, text):
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {text}")

    with tempfile.TemporaryDirectory() as tmp:
        frames_path = os.path.join(tmp, "frames.avq")
        thr = ["-t", str(a.threads)] if a.threads else []
        run([a.cli, "encode", "-m", a.model, "-a", a.avq, "-o", frames_path, *thr, *images])
        frames = parse_frames(open(frames_path, "rb").read())

        # codebook id: SHA-256 of the codebook bytes as stored
        with open(a.avq, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            s, e = header["avq.codebook"]["data_offsets"]
            fh.seek(8 + n + s)
            cid = hashlib.sha256(fh.read(e - s)).hexdigest()[:16]
        report("codebook id", all(fr["codebook"] == cid for fr in frames) and len(frames) == len(images),
               f"{len(frames)} frame(s), id {frames[0]['codebook']} (file {cid}), "
               f"{frames[0]['index_bits']} index bits, layer {avq_meta['avq.layer']} {avq_meta['avq.residual']}")

        ref_idx = ref["indices"].astype(np.int64)
        margin = ref["margin"]
        flips = clear_bad = 0
        for i, fr in enumerate(frames):
            diff = fr["indices"] != ref_idx[i]
            flips += int(diff.sum())
            clear_bad += int((diff & (margin[i] > a.index_margin)).sum())
        report("indices", clear_bad == 0,
               f"{ref_idx.size - flips}/{ref_idx.size} identical, {flips} differ "
               f"({clear_bad} of them with a clear margin > {a.index_margin}; min margin {margin.min():.2e})")

        if "side_q" in ref:
            sq, sm = ref["side_q"].astype(np.int64), ref["side_margin"]
            sdiff = np.stack([fr["side_q"] != sq[i] for i, fr in enumerate(frames)])
            sbad = int((sdiff & (sm > a.index_margin)).sum())
            rerr = max(float(np.abs(fr["side_range"] - ref["side_range"][i]).max() /
                             max(1e-30, np.abs(ref["side_range"][i]).max())) for i, fr in enumerate(frames))
            report("side information", sbad == 0 and rerr <= a.tol,
                   f"{sq.size - int(sdiff.sum())}/{sq.size} codes identical, {int(sdiff.sum())} differ "
                   f"({sbad} away from a rounding boundary); ranges rel {rerr:.2e}")

        feat_path = os.path.join(tmp, "features.safetensors")
        run([a.cli, "features", "-m", a.model, "-a", a.avq, "-o", feat_path, *thr, frames_path])
        got = load_file(feat_path)
        errs = [rel(got[f"image_features.{i}"], ref["image_features"][i]) for i in range(len(images))]
        tol = a.tol if flips == 0 else 2e-2
        report("image features", max(errs) <= tol,
               "relative L2 per image " + ", ".join(f"{e:.2e}" for e in errs) + f" (tolerance {tol:g}"
               + (", loosened: near-tie index flips" if flips else "") + ")")

        if not a.skip_llm:
            llm_image = os.path.join(ROOT, meta["llm_image"])
            out = run([a.cli, "ask", "-m", a.model, "-a", a.avq, "-q", meta["question"], "-n", "8",
                       "--print-ids", *thr, llm_image])
            lines = out.rstrip("\n").split("\n")
            c_ids = [int(x) for x in lines[-1].split()] if lines and lines[-1].strip() else []
            want = ref["greedy_ids"].astype(np.int64).tolist()
            base = ref["base_greedy_ids"].astype(np.int64).tolist()
            margins = ref["greedy_margins"].tolist()
            checked, ok = 0, True
            for step, m in enumerate(margins):
                if m <= a.logit_margin:
                    break
                exp = want[step] if step < len(want) else EOS
                got_t = c_ids[step] if step < len(c_ids) else (EOS if len(c_ids) < 8 else None)
                if exp != got_t:
                    ok = False
                    break
                checked += 1
            text = (f"C {c_ids} vs PyTorch {want} ({checked} step(s) with a clear margin compared, "
                    f"first margin {margins[0]:.3f}); answer {lines[0] if lines else ''!r}")
            if not ok and c_ids[:len(base)] == base[:len(c_ids)]:
                text += " -- the C answer is the base model's: lora.* was not applied"
            if not has_lora:
                text += " (file has no lora.*)"
            report("greedy answer (LoRA)", ok, text)
            print(f"     first-token logits: reference has first_logits [{ref['first_logits'].shape[0]}] "
                  f"(argmax {int(ref['first_logits'].argmax())}) and base_first_logits for a C-side test")

    passed = sum(results)
    print(f"check_equivalence: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
