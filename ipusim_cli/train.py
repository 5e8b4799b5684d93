"""``ipusim train``: train a model functionally on the simulated chip (simulator/train.py).

    ipusim train mnist-mlp --data digits --steps N [--batch B] [--optimizer sgd|adam|lamb]
                 [--lr LR] [--momentum M] [--chip gc200] [--seed S] [--json F]

The tiles' vertices compute the forward pass, the loss, the gradients and the optimizer's
update at every step; the loss of each step, the held-out accuracy (computed on the chip) and
the simulated time per step are printed.
"""
from __future__ import annotations

import json

from simulator.train import DATASETS, format_train, train

from .commands import help_of
from .options import check_output_path

__all__ = ["add_parser", "cmd_train"]


def cmd_train(args):
    check_output_path(args.json)
    width = len(str(args.steps))

    def show(step, loss):
        print(f"step {step:>{width}}  loss {loss:.4f}", flush=True)

    r = train(args.model, data=args.data, steps=args.steps, batch=args.batch, optimizer=args.optimizer,
              lr=args.lr, momentum=args.momentum, chip=args.chip, seed=args.seed, callback=show)
    print(format_train(r))
    if args.json:
        keep = ("model", "data", "optimizer", "batch", "steps", "losses", "accuracy", "train_samples",
                "test_samples", "seconds_per_step", "eval_seconds", "wall_seconds", "params")
        with open(args.json, "w") as f:
            json.dump({k: getattr(r, k) for k in keep}, f, indent=1)
        print(f"report    {args.json}")
    return 0


def add_parser(sub):
    p = sub.add_parser("train", help=help_of("train"))
    p.add_argument("model", help="built-in model name (mnist-mlp)")
    p.add_argument("--data", default="digits", choices=DATASETS,
                   help="data set: digits, scikit-learn's 1,797 8x8 handwritten digits (no download)")
    p.add_argument("--steps", type=int, default=100, metavar="N", help="training steps (default 100)")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="samples per step (default 32)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "lamb"),
                   help="sgd (with momentum), adam or lamb (default sgd)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.05 for sgd, 0.001 for adam, 0.01 for lamb)")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd's momentum (default 0.9)")
    p.add_argument("--chip", default="gc200", help="chip preset or .toml file (default gc200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the split and the batches")
    p.add_argument("--json", help="write the losses, accuracy and times here")
    return {"train": cmd_train}
