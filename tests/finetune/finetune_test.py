#!/usr/bin/env python3
"""Fine-tune on the tiny fixture, export, and write the PyTorch reference.

  finetune_test.py --init INIT.avq --out DIR [--steps N] [--update-artifacts]

1. trains DLP + EMA codebook + LoRA (fp32, fixed seed) on
   tests/finetune/synthetic.json (Q/A pairs about the fixture images) and
   asserts that the loss went down;
2. exports DIR/trained.safetensors (AVQ file with lora.*);
3. reloads that file the way the C engine reads it (split from the file,
   LoRA merged as W + (alpha/r) B A) and checks it against the in-memory
   trained model (the export loses nothing);
4. writes DIR/reference.safetensors, the trained PyTorch model's outputs
   that check_equivalence.py compares the C engine against:
     image_features [N,576,H]  projector output of the split path, per image
     indices I32 [N,577], margin [N,577]  edge indices, squared-distance gap
     side_q I32 [N,577,2], side_range [N,4], side_margin [N,577,2]  (residual
       "side" only) side codes, ranges, and each value's distance in steps
       from a rounding boundary
     prompt_ids I32 [P]  BOS + "USER: <image>\\n{q} ASSISTANT:" (576 image ids)
     first_logits [V]  first-token logits, LoRA applied
     greedy_ids I32 [n]  up to 8 greedy ids (EOS ends the answer, not included)
     greedy_margins [m]  top-1/top-2 logit gap of every step taken (m = n, or
                         n + 1 when EOS ended it: the last is the EOS step's)
     base_first_logits, base_greedy_ids, base_greedy_margins  same without LoRA
   (metadata: images, question, llm_image, avq file name).
With --update-artifacts both files are also copied to tests/data/finetune/.
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models", "finetune"))

from avq_finetune.model import load_exported  # noqa: E402
from avq_finetune.quantizer import find_avq  # noqa: E402
from avq_finetune.train import add_train_args, train  # noqa: E402

IMAGES = ["astronaut", "chelsea", "coffee"]
QUESTION = "What is in the picture?"
LLM_IMAGE = "chelsea"
EOS = 2


def rel(a, b):
    return float((a - b).flatten(1).norm(dim=1).div(b.flatten(1).norm(dim=1)).max())


@torch.no_grad()
def image_path_outputs(model, pixel_values):
    """Projector output through the split path, and the edge indices."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    avq = find_avq(base)
    avq.record = True
    out = base.model.get_image_features(pixel_values, vision_feature_layer=base.config.vision_feature_layer,
                                        vision_feature_select_strategy=base.config.vision_feature_select_strategy)
    feats = torch.stack(list(out.pooler_output)).float()
    idx, margin = avq.last_indices.clone(), avq.last_margins.clone()
    side = None
    if avq.residual == "side":
        side = (avq.last_side_codes.clone(), avq.last_side_ranges.clone(), avq.last_side_margin.clone())
    avq.record = False
    return feats, idx, margin, side


