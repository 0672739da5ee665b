"""The ``siglip train`` options: the argument parser shared by the ``siglip`` command and ``python -m
siglip.train``. Nothing heavy is imported here (the trainer is, when a run starts)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..cli_utils import configure_logging, run_reporting_errors
from ..data import default_workers
from .config import DEFAULTS, TrainConfig

TRAIN_EXAMPLES = """examples:
  # contrastive fine-tuning on a folder of images with same-name .txt captions
  siglip train --data photos/ --model google/siglip-base-patch16-224 --output runs/photos --epochs 3

  # from a CSV or JSONL with columns image,caption (paths relative to the file), 4 GPUs, global negatives
  torchrun --nproc_per_node 4 -m siglip.train --data pairs.csv --model google/siglip2-base-patch16-224 \\
      --output runs/pairs --batch-size 256 --bf16 --save-every 500

  # classification: root/<class>/*.jpg, a fresh head on a base checkpoint, labels from the folder names
  siglip train --task classification --data flowers/ --model google/siglip-base-patch16-224 --output runs/flowers

  # carry on after an interruption (same command plus --resume): same result as an uninterrupted run
  siglip train --data photos/ --model google/siglip-base-patch16-224 --output runs/photos --epochs 3 --resume

Output: OUT/checkpoint-NNNNNNN/ (config.json, model.safetensors, tokenizer and preprocessor files: usable with
`siglip classify --model`, siglip and transformers from_pretrained; plus training_state.pt), OUT/log.jsonl (one
line per step: loss, learning rate, mean logits of matched and unmatched pairs, ...), OUT/skipped.jsonl (inputs
that could not be used).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``siglip train`` (shared by the subcommand and ``python -m siglip.train``)."""
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--task",
        choices=["contrastive", "classification"],
        default=DEFAULTS["task"],
        help="contrastive: image-caption pairs, sigmoid loss (default); classification: class folders",
    )
    what.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="contrastive: a folder of images with same-name .txt captions, or a .csv / .jsonl with "
        "columns image,caption; classification: a folder root/<class>/<images>",
    )
    what.add_argument(
        "--model",
        required=True,
        metavar="NAME",
        help="base checkpoint: folder, hub id or 'siglip-demo' (its tokenizer and image processor are used)",
    )
    what.add_argument(
        "--from-scratch",
        action="store_true",
        help="random weights with --model's config.json instead of its weights",
    )
    what.add_argument(
        "--init-temperature",
        type=float,
        default=DEFAULTS["init_temperature"],
        metavar="T",
        help="with --from-scratch: initial exp(logit_scale) (default: 10, big_vision's)",
    )
    what.add_argument(
        "--init-bias",
        type=float,
        default=DEFAULTS["init_bias"],
        metavar="B",
        help="with --from-scratch: initial logit_bias (default: -10, big_vision's, meant for batches of thousands; "
        "about -log(global batch) learns faster with small ones)",
    )
    what.add_argument("--output", "-o", required=True, metavar="OUT", help="folder for checkpoints and logs")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs", type=int, default=DEFAULTS["epochs"], help="passes over the data (default: %(default)s)"
    )
    opt.add_argument(
        "--max-steps", type=int, default=DEFAULTS["max_steps"], metavar="N", help="optimizer steps (overrides --epochs)"
    )
    opt.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS["batch_size"],
        metavar="B",
        help="pairs (or images) per process and micro-batch; the global batch is B x processes x "
        "--grad-accum (default: %(default)s)",
    )
    opt.add_argument(
        "--grad-accum",
        type=int,
        default=DEFAULTS["grad_accum"],
        metavar="K",
        help="micro-batches per optimizer step; contrastive steps equal one batch of K x B (the "
        "embeddings are cached and the towers re-run, so negatives span all K) (default: %(default)s)",
    )
    opt.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak AdamW learning rate (default: %(default)s)")
    opt.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULTS["weight_decay"],
        help="AdamW decoupled weight decay on matrices (not biases, norms, scale) (default: %(default)s)",
    )
    opt.add_argument(
        "--warmup-steps",
        type=int,
        default=DEFAULTS["warmup_steps"],
        metavar="N",
        help="linear warm-up steps before the cosine decay (default: 5%% of the steps)",
    )
    opt.add_argument(
        "--max-grad-norm",
        type=float,
        default=DEFAULTS["max_grad_norm"],
        help="clip the gradient norm; 0 = off (default: %(default)s)",
    )
    opt.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the towers (weights stay fp32)")
    opt.add_argument(
        "--seed", type=int, default=DEFAULTS["seed"], help="seed for the data order, new weights and dropout"
    )

    run = parser.add_argument_group("running")
    run.add_argument(
        "--fsdp",
        action="store_true",
        help="shard weights, gradients and optimizer state (FSDP2) instead of replicating them (DDP)",
    )
    run.add_argument(
        "--device",
        default=DEFAULTS["device"],
        choices=["auto", "cpu", "cuda"],
        help="auto: CUDA (one GPU per process, NCCL) when available, else CPU (gloo)",
    )
    run.add_argument(
        "--save-every",
        type=int,
        default=DEFAULTS["save_every"],
        metavar="N",
        help="write a checkpoint every N steps, and always at the end (default: %(default)s)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in OUT (start fresh if there is none)",
    )
    run.add_argument(
        "--log-every", type=int, default=DEFAULTS["log_every"], metavar="N", help="print a log line every N steps"
    )
    run.add_argument(
        "--num-workers",
        type=int,
        default=default_workers(),
        help="processes decoding images per training process (default: %(default)s)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines (log.jsonl is kept)")


def cmd_train(args: argparse.Namespace) -> int:
    """Run a training job from parsed arguments (the ``siglip train`` handler)."""
    from .trainer import train

    train(TrainConfig.from_namespace(args))
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to the ``siglip`` command's subcommands."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune (or train) a SigLIP / SigLIP2 model, on one process or with torchrun",
        description="Contrastive or classification training; writes transformers-compatible checkpoints.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m siglip.train`` / ``torchrun -m siglip.train``: the same options as ``siglip train``."""
    parser = argparse.ArgumentParser(
        prog="python -m siglip.train",
        description="Contrastive or classification training; writes transformers-compatible checkpoints.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(quiet=args.quiet)
    return run_reporting_errors(cmd_train, args)
