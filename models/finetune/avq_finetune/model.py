"""Loading a llava-hf model with AlignedVQ inserted, LoRA, and export."""

from __future__ import annotations

import re

import torch

from .avqfile import AvqFile, load_avq, save_avq
from .quantizer import AlignedVQ, find_avq, insert_avq, vision_parts

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load_llava(model_dir: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
    model.to(device)
    model.config.use_cache = False
    return model


def build_avq_model(model_dir: str, avq_path: str, dtype=torch.float32, device="cpu",
                    **avq_kwargs):
    """The LLaVA model with the AVQ file's split inserted (frozen base)."""
    model = load_llava(model_dir, dtype, device)
    for p in model.parameters():
        p.requires_grad_(False)
    avq_file = load_avq(avq_path)
    eps = model.config.vision_config.layer_norm_eps
    avq = AlignedVQ(avq_file, eps=eps, **avq_kwargs).to(device)
    insert_avq(model, avq)
    return model, avq, avq_file


def add_lora(model, rank: int, alpha: float, targets=DEFAULT_LORA_TARGETS,
             dropout: float = 0.0, layers: list[int] | None = None):
    """Wrap the LLM's linear layers named in `targets` with LoRA (peft).

    Only the language model is adapted (the vision tower and projector have
    no place in an AVQ file). Plain LoRA: scaling alpha / rank, no rsLoRA,
    no DoRA, so W' = W + (alpha/rank) B A is exact.
    """
    from peft import LoraConfig, get_peft_model

    names = "|".join(re.escape(t) for t in targets)
    layer_pat = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
    pattern = rf".*language_model\.layers\.{layer_pat}\..*\.(?:{names})$"
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern,
                     bias="none", use_rslora=False, use_dora=False, init_lora_weights=True)
    peft_model = get_peft_model(model, cfg)
    return peft_model


def hub_name(module_name: str) -> str:
    """transformers-5 module name of an LLM linear -> hub base name (spec 2).

    model.language_model.layers.3.self_attn.q_proj
      -> language_model.model.layers.3.self_attn.q_proj
    """
    n = module_name
    for prefix in ("base_model.model.",):
        if n.startswith(prefix):
            n = n[len(prefix):]
    if n.startswith("model.language_model."):
        return "language_model.model." + n[len("model.language_model."):]
    if n == "lm_head":
        return "language_model.lm_head"
    raise ValueError(f"{module_name}: not a language-model linear")


def lora_tensors(model) -> tuple[dict, float, int]:
    """lora.<base>.lora_A [r, in] and lora_B [out, r] of a peft model."""
    from peft.tuners.lora import LoraLayer

    out = {}
    alpha = rank = None
    for name, mod in model.named_modules():
        if not isinstance(mod, LoraLayer) or "default" not in getattr(mod, "lora_A", {}):
            continue
        base = hub_name(name)
        r = mod.r["default"]
        a = mod.lora_alpha["default"]
        if abs(mod.scaling["default"] - a / r) > 1e-12:
            raise ValueError(f"{name}: LoRA scaling is not alpha/r (rsLoRA?)")
        if rank is None:
            rank, alpha = r, a
        elif (rank, alpha) != (r, a):
            raise ValueError("an AVQ file holds one LoRA rank and alpha")
        out[f"lora.{base}.lora_A"] = mod.lora_A["default"].weight.detach().float().cpu()
        out[f"lora.{base}.lora_B"] = mod.lora_B["default"].weight.detach().float().cpu()
    return out, alpha, rank


def export_avq(model, path: str, extra_metadata: dict | None = None) -> str:
    """Write the trained codebook, DLP and LoRA into an AVQ file."""
    avq = find_avq(model)
    lora, alpha, rank = lora_tensors(model)
    meta = {"avq.trainer": "models/finetune (PyTorch: DLP + EMA codebook + LoRA)"}
    meta.update(extra_metadata or {})
    return save_avq(path, avq.to_avq_file(), lora=lora or None, lora_alpha=alpha,
                    lora_rank=rank, extra_metadata=meta)


def load_exported(model_dir: str, avq_path: str, dtype=torch.float32, device="cpu"):
    """An AVQ file (with lora.*) applied to the base model the way the C
    engine does it: split inserted, W' = W + (alpha/r) B A merged."""
    model, avq, f = build_avq_model(model_dir, avq_path, dtype, device, dlp_init="file")
    if f.lora:
        alpha = float(f.metadata["lora.alpha"])
        rank = int(f.metadata["lora.rank"])
        scale = alpha / rank
        params = dict(model.named_parameters())
        bases = sorted({n[len("lora."):-len(".lora_A")] for n in f.lora if n.endswith(".lora_A")})
        for base in bases:
            a = f.lora[f"lora.{base}.lora_A"].double()
            b = f.lora[f"lora.{base}.lora_B"].double()
            wname = module_name_from_hub(base) + ".weight"
            w = params[wname]
            with torch.no_grad():
                w.copy_((w.double() + scale * (b @ a)).to(w.dtype))
    model.eval()
    return model, avq, f


def module_name_from_hub(base: str) -> str:
    if base.startswith("language_model.model."):
        return "model.language_model." + base[len("language_model.model."):]
    if base == "language_model.lm_head":
        return "lm_head"
    raise ValueError(f"{base}: not a hub LLM name")


__all__ = [
    "AlignedVQ", "AvqFile", "DEFAULT_LORA_TARGETS", "add_lora", "build_avq_model",
    "export_avq", "hub_name", "load_exported", "load_llava", "lora_tensors", "vision_parts",
]