@torch.no_grad()
def greedy(model, prompt_ids, pixel_values, steps=8):
    """First-token logits, up to `steps` greedy ids (EOS ends, excluded) and
    the logit margin of every step taken (the EOS step included)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids = list(prompt_ids)
    out_ids, margins, first = [], [], None
    for _ in range(steps):
        x = torch.tensor([ids])
        h = base.model(input_ids=x, pixel_values=pixel_values, attention_mask=torch.ones_like(x),
                       use_cache=False).last_hidden_state[0, -1]
        logits = base.lm_head(h).float()
        if first is None:
            first = logits.clone()
        top = torch.topk(logits, 2)
        tid = int(top.indices[0])
        margins.append(float(top.values[0] - top.values[1]))
        if tid == EOS:
            break
        out_ids.append(tid)
        ids.append(tid)
    return first, out_ids, margins


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="initial AVQ file (avq train-codebook)")
    ap.add_argument("--out", required=True, help="work directory")
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/data/tiny-llava"))
    ap.add_argument("--data", default=os.path.join(ROOT, "tests/finetune/synthetic.json"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-artifacts", action="store_true",
                    help="copy trained.safetensors and reference.safetensors to tests/data/finetune/")
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    exported = os.path.join(a.out, "trained.safetensors")

    tp = argparse.ArgumentParser()
    add_train_args(tp)
    targs = tp.parse_args([
        "--model", a.model, "--avq", a.init, "--data", a.data, "--output-dir", os.path.join(a.out, "run"),
        "--export", exported, "--max-steps", str(a.steps), "--batch-size", "2", "--grad-accum", "1",
        "--lora-rank", "8", "--lora-alpha", "16", "--lora-dropout", "0", "--lr-lora", "3e-3",
        "--lr-dlp", "1e-3", "--lr-gate", "2e-2", "--warmup-ratio", "0", "--schedule", "constant",
        "--dtype", "fp32", "--device", "cpu", "--seed", "1", "--log-every", "4",
        "--threads", str(a.threads),
    ])
    res = train(targs)
    model, tokenized, improc = res["model"], res["tokenized"], res["image_processor"]
    hist = res["state"]["history"]
    k = max(1, min(4, len(hist) // 4))
    first_loss, last_loss = sum(hist[:k]) / k, sum(hist[-k:]) / k
    failures = []
    print(f"loss: first {k} steps {first_loss:.4f} -> last {k} steps {last_loss:.4f}")
    if not last_loss < first_loss:
        failures.append("the training loss did not decrease")

    # PyTorch outputs of the trained model (peft, unmerged), eval mode.
    model.eval()
    from PIL import Image

    image_files = [os.path.join(a.model, "images", f"{n}.png") for n in IMAGES]
    pv = torch.stack([improc(images=Image.open(p).convert("RGB"), return_tensors="pt")["pixel_values"][0]
                      for p in image_files])
    feats, idx, margin, side = image_path_outputs(model, pv)
    prompt = tokenized.prompt_ids(QUESTION)
    pv_llm = pv[IMAGES.index(LLM_IMAGE)].unsqueeze(0)
    first, gids, gm = greedy(model, prompt, pv_llm)
    with model.disable_adapter():
        bfirst, bids, bm = greedy(model, prompt, pv_llm)
    print(f"greedy ids (LoRA): {gids} margins {[round(m, 3) for m in gm]}")
    print(f"greedy ids (base): {bids}")
    print("answer (LoRA): " + repr(tokenized.tok.decode(gids)) + "   (base): " + repr(tokenized.tok.decode(bids)))
    if gids == bids and torch.equal(first.argmax(), bfirst.argmax()):
        print("note: LoRA did not change the greedy answer; the C check of LoRA relies on logits only")

    # The exported file, read back the way the C engine reads it.
    m2, _, f = load_exported(a.model, exported)
    feats2, idx2, _, _ = image_path_outputs(m2, pv)
    first2, gids2, _ = greedy(m2, prompt, pv_llm)
    r_feat, r_log = rel(feats2, feats), rel(first2[None], first[None])
    print(f"export round trip: features rel {r_feat:.2e}, first logits rel {r_log:.2e}, "
          f"indices {'identical' if torch.equal(idx, idx2) else 'DIFFER'}, greedy "
          f"{'identical' if gids == gids2 else 'DIFFER'}; lora tensors {len(f.lora)}, "
          f"alpha {f.metadata.get('lora.alpha')}, rank {f.metadata.get('lora.rank')}")
    if r_feat > 1e-5 or r_log > 1e-5 or not torch.equal(idx, idx2) or gids != gids2:
        failures.append("the exported file does not reproduce the trained model")

    ref = {
        "image_features": feats.contiguous(),
        "indices": idx.to(torch.int32).contiguous(),
        "margin": margin.float().contiguous(),
        "prompt_ids": torch.tensor(prompt, dtype=torch.int32),
        "first_logits": first.contiguous(),
        "greedy_ids": torch.tensor(gids, dtype=torch.int32),
        "greedy_margins": torch.tensor(gm, dtype=torch.float32),
        "base_first_logits": bfirst.contiguous(),
        "base_greedy_ids": torch.tensor(bids, dtype=torch.int32),
        "base_greedy_margins": torch.tensor(bm, dtype=torch.float32),
    }
    if side is not None:
        ref["side_q"] = side[0].to(torch.int32).contiguous()
        ref["side_range"] = side[1].float().contiguous()
        ref["side_margin"] = side[2].float().contiguous()
    meta = {
        "images": ",".join(f"tests/data/tiny-llava/images/{n}.png" for n in IMAGES),
        "question": QUESTION,
        "llm_image": f"tests/data/tiny-llava/images/{LLM_IMAGE}.png",
        "avq": "trained.safetensors",
        "model": "tests/data/tiny-llava",
        "loss_first": repr(first_loss),
        "loss_last": repr(last_loss),
        "note": "PyTorch (models/finetune) outputs of the trained model in fp32; see tests/finetune/README.md",
    }
    ref_path = os.path.join(a.out, "reference.safetensors")
    save_file(ref, ref_path, metadata=meta)
    with open(os.path.join(a.out, "summary.json"), "w") as fh:
        json.dump({"loss_first": first_loss, "loss_last": last_loss, "greedy_ids": gids,
                   "base_greedy_ids": bids, "export_features_rel": r_feat,
                   "export_logits_rel": r_log, "history": hist}, fh, indent=1)
    if a.update_artifacts:
        dst = os.path.join(ROOT, "tests", "data", "finetune")
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(exported, os.path.join(dst, "trained.safetensors"))
        shutil.copyfile(ref_path, os.path.join(dst, "reference.safetensors"))
        shutil.copyfile(a.init, os.path.join(dst, "init.safetensors"))
        print(f"artifacts copied to {dst}")
    print(f"finetune_test: {time.time() - t0:.0f} s")
    for msg in failures:
        print("FAIL: " + msg)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
