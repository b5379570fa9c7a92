"""Fine-tuning: DLP + EMA codebook + LoRA on LLaVA-format data.

  python -m avq_finetune train --model DIR --avq init.safetensors \\
      --data data.json --output-dir run/ [options]

Trainable: the two DLPs (W, b, gate gamma) by gradient, the codebook by EMA,
LoRA on the LLM's linear layers by gradient. The vision tower, projector
and base LLM stay frozen: an AVQ file carries nothing else, so the C engine
runs exactly the trained model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import torch

from .data import IGNORE, EpochSampler, LlavaDataset, Tokenized, collate, load_records
from .model import DEFAULT_LORA_TARGETS, add_lora, build_avq_model, export_avq

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_train_args(ap: argparse.ArgumentParser):
    g = ap.add_argument_group("inputs")
    g.add_argument("--model", required=True, help="llava-hf model directory (hub layout)")
    g.add_argument("--avq", required=True, help="initial AVQ file (avq train-codebook or a previous run)")
    g.add_argument("--data", required=True, help="LLaVA-format JSON list of {image, conversations}")
    g.add_argument("--image-folder", default=None, help="root of relative image paths (default: the JSON's folder)")
    g.add_argument("--output-dir", required=True)
    g.add_argument("--export", default=None, help="AVQ file written at the end (default OUTPUT_DIR/avq-finetuned.safetensors)")
    g.add_argument("--system-prompt", default=None, help="text before the conversation (as avq ask --system-prompt)")
    g.add_argument("--max-length", type=int, default=2048)

    g = ap.add_argument_group("schedule")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=0, help="optimizer steps (overrides --epochs when > 0)")
    g.add_argument("--batch-size", type=int, default=1, help="micro-batch size")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--lr-lora", type=float, default=2e-4)
    g.add_argument("--lr-dlp", type=float, default=1e-4)
    g.add_argument("--lr-gate", type=float, default=1e-3, help="learning rate of the two gate scalars gamma")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-ratio", type=float, default=0.03)
    g.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)

    g = ap.add_argument_group("AlignedVQ")
    g.add_argument("--beta", type=float, default=0.25, help="commitment loss weight")
    g.add_argument("--ema-decay", type=float, default=0.99)
    g.add_argument("--dead-fraction", type=float, default=0.03,
                   help="restart codes whose EMA usage is below this fraction of the mean (0: never)")
    g.add_argument("--dlp-init", choices=["auto", "file", "random"], default="auto",
                   help="auto: random W (gates at 0) if the file's DLP is the identity, else the file's")
    g.add_argument("--freeze-codebook", action="store_true", help="no EMA updates")

    g = ap.add_argument_group("LoRA")
    g.add_argument("--lora-rank", type=int, default=128)
    g.add_argument("--lora-alpha", type=float, default=256)
    g.add_argument("--lora-dropout", type=float, default=0.05)
    g.add_argument("--lora-targets", default=",".join(DEFAULT_LORA_TARGETS))
    g.add_argument("--lora-layers", default=None, help="comma list of LLM layers (default: all)")
    g.add_argument("--no-lora", action="store_true")

    g = ap.add_argument_group("runtime")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="base model dtype (AVQ math stays fp32)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument("--resume", default=None, help="checkpoint dir, or 'auto' for OUTPUT_DIR/last")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--threads", type=int, default=0)


def set_seed(seed: int):
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path, model, avq, optimizer, scheduler, state, args):
    os.makedirs(path, exist_ok=True)
    torch.save({
        "params": trainable_state(model),
        "avq_buffers": {k: v.cpu() for k, v in (("codebook", avq.codebook), ("ema_count", avq.ema_count),
                                               ("ema_sum", avq.ema_sum))},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state,
        "args": vars(args),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "restart": avq._restart_gen.get_state()},
    }, os.path.join(path, "state.pt"))
    tmp = os.path.join(os.path.dirname(path), "last.tmp")
    with open(tmp, "w") as f:
        f.write(os.path.basename(path))
    os.replace(tmp, os.path.join(os.path.dirname(path), "last"))


def load_checkpoint(path, model, avq, optimizer, scheduler):
    ck = torch.load(os.path.join(path, "state.pt"), map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in ck["params"].items():
            params[n].copy_(v)
        for k, v in ck["avq_buffers"].items():
            getattr(avq, k).copy_(v)
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
    avq._restart_gen.set_state(ck["rng"]["restart"])
    return ck["state"]


def build(args):
    dtype = DTYPES[args.dtype]
    model, avq, avq_file = build_avq_model(
        args.model, args.avq, dtype=dtype, device=args.device, beta=args.beta, ema_decay=args.ema_decay,
        dead_fraction=args.dead_fraction, dlp_init=args.dlp_init, seed=args.seed)
    if not args.no_lora:
        layers = [int(x) for x in args.lora_layers.split(",")] if args.lora_layers else None
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        model = add_lora(model, args.lora_rank, args.lora_alpha, targets, args.lora_dropout, layers)
    for p in avq.parameters():
        p.requires_grad_(True)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, avq, avq_file


def param_groups(model, args):
    lora, dlp, gates = [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if ".avq." in n or n.startswith("avq."):
            (gates if n.endswith("_gamma") else dlp).append(p)
        else:
            lora.append(p)
    groups = []
    if lora:
        groups.append({"params": lora, "lr": args.lr_lora, "weight_decay": args.weight_decay, "name": "lora"})
    groups.append({"params": dlp, "lr": args.lr_dlp, "weight_decay": args.weight_decay, "name": "dlp"})
    groups.append({"params": gates, "lr": args.lr_gate,
                   "weight_decay": 0.0, "name": "gate"})
    return groups


def answer_loss(model, batch) -> torch.Tensor:
    """The LLaVA loss: mean next-token cross-entropy over answer tokens.

    Same value as LlavaForConditionalGeneration(labels=...).loss, but the
    LM head runs only where a label is set (a few dozen rows, not the whole
    sequence x vocabulary).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], use_cache=False)
    h = out.last_hidden_state[:, :-1]
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    logits = base.lm_head(h[keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep])


