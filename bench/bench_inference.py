"""Inference cost of anytime prediction vs a plain forward pass, and of stopping early at head k.

Prints (each a median over --repeats of ratios measured within one repeat):
- all-heads forward / plain forward (same backbone, final head only): target <= 1.05;
- forward(until=k) / forward(until=K-1) for every head k, beside flops(k) / flops(K-1) from
  ``anytime.flops.head_costs``, and the correlation between the two columns (early exit saves what it should).

    python -m bench.bench_inference                      # CIFAR-shaped ResANN-32, batch 32, CPU
    python -m bench.bench_inference --device cuda --batch 256 --n 18
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from anytime.flops import head_costs
from bench.baselines import add_model_args, model_pair
from bench.timing import bench_parser, ratio_line, setup


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    add_model_args(parser, n=5, batch=32)
    parser.add_argument("--number", type=int, default=3, help="timed forward passes per measurement")
    args = parser.parse_args()
    bench = setup(parser, args)
    device = bench.device

    model, plain = model_pair(args)
    model, plain = model.to(device).eval(), plain.to(device).eval()
    input_shape = (args.in_channels, args.image_size, args.image_size)
    x = torch.randn(args.batch, *input_shape, device=device)
    last = model.num_heads - 1
    if args.compile:  # forward(until=k) specialises on k: one more graph per head on top of dynamo's limit
        torch._dynamo.config.recompile_limit += model.num_heads
    amp = args.amp and device.type == "cuda"

    print(bench.header())
    print(
        f"# resann n={args.n} c={args.c} period={args.period} K={model.num_heads} "
        f"batch={args.batch} amp={amp} compile={args.compile}"
    )
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        ratios, plain_seconds = bench.interleaved_ratios(
            lambda: plain(x), {"all": lambda: model(x)}, number=args.number
        )
        print(
            ratio_line("inference all-heads/plain forward", ratios["all"], target="<= 1.05"),
            f"  plain: {args.batch / statistics.median(plain_seconds):.0f} images/s",
            flush=True,
        )
        early = {k: (lambda k=k: model(x, until=k)) for k in range(last)}
        ratios, _ = bench.interleaved_ratios(lambda: model(x, until=last), early, number=args.number)

    costs = head_costs(model, input_shape)
    time_ratios = [statistics.median(ratios[k]) for k in range(last)] + [1.0]
    flops_ratios = [cost / costs[-1] for cost in costs]
    for k in range(last):
        print(
            ratio_line(f"inference forward(until={k})/forward(until={last})", ratios[k]),
            f"  flops ratio {flops_ratios[k]:.3f}",
        )
    if model.num_heads > 2:
        correlation = float(np.corrcoef(time_ratios, flops_ratios)[0, 1])
        slope = float(np.polyfit(flops_ratios, time_ratios, 1)[0])
        print(
            f"inference time(k)/time(K) vs flops(k)/flops(K) pearson r: {correlation:.3f} "
            f"(over {model.num_heads} heads, medians of {args.repeats})  least-squares slope {slope:.3f}"
        )


if __name__ == "__main__":
    main()
