"""Training step time of a ResANN (all heads, each weighting strategy) over the plain network's step.

The anytime side is the library's own loop, ``anytime.train.train_one_epoch`` (per-head losses, strategy
weights, strategy update after the step); the baseline is a textbook PyTorch step of the same backbone with
only its final head and plain cross-entropy (``bench.baselines``). Both see the same batches, already on
the device, with the same optimiser settings and AMP setting. Target: every ratio <= 1.10.

    python -m bench.bench_train_step                       # CIFAR-shaped ResANN-20, batch 64, CPU
    python -m bench.bench_train_step --device cuda --n 18 --batch 128 --steps 20 --repeats 7   # ResANN-110
"""

from __future__ import annotations

import argparse
import statistics

import torch

from anytime.train import make_grad_scaler, make_optimizer, train_one_epoch
from anytime.weighting import create_strategy
from bench.baselines import add_model_args, model_pair, plain_train_epoch
from bench.timing import Bench, bench_parser, ratio_line, setup

LOOP_ONLY = "library loop on the one-head net"
DEFAULT_STRATEGIES = ("sieve", "alternating:scheme=sieve", "adaloss", "rwm", "exp3", "avgl")


def parse_strategy(text: str) -> tuple[str, dict[str, object]]:
    """``name`` or ``name:key=value,key=value`` (values parsed as int, then float, else kept as text)."""
    name, _, options = text.partition(":")
    kwargs: dict[str, object] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"strategy option {item!r} in {text!r} must look like key=value")
        for convert in (int, float):
            try:
                kwargs[key] = convert(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace, Bench]:
    parser = bench_parser(__doc__.splitlines()[0])
    add_model_args(parser, n=3, batch=64)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per measurement")
    parser.add_argument(
        "--strategies",
        nargs="+",
        type=parse_strategy,
        default=[parse_strategy(s) for s in DEFAULT_STRATEGIES],
        metavar="NAME[:KEY=VALUE,...]",
    )
    args = parser.parse_args()
    bench = setup(parser, args)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return parser, args, bench


def report(bench: Bench, ratios: dict[str, list[float]], plain_rate: float, strategies: list[str]) -> None:
    """A ratio line per strategy (with its images/s), the loop-only diagnostic and the plain rate."""
    for name in strategies:
        rate = plain_rate / statistics.median(ratios[name])
        print(
            ratio_line(f"train step {name}/plain", ratios[name], target="<= 1.10"),
            f"  {rate:.0f} images/s ({bench.clock_name} clock)",
            flush=True,
        )
    print(
        ratio_line(f"train step {LOOP_ONLY}/plain", ratios[LOOP_ONLY]),
        "  diagnostic: what anytime.train's loop adds without extra heads",
    )
    print(f"train step plain (final head only): {plain_rate:.0f} images/s ({bench.clock_name} clock)")


def main() -> None:
    parser, args, bench = parse_args()
    device = bench.device
    model, plain = model_pair(args)
    model, plain = model.to(device), plain.to(device)
    try:
        strategies = {
            name: create_strategy(kind, num_heads=model.num_heads, **kwargs)
            for kind, kwargs in args.strategies
            for name in [kind + "".join(f" {k}={v}" for k, v in kwargs.items())]
        }
    except (ValueError, TypeError) as error:
        parser.error(f"--strategies: {error}")
    images = torch.randn(args.batch, args.in_channels, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    batches = [(images, labels)] * args.steps

    optimizer, plain_optimizer = make_optimizer(model), make_optimizer(plain)
    scaler, plain_scaler = make_grad_scaler(device, amp=args.amp), make_grad_scaler(device, amp=args.amp)
    amp = args.amp and device.type == "cuda"

    def library_epoch(net, net_optimizer, net_scaler, strategy):
        # epoch=1: no-regret learners only start learning after epoch 0 (METHOD.md §5), so time them learning
        return lambda: train_one_epoch(
            net,
            batches,
            net_optimizer,
            strategy,
            device=device,
            epoch=1,
            scaler=net_scaler,
            amp=amp,
            progress=False,
        )

    def plain_epoch():
        plain_train_epoch(plain, batches, plain_optimizer, device=device, scaler=plain_scaler, amp=amp)

    print(bench.header())
    print(
        f"# resann n={args.n} c={args.c} period={args.period} K={model.num_heads} "
        f"input {args.in_channels}x{args.image_size}x{args.image_size} batch={args.batch} "
        f"steps/measurement={args.steps} amp={amp} compile={args.compile}"
    )
    candidates = {name: library_epoch(model, optimizer, scaler, s) for name, s in strategies.items()}
    # Diagnostic split of the cost: the library loop alone, on the one-head net with weight 1.
    loop_only = create_strategy("const", num_heads=1)
    candidates[LOOP_ONLY] = library_epoch(plain, plain_optimizer, plain_scaler, loop_only)
    ratios, plain_seconds = bench.interleaved_ratios(plain_epoch, candidates, number=1)
    report(bench, ratios, args.batch * args.steps / statistics.median(plain_seconds), list(strategies))


if __name__ == "__main__":
    main()