def lr_lambda(total: int, warmup: int, kind: str):
    def f(step):
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or total <= warmup:
            return 1.0
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))
    return f


def train(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    from transformers import AutoImageProcessor, AutoTokenizer

    model, avq, avq_file = build(args)
    cfg = model.config
    tok = AutoTokenizer.from_pretrained(args.model)
    improc = AutoImageProcessor.from_pretrained(args.model)
    tokenized = Tokenized(tok, cfg.image_token_id, cfg.image_seq_length, args.max_length)
    records = load_records(args.data, args.image_folder)
    ds = LlavaDataset(records, tokenized, improc, args.system_prompt)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    micro_per_epoch = math.ceil(len(ds) / args.batch_size)
    steps_per_epoch = max(1, micro_per_epoch // args.grad_accum)
    total = args.max_steps if args.max_steps > 0 else max(1, int(round(args.epochs * steps_per_epoch)))
    groups = param_groups(model, args)
    n_train = sum(p.numel() for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    warmup = int(args.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, warmup, args.schedule))

    state = {"step": 0, "epoch": 0, "micro": 0, "first_losses": [], "history": []}
    resume = args.resume
    if resume == "auto":
        last = os.path.join(args.output_dir, "last")
        resume = os.path.join(args.output_dir, open(last).read().strip()) if os.path.exists(last) else None
    if resume:
        state = load_checkpoint(resume, model, avq, optimizer, scheduler)
        print(f"resumed from {resume} at step {state['step']}", flush=True)

    print(f"train: {len(ds)} records, batch {args.batch_size} x accum {args.grad_accum}, {total} steps "
          f"({steps_per_epoch}/epoch), {n_train} trainable parameters, dtype {args.dtype}, "
          f"device {args.device}, split L={avq.layer} {avq.residual}, K={avq.codebook_size}", flush=True)

    sampler = EpochSampler(len(ds), args.seed)
    device = args.device
    model.train()
    metrics_path = os.path.join(args.output_dir, "metrics.jsonl")
    mf = open(metrics_path, "a")
    win = {"loss": 0.0, "commit": 0.0, "n": 0, "samples": 0, "tokens": 0, "restarts": 0, "t0": time.time()}

    def batches():
        while True:
            order = sampler.order(state["epoch"])
            while state["micro"] < micro_per_epoch:
                m = state["micro"]
                idx = order[m * args.batch_size:(m + 1) * args.batch_size]
                state["micro"] += 1
                yield collate([ds[i] for i in idx], pad_id)
            state["epoch"] += 1
            state["micro"] = 0

    it = batches()
    while state["step"] < total:
        optimizer.zero_grad(set_to_none=True)
        step_loss = step_commit = 0.0
        for _ in range(args.grad_accum):
            b = next(it)
            b = {k: v.to(device) for k, v in b.items()}
            b["pixel_values"] = b["pixel_values"].to(DTYPES[args.dtype])
            lm = answer_loss(model, b)
            commit = avq.commit_loss if avq.commit_loss is not None else torch.zeros((), device=device)
            loss = (lm + avq.beta * commit) / args.grad_accum
            loss.backward()
            step_loss += float(lm.detach()) / args.grad_accum
            step_commit += float(commit.detach()) / args.grad_accum
            win["samples"] += b["input_ids"].shape[0]
            win["tokens"] += int(b["attention_mask"].sum())
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if not args.freeze_codebook:
            win["restarts"] += avq.ema_step()
        else:
            avq.pending_count.zero_()
            avq.pending_sum.zero_()
        state["step"] += 1
        state["history"].append(step_loss)
        win["loss"] += step_loss
        win["commit"] += step_commit
        win["n"] += 1
        if state["step"] % args.log_every == 0 or state["step"] == total or state["step"] == 1:
            dt = max(1e-9, time.time() - win["t0"])
            use = avq.usage_report(reset=True)
            rec = {
                "step": state["step"], "epoch": round(state["epoch"] + state["micro"] / micro_per_epoch, 3),
                "loss": win["loss"] / win["n"], "commit": win["commit"] / win["n"],
                "perplexity": use["perplexity"], "codes_used": use["used"], "dead_codes": use["dead"],
                "restarts": win["restarts"], "gate_in": float(avq.gate_in().detach()), "gate_out": float(avq.gate_out().detach()),
                "lr_lora": optimizer.param_groups[0]["lr"], "samples_per_s": win["samples"] / dt,
                "tokens_per_s": win["tokens"] / dt, "s_per_step": dt / win["n"],
            }
            print(f"step {rec['step']}/{total} ep {rec['epoch']:.2f} loss {rec['loss']:.4f} "
                  f"commit {rec['commit']:.4f} ppl {rec['perplexity']:.1f} used {rec['codes_used']}/"
                  f"{avq.codebook_size} dead {rec['dead_codes']} restarts {rec['restarts']} "
                  f"gates {rec['gate_in']:+.3f}/{rec['gate_out']:+.3f} "
                  f"{rec['samples_per_s']:.2f} samples/s {rec['tokens_per_s']:.0f} tok/s", flush=True)
            mf.write(json.dumps(rec) + "\n")
            mf.flush()
            win.update(loss=0.0, commit=0.0, n=0, samples=0, tokens=0, restarts=0, t0=time.time())
        if args.save_every and state["step"] % args.save_every == 0 and state["step"] < total:
            save_checkpoint(os.path.join(args.output_dir, f"checkpoint-{state['step']}"), model, avq,
                            optimizer, scheduler, state, args)
    mf.close()
    save_checkpoint(os.path.join(args.output_dir, f"checkpoint-{state['step']}"), model, avq, optimizer,
                    scheduler, state, args)
    export = args.export or os.path.join(args.output_dir, "avq-finetuned.safetensors")
    model.eval()
    cb_id = export_avq(model, export, finetune_metadata(args, state))
    print(f"exported {export} (codebook id {cb_id})", flush=True)
    return {"model": model, "avq": avq, "state": state, "export": export, "tokenized": tokenized,
            "image_processor": improc, "dataset": ds}


def finetune_metadata(args, state) -> dict:
    import peft
    import transformers

    return {
        "finetune.steps": str(state["step"]),
        "finetune.seed": str(args.seed),
        "finetune.beta": repr(args.beta),
        "finetune.ema_decay": repr(args.ema_decay),
        "finetune.versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                             f"peft {peft.__version__}",
        "finetune.data": os.path.basename(args.data),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m avq_finetune train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(ap)
    args = ap.parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
