"""Export a training checkpoint to an AVQ file.

  python -m avq_finetune export --checkpoint run/checkpoint-1000 -o trained.safetensors

(`train` already exports at the end; this is for intermediate checkpoints.)
The file holds the trained codebook, both DLPs and lora.<base>.lora_A/B with
lora.alpha / lora.rank metadata (AVQ-SPEC 2), all F32.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m avq_finetune export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory (holds state.pt)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--model", default=None, help="model directory (default: the one trained on)")
    a = ap.parse_args(argv)

    from .model import export_avq
    from .train import build, finetune_metadata

    ck = torch.load(os.path.join(a.checkpoint, "state.pt"), map_location="cpu", weights_only=False)
    args = argparse.Namespace(**ck["args"])
    if a.model:
        args.model = a.model
    args.device = "cpu"
    args.gradient_checkpointing = False
    args.dlp_init = "file"
    model, avq, _ = build(args)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in ck["params"].items():
            params[n].copy_(v)
        for k, v in ck["avq_buffers"].items():
            getattr(avq, k).copy_(v)
    cb = export_avq(model, a.output, finetune_metadata(args, ck["state"]))
    print(f"exported {a.output} (codebook id {cb})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
