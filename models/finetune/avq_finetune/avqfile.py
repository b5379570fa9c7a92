"""Reading and writing AVQ files (AVQ-SPEC section 2).

An AVQ file is a safetensors file holding the codebook, the two Dual Linear
Projections and, optionally, LoRA deltas for the LLM, with the split
configuration in its string metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from safetensors import safe_open
from safetensors.torch import save_file

AVQ_TENSORS = (
    "avq.codebook",
    "avq.dlp_in.weight",
    "avq.dlp_in.bias",
    "avq.dlp_in.gamma",
    "avq.dlp_out.weight",
    "avq.dlp_out.bias",
    "avq.dlp_out.gamma",
)


@dataclass
class AvqFile:
    """The contents of an AVQ file, every tensor as float32."""

    codebook: torch.Tensor  # [K, D]
    dlp_in_weight: torch.Tensor  # [D, D]
    dlp_in_bias: torch.Tensor  # [D]
    dlp_in_gamma: torch.Tensor  # [1]
    dlp_out_weight: torch.Tensor
    dlp_out_bias: torch.Tensor
    dlp_out_gamma: torch.Tensor
    layer: int
    residual: str  # "derive" or "side"
    side_bits: int
    metadata: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)  # name -> tensor, as stored

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    @property
    def index_bits(self) -> int:
        return index_bits_for(self.codebook_size)


def index_bits_for(k: int) -> int:
    if k < 2 or k > 65536 or (k & (k - 1)) != 0:
        raise ValueError(f"codebook size {k} is not a power of two in 2..65536")
    return k.bit_length() - 1


def load_avq(path: str) -> AvqFile:
    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
        names = set(f.keys())
        missing = [n for n in AVQ_TENSORS if n not in names]
        if missing:
            raise ValueError(f"{path}: missing tensors {missing}")
        t = {n: f.get_tensor(n).to(torch.float32) for n in AVQ_TENSORS}
        lora = {n: f.get_tensor(n) for n in names if n.startswith("lora.")}
    for key in ("avq.format", "avq.layer", "avq.site", "avq.residual",
                "avq.side_bits", "avq.index_bits", "avq.codebook_size"):
        if key not in meta:
            raise ValueError(f"{path}: metadata key {key} is missing")
    if meta["avq.format"] != "1":
        raise ValueError(f"{path}: avq.format {meta['avq.format']!r} is not 1")
    if meta["avq.site"] != "ln1":
        raise ValueError(f"{path}: avq.site {meta['avq.site']!r} is not ln1")
    residual = meta["avq.residual"]
    if residual not in ("derive", "side"):
        raise ValueError(f"{path}: avq.residual {residual!r}")
    k = t["avq.codebook"].shape[0]
    if int(meta["avq.codebook_size"]) != k or int(meta["avq.index_bits"]) != index_bits_for(k):
        raise ValueError(f"{path}: codebook size/index bits disagree with the codebook")
    layer = int(meta["avq.layer"])
    side_bits = int(meta["avq.side_bits"])
    if residual == "derive" and (layer != 0 or side_bits != 0):
        raise ValueError(f"{path}: derive needs layer 0 and no side bits")
    if residual == "side" and not 1 <= side_bits <= 16:
        raise ValueError(f"{path}: side needs 1..16 side bits")
    return AvqFile(
        codebook=t["avq.codebook"],
        dlp_in_weight=t["avq.dlp_in.weight"],
        dlp_in_bias=t["avq.dlp_in.bias"],
        dlp_in_gamma=t["avq.dlp_in.gamma"],
        dlp_out_weight=t["avq.dlp_out.weight"],
        dlp_out_bias=t["avq.dlp_out.bias"],
        dlp_out_gamma=t["avq.dlp_out.gamma"],
        layer=layer,
        residual=residual,
        side_bits=side_bits,
        metadata=meta,
        lora=lora,
    )


def format_number(x: float) -> str:
    """Metadata numbers: integers without a decimal point, others in %g."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def save_avq(path: str, avq: AvqFile, lora: dict | None = None,
             lora_alpha: float | None = None, lora_rank: int | None = None,
             extra_metadata: dict | None = None) -> str:
    """Write an AVQ file (all tensors F32). Returns the codebook id (16 hex)."""
    tensors = {
        "avq.codebook": avq.codebook,
        "avq.dlp_in.weight": avq.dlp_in_weight,
        "avq.dlp_in.bias": avq.dlp_in_bias,
        "avq.dlp_in.gamma": avq.dlp_in_gamma.reshape(1),
        "avq.dlp_out.weight": avq.dlp_out_weight,
        "avq.dlp_out.bias": avq.dlp_out_bias,
        "avq.dlp_out.gamma": avq.dlp_out_gamma.reshape(1),
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    for v in tensors.values():
        if not torch.isfinite(v).all():
            raise ValueError("refusing to export a non-finite AVQ tensor")
    meta = {
        "avq.format": "1",
        "avq.layer": str(avq.layer),
        "avq.site": "ln1",
        "avq.residual": avq.residual,
        "avq.side_bits": str(avq.side_bits),
        "avq.index_bits": str(avq.index_bits),
        "avq.codebook_size": str(avq.codebook_size),
    }
    if lora:
        if lora_alpha is None or lora_rank is None:
            raise ValueError("LoRA tensors need lora.alpha and lora.rank")
        for name, v in lora.items():
            if not name.startswith("lora."):
                raise ValueError(f"LoRA tensor name {name!r} must start with lora.")
            tensors[name] = v.detach().to("cpu", torch.float32).contiguous()
        meta["lora.alpha"] = format_number(lora_alpha)
        meta["lora.rank"] = str(int(lora_rank))
    for k, v in (extra_metadata or {}).items():
        meta.setdefault(k, str(v))
    save_file(tensors, path, metadata=meta)
    return codebook_id(tensors["avq.codebook"])


def codebook_id(codebook_f32: torch.Tensor) -> str:
    """The wire codebook id of an F32 codebook as this module stores it."""
    data = codebook_f32.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
