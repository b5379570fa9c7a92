"""AlignedVQ at the ln1 site of a CLIP encoder layer (AVQ-SPEC section 5).

The module computes, for the residual stream x_L entering split layer L,

  edge:  mu, sigma per token; z = LN1(x_L); u = z + tanh(g_in)(W_in z + b_in);
         i = argmin_k ||e_k||^2 - 2 u.e_k; side information (residual "side")
  cloud: q = e_i; zhat = q + tanh(g_out)(W_out q + b_out);
         xhat from zhat (+ side information), "derive" or "side"

and the layer continues with h = xhat + Attn_L(zhat). Training uses a
straight-through estimator for the argmin, a commitment loss
beta * ||u - sg(q)||^2 and EMA updates of the codebook with dead-code
restarts; the codebook itself is a buffer, never touched by the optimiser.

Everything here runs in float32 (the derive solve in float64, as the C
engine does) whatever the dtype of the surrounding model.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from .avqfile import AvqFile


class AlignedVQ(nn.Module):
    def __init__(self, avq: AvqFile, eps: float, beta: float = 0.25,
                 ema_decay: float = 0.99, ema_eps: float = 1e-5,
                 dead_fraction: float = 0.03, dlp_init: str = "auto",
                 dlp_init_std: float | None = None, seed: int = 0):
        super().__init__()
        K, D = avq.codebook.shape
        self.layer = avq.layer
        self.residual = avq.residual
        self.side_bits = avq.side_bits
        self.eps = float(eps)
        self.beta = float(beta)
        self.ema_decay = float(ema_decay)
        self.ema_eps = float(ema_eps)
        self.dead_fraction = float(dead_fraction)
        self.codebook_size = K
        self.dim = D

        self.dlp_in = nn.Linear(D, D)
        self.dlp_out = nn.Linear(D, D)
        self.dlp_in_gamma = nn.Parameter(avq.dlp_in_gamma.reshape(1).clone())
        self.dlp_out_gamma = nn.Parameter(avq.dlp_out_gamma.reshape(1).clone())
        with torch.no_grad():
            self.dlp_in.weight.copy_(avq.dlp_in_weight)
            self.dlp_in.bias.copy_(avq.dlp_in_bias)
            self.dlp_out.weight.copy_(avq.dlp_out_weight)
            self.dlp_out.bias.copy_(avq.dlp_out_bias)
        identity = all(float(t.abs().max()) == 0.0 for t in (
            avq.dlp_in_weight, avq.dlp_in_bias, avq.dlp_out_weight, avq.dlp_out_bias))
        if dlp_init == "random" or (dlp_init == "auto" and identity):
            # An identity DLP from `avq train-codebook` has W = 0, b = 0 and
            # gamma = 0: every gradient of that point is zero. Give W a small
            # random start; with gamma = 0 the function is unchanged (u = z).
            g = torch.Generator().manual_seed(seed)
            std = dlp_init_std if dlp_init_std is not None else 1.0 / math.sqrt(D)
            with torch.no_grad():
                self.dlp_in.weight.copy_(torch.randn(D, D, generator=g) * std)
                self.dlp_out.weight.copy_(torch.randn(D, D, generator=g) * std)
                self.dlp_in.bias.zero_()
                self.dlp_out.bias.zero_()
                self.dlp_in_gamma.zero_()
                self.dlp_out_gamma.zero_()
        elif dlp_init not in ("auto", "file", "random"):
            raise ValueError(f"dlp_init {dlp_init!r}: auto, file or random")

        self.register_buffer("codebook", avq.codebook.clone().float())
        # EMA state: N_k (cluster size) and m_k (sum of assigned u).
        self.register_buffer("ema_count", torch.ones(K))
        self.register_buffer("ema_sum", avq.codebook.clone().float())
        # Statistics gathered since the last ema_step (gradient accumulation
        # sums micro-batches into one update).
        self.register_buffer("pending_count", torch.zeros(K), persistent=False)
        self.register_buffer("pending_sum", torch.zeros(K, D), persistent=False)
        self.register_buffer("usage_count", torch.zeros(K), persistent=False)
        self._restart_pool: torch.Tensor | None = None
        self._restart_gen = torch.Generator().manual_seed(seed + 1)
        self.commit_loss: torch.Tensor | None = None
        self.last_indices: torch.Tensor | None = None
        self.last_margins: torch.Tensor | None = None
        self.last_zhat: torch.Tensor | None = None
        self.last_xhat: torch.Tensor | None = None
        self.last_side_codes = self.last_side_ranges = self.last_side_margin = None
        self.record = False  # keep last_* (eval / reference dumps)

    # ---- edge --------------------------------------------------------------

    def gate_in(self) -> torch.Tensor:
        return torch.tanh(self.dlp_in_gamma)

    def gate_out(self) -> torch.Tensor:
        return torch.tanh(self.dlp_out_gamma)

    def nearest(self, u: torch.Tensor):
        """Row argmin of ||e||^2 - 2 u.e (ties: lowest k) and the margin."""
        with torch.no_grad():
            cb = self.codebook
            sq = (cb.double() ** 2).sum(-1).float()
            flat = u.reshape(-1, self.dim)
            dist = sq.unsqueeze(0) - 2.0 * (flat @ cb.t())
            top = torch.topk(dist, 2, dim=-1, largest=False, sorted=True)
            idx = torch.argmin(dist, dim=-1)  # first minimum on ties
            margin = top.values[:, 1] - top.values[:, 0]
        return idx.reshape(u.shape[:-1]), margin.reshape(u.shape[:-1])

    @staticmethod
    def _side_step(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
        return torch.where(hi == lo, torch.ones_like(lo), (hi - lo) / float((1 << bits) - 1))

    def side_info(self, mu: torch.Tensor, sigma: torch.Tensor):
        """Per frame (min, max) of mu and log(sigma), per-token codes.

        mu, sigma: [B, T]. Returns codes [B, T, 2] (int64) and ranges [B, 4],
        computed in float32 with half-to-even rounding, as the C encoder.
        """
        b = self.side_bits
        ls = torch.log(sigma)
        mlo, mhi = mu.min(-1).values, mu.max(-1).values
        llo, lhi = ls.min(-1).values, ls.max(-1).values
        ms = self._side_step(mlo, mhi, b)
        lss = self._side_step(llo, lhi, b)
        top = float((1 << b) - 1)
        qm = torch.clamp(torch.round((mu - mlo[:, None]) / ms[:, None]), 0, top)
        ql = torch.clamp(torch.round((ls - llo[:, None]) / lss[:, None]), 0, top)
        codes = torch.stack([qm, ql], -1).long()
        ranges = torch.stack([mlo, mhi, llo, lhi], -1)
        if self.record:
            # Distance (in steps) of each value from a rounding boundary:
            # near 0, a 1e-7 difference in x_L may move the code by one.
            raw = torch.stack([(mu - mlo[:, None]) / ms[:, None], (ls - llo[:, None]) / lss[:, None]], -1)
            self.last_side_codes = codes
            self.last_side_ranges = ranges
            self.last_side_margin = (raw - torch.floor(raw) - 0.5).abs()
        return codes, ranges

    def side_dequant(self, codes: torch.Tensor, ranges: torch.Tensor):
        b = self.side_bits
        ms = self._side_step(ranges[:, 0], ranges[:, 1], b)
        lss = self._side_step(ranges[:, 2], ranges[:, 3], b)
        mu = ranges[:, 0:1] + codes[..., 0].float() * ms[:, None]
        sigma = torch.exp(ranges[:, 2:3] + codes[..., 1].float() * lss[:, None])
        return mu, sigma

    # ---- cloud -------------------------------------------------------------

    def dlp_out_apply(self, q: torch.Tensor) -> torch.Tensor:
        return q + self.gate_out() * self.dlp_out(q)

    def derive_residual(self, zhat: torch.Tensor, ln1_w, ln1_b, pre_w, pre_b) -> torch.Tensor:
        """x^_0 from zhat alone (AVQ-SPEC 5, derive), in float64."""
        z = zhat.double()
        g1, b1 = ln1_w.double(), ln1_b.double()
        gp, bp = pre_w.double(), pre_b.double()
        u = (z - b1) / g1
        a = u / gp
        bvec = 1.0 / gp
        cvec = bp / gp
        A = a.mean(-1, keepdim=True)
        B = bvec.mean()
        C = cvec.mean()
        p = a - (A / B) * bvec
        qv = (C / B) * bvec - cvec
        P = (p * p).mean(-1, keepdim=True)
        Q = (p * qv).mean(-1, keepdim=True)
        R = (qv * qv).mean() - 1.0
        disc = torch.clamp(Q * Q - P * R, min=0.0)
        # sqrt'(0) is infinite: keep the gradient finite where disc == 0.
        root = torch.sqrt(torch.where(disc > 0, disc, torch.ones_like(disc)))
        root = torch.where(disc > 0, root, torch.zeros_like(root))
        safe_P = torch.where(P > 0, P, torch.ones_like(P))
        s = torch.where(P > 0, (-Q + root) / safe_P, torch.zeros_like(P))
        m = (C - s * A) / B
        return (m + s * u).float()

    # ---- the split ---------------------------------------------------------

    def forward(self, x: torch.Tensor, ln1: nn.LayerNorm, pre_ln: nn.LayerNorm | None):
        """x: x_L [B, T, D]. Returns (zhat, xhat) in float32."""
        x = x.float()
        ln1_w, ln1_b = ln1.weight.float(), ln1.bias.float()
        # Statistics in float64, as the C engine's LayerNorm (two passes).
        xd = x.double()
        md = xd.mean(-1, keepdim=True)
        vd = ((xd - md) ** 2).mean(-1, keepdim=True) + self.eps
        mu = md.squeeze(-1).float()
        sigma = torch.sqrt(vd).squeeze(-1).float()
        inv = torch.rsqrt(vd).float()
        z = (x - mu.unsqueeze(-1)) * inv * ln1_w + ln1_b
        u = z + self.gate_in() * self.dlp_in(z)
        idx, margin = self.nearest(u)
        q = F.embedding(idx, self.codebook)
        if self.training:
            self.commit_loss = F.mse_loss(u, q.detach())
            with torch.no_grad():
                flat_i = idx.reshape(-1)
                flat_u = u.detach().reshape(-1, self.dim)
                cnt = torch.bincount(flat_i, minlength=self.codebook_size).float()
                self.pending_count += cnt
                self.usage_count += cnt
                self.pending_sum.index_add_(0, flat_i, flat_u)
                self._restart_pool = flat_u
            q = u + (q - u).detach()  # straight-through
        else:
            self.commit_loss = None
        zhat = self.dlp_out_apply(q)
        if self.residual == "derive":
            if pre_ln is None:
                raise ValueError("derive needs pre_layrnorm")
            xhat = self.derive_residual(zhat, ln1_w, ln1_b, pre_ln.weight.float(),
                                        pre_ln.bias.float())
        else:
            with torch.no_grad():
                codes, ranges = self.side_info(mu.detach(), sigma.detach())
                mu_h, sigma_h = self.side_dequant(codes, ranges)
            xhat = mu_h.unsqueeze(-1) + sigma_h.unsqueeze(-1) * (zhat - ln1_b) / ln1_w
        if self.record:
            self.last_indices = idx.detach()
            self.last_margins = margin.detach()
            self.last_zhat = zhat.detach()
            self.last_xhat = xhat.detach()
        return zhat, xhat

    # ---- EMA codebook ------------------------------------------------------

    @torch.no_grad()
    def ema_step(self) -> int:
        """Apply the statistics gathered since the last call. Returns the
        number of dead codes restarted."""
        n = self.pending_count
        if float(n.sum()) == 0:
            return 0
        d = self.ema_decay
        self.ema_count.mul_(d).add_(n, alpha=1 - d)
        self.ema_sum.mul_(d).add_(self.pending_sum, alpha=1 - d)
        total = self.ema_count.sum()
        K = self.codebook_size
        smoothed = (self.ema_count + self.ema_eps) / (total + K * self.ema_eps) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))
        restarted = 0
        dead = self.dead_codes()
        if dead.numel() and self._restart_pool is not None and self.dead_fraction > 0:
            pool = self._restart_pool
            pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=self._restart_gen)
            new = pool[pick.to(pool.device)].to(self.codebook)
            self.codebook[dead] = new
            level = total / K  # restarted at the mean usage: a fair chance
            self.ema_count[dead] = level
            self.ema_sum[dead] = new * level
            restarted = int(dead.numel())
        self.pending_count.zero_()
        self.pending_sum.zero_()
        return restarted

    def dead_codes(self) -> torch.Tensor:
        """Codes whose EMA usage fell below dead_fraction of the mean usage."""
        mean = self.ema_count.sum() / self.codebook_size
        thresh = self.dead_fraction * mean
        return torch.nonzero(self.ema_count < thresh * (1 - 1e-6)).reshape(-1)

    @torch.no_grad()
    def usage_report(self, reset: bool = True) -> dict:
        c = self.usage_count
        total = float(c.sum())
        if total > 0:
            p = c / total
            nz = p[p > 0]
            perplexity = float(torch.exp(-(nz * nz.log()).sum()))
        else:
            perplexity = 0.0
        rep = {
            "perplexity": perplexity,
            "used": int((c > 0).sum()),
            "dead": int(self.dead_codes().numel()),
            "codes": self.codebook_size,
        }
        if reset:
            self.usage_count.zero_()
        return rep

    def to_avq_file(self, metadata: dict | None = None) -> AvqFile:
        return AvqFile(
            codebook=self.codebook.detach().float().cpu(),
            dlp_in_weight=self.dlp_in.weight.detach().float().cpu(),
            dlp_in_bias=self.dlp_in.bias.detach().float().cpu(),
            dlp_in_gamma=self.dlp_in_gamma.detach().float().cpu(),
            dlp_out_weight=self.dlp_out.weight.detach().float().cpu(),
            dlp_out_bias=self.dlp_out.bias.detach().float().cpu(),
            dlp_out_gamma=self.dlp_out_gamma.detach().float().cpu(),
            layer=self.layer,
            residual=self.residual,
            side_bits=self.side_bits,
            metadata=dict(metadata or {}),
        )


def _split_layer_forward(self, hidden_states, attention_mask=None, **kwargs):
    """Forward of the CLIP encoder layer that carries the split.

    h = x^_L + Attn_L(zhat); x_{L+1} = h + MLP_L(LN2_L(h)).
    """
    avq: AlignedVQ = self.avq
    zhat, xhat = avq(hidden_states, self.layer_norm1, self._avq_pre_ln[0])
    dtype = hidden_states.dtype
    attn, _ = self.self_attn(hidden_states=zhat.to(dtype), attention_mask=attention_mask, **kwargs)
    h = xhat.to(dtype) + attn
    return h + self.mlp(self.layer_norm2(h))


def vision_parts(llava):
    """(vision transformer with .encoder/.pre_layrnorm) of a transformers 5
    LlavaForConditionalGeneration."""
    vt = llava.model.vision_tower
    return getattr(vt, "vision_model", vt)


def insert_avq(llava, avq: AlignedVQ) -> AlignedVQ:
    """Put the split into layer avq.layer of the vision tower (in place).

    The layer object stays a CLIPEncoderLayer (transformers records
    hidden_states by hooks on that class); only its forward changes.
    """
    vm = vision_parts(llava)
    layers = vm.encoder.layers
    n_run = len(layers) + 1 + llava.config.vision_feature_layer \
        if llava.config.vision_feature_layer < 0 else llava.config.vision_feature_layer
    if not 0 <= avq.layer < min(len(layers), n_run):
        raise ValueError(f"split layer {avq.layer} outside 0..{min(len(layers), n_run) - 1}")
    layer = layers[avq.layer]
    if avq.residual == "derive" and avq.layer != 0:
        raise ValueError("derive is only defined at layer 0")
    layer.avq = avq
    # A tuple keeps pre_layrnorm out of this layer's parameters/state_dict.
    layer._avq_pre_ln = (vm.pre_layrnorm,)
    layer.forward = types.MethodType(_split_layer_forward, layer)
    return avq


def find_avq(model) -> AlignedVQ:
    for m in model.modules():
        if isinstance(m, AlignedVQ):
            return m
    raise ValueError("no AlignedVQ in this model")
