"""FLOPs overhead of the anytime heads: one all-heads forward vs the plain network (final head only).

Counts are exact (``anytime.flops``, i.e. torch's FlopCounterMode), so there is nothing to
repeat. The script also checks that ``anytime.flops.head_costs``'s final entry equals the plain network's
cost, which is what makes the per-head costs comparable to a plain ResNet of the same depth.

    python -m bench.bench_flops
"""

from __future__ import annotations

import torch

from anytime.flops import forward_flops, head_costs
from anytime.models import AnytimeNet, create_model
from bench.baselines import plain_counterpart
from bench.timing import bench_parser, setup


def overhead_line(label: str, model: AnytimeNet, input_shape: tuple[int, ...], device: torch.device) -> str:
    model = model.to(device).eval()
    plain = plain_counterpart(model).to(device).eval()
    plain_flops = forward_flops(plain, input_shape)
    costs = head_costs(model, input_shape)
    if costs[-1] != plain_flops:
        raise RuntimeError(
            f"{label}: head_costs()[-1] = {costs[-1]} but the plain network costs {plain_flops}"
        )
    ratio = forward_flops(model, input_shape) / plain_flops
    return (
        f"flops all-heads/plain {label} K={model.num_heads}: {ratio:.6f} (exact count)"
        f"  plain {plain_flops / 1e6:.1f} MFLOPs/sample, first head at {costs[0] / plain_flops:.3f} of it"
    )


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--cifar-n", type=int, nargs="*", default=[5, 9, 18], help="units per group (6n+2)")
    parser.add_argument("--cifar-c", type=int, default=16)
    parser.add_argument("--cifar-periods", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--classes", type=int, default=10, help="classes of the CIFAR-shaped layouts")
    parser.add_argument("--imagenet", nargs="*", default=["resann26", "resann50", "resann101"])
    parser.add_argument("--imagenet-size", type=int, default=224)
    args = parser.parse_args()
    device = setup(parser, args).device

    for n in args.cifar_n:
        for period in args.cifar_periods:
            model = create_model(
                "resann", num_classes=args.classes, in_channels=3, n=n, c=args.cifar_c, period=period
            )
            label = f"resann{6 * n + 2} (n={n}, c={args.cifar_c}, period={period}, 3x32x32)"
            print(overhead_line(label, model, (3, 32, 32), device), flush=True)
    size = args.imagenet_size
    for name in args.imagenet:
        model = create_model(name, num_classes=1000)
        label = f"{name} (period={model.config.get('period', 2)}, 3x{size}x{size})"
        print(overhead_line(label, model, (3, size, size), device), flush=True)


if __name__ == "__main__":
    main()
