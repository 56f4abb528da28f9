"""Command-line options shared by the reference models' trainers."""

from __future__ import annotations

import argparse


def add_training_options(
    parser: argparse.ArgumentParser, batch_size: int, lr: float, minutes: float = 10.0
) -> None:
    """Seed, batch, learning rate, the time budget and data workers."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--minutes", type=float, default=minutes, help="training time budget")
    parser.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0: by time)"
    )
    parser.add_argument("--partial-captions", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2)


def card_basics(
    arch: str,
    module: str,
    argv: list[str] | None,
    args: argparse.Namespace,
    steps: int,
    data_seconds: float,
    train_seconds: float,
) -> dict[str, object]:
    """The first fields of a model card: how to reproduce the run and what it cost."""
    import sys

    import torch

    return {
        "architecture": arch,
        "command": f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "steps": steps,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
