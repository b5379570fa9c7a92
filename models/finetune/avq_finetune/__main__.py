"""python -m avq_finetune {train,export} ..."""
import sys


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m avq_finetune {train,export} [options]\n"
              "  train   fine-tune DLP + EMA codebook + LoRA and export an AVQ file\n"
              "  export  write the AVQ file of a training checkpoint")
        return 0
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "train":
        from .train import main as m
    elif cmd == "export":
        from .export import main as m
    else:
        print(f"unknown command {cmd!r}", file=sys.stderr)
        return 2
    return m(argv)


sys.exit(main())
