#!/usr/bin/env python3
"""PyTorch CPU peer of bench-llama: the same LLaMA decoder (HF semantics) on
the same random-weight file, timed the same way (median of --repeat prefills
of --prompt positions, median per-token time of --decode steps with a KV
cache). bench-llama runs it and parses the `prefill_ms` / `decode_ms` lines.

Weights are widened once to float32 (--dtype float32, the usual way to run
PyTorch on a CPU without fast half-precision GEMMs) or kept in the file's
float16 / bfloat16 (--dtype float16 / bfloat16)."""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open
except ImportError as e:  # bench-llama reports the peer as unavailable
    sys.exit(f"PyTorch or safetensors missing: {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=611)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dt = getattr(torch, a.dtype)

    cfg = json.load(open(os.path.join(a.dir, "config.json")))["text_config"]
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = H // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    L = a.layers

    st = safe_open(os.path.join(a.dir, "model.safetensors"), "pt")
    P = "language_model.model"

    def get(name):
        return st.get_tensor(name).to(dt)

    emb = get(f"{P}.embed_tokens.weight")
    layers = []
    for l in range(L):
        p = f"{P}.layers.{l}."
        layers.append({k: get(p + k + ".weight") for k in (
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
            "mlp.down_proj")})
    norm = get(f"{P}.norm.weight")
    head = get("language_model.lm_head.weight")

    T = a.prompt + a.decode + 1
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    ang = torch.arange(T).float()[:, None] * inv[None]
    cos = torch.cat([ang, ang], -1).cos().to(dt)
    sin = torch.cat([ang, ang], -1).sin().to(dt)
    kc = torch.zeros(L, nkv, T, hd, dtype=dt)
    vc = torch.zeros(L, nkv, T, hd, dtype=dt)

    def rms(x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(dt)

    def rope(t, p0):  # [heads, n, hd]
        n = t.shape[1]
        c, s = cos[p0:p0 + n], sin[p0:p0 + n]
        t1, t2 = t[..., :hd // 2], t[..., hd // 2:]
        return t * c + torch.cat([-t2, t1], -1) * s

    def forward(x, p0):
        n = x.shape[0]
        for l, w in enumerate(layers):
            h = rms(x, w["input_layernorm"])
            q = F.linear(h, w["self_attn.q_proj"]).view(n, nh, hd).transpose(0, 1)
            k = F.linear(h, w["self_attn.k_proj"]).view(n, nkv, hd).transpose(0, 1)
            v = F.linear(h, w["self_attn.v_proj"]).view(n, nkv, hd).transpose(0, 1)
            q, k = rope(q, p0), rope(k, p0)
            kc[l, :, p0:p0 + n] = k
            vc[l, :, p0:p0 + n] = v
            K, V = kc[l, :, :p0 + n], vc[l, :, :p0 + n]
            if l == L - 1 and n > 1:
                # as avq does: past the cache writes, only the last row of
                # the last layer reaches the logits
                q, x, n = q[:, -1:], x[-1:], 1
            if nkv != nh:
                K = K.repeat_interleave(nh // nkv, 0)
                V = V.repeat_interleave(nh // nkv, 0)
            o = F.scaled_dot_product_attention(q, K, V, is_causal=(n > 1 and p0 == 0))
            x = x + F.linear(o.transpose(0, 1).reshape(n, H), w["self_attn.o_proj"])
            h = rms(x, w["post_attention_layernorm"])
            x = x + F.linear(F.silu(F.linear(h, w["mlp.gate_proj"])) * F.linear(h, w["mlp.up_proj"]),
                             w["mlp.down_proj"])
        return F.linear(rms(x[-1:], norm), head)

    g = torch.Generator().manual_seed(12345)
    ids = torch.randint(0, 32000, (a.prompt,), generator=g)
    with torch.inference_mode():
        x = emb[ids]
        forward(x[:1], 0)  # warm-up
        pf = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            logits = forward(x, 0)
            pf.append((time.perf_counter() - t0) * 1000)
        dc = []
        for i in range(a.decode):
            tok = torch.randint(0, 32000, (1,), generator=g)
            t0 = time.perf_counter()
            logits = forward(emb[tok], a.prompt + i)
            dc.append((time.perf_counter() - t0) * 1000)
        assert torch.isfinite(logits).all()
    print(f"peer torch {torch.__version__}, {a.dtype} weights, {a.threads} threads, {L} layers")
    print(f"prefill_ms {statistics.median(pf):.3f}")
    print(f"decode_ms {statistics.median(dc):.3f}")


if __name__ == "__main__":
    main()
