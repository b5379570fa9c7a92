"""AlignedVQ fine-tuning for LLaVA (DLP + EMA codebook + LoRA), exported to
AVQ files the C engine runs. See models/finetune/README.md and docs/FINETUNE.md."""
