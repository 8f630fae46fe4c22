"""Rebuild ``docs/results.md``'s tables from the finished reproduction experiments.

    python -m experiments.results [--size cpu|full] [--out docs/results.md]

Which experiments ran, and with which params, comes from DVC (``dvc exp list``, ``dvc.api.params_show``); each
trained network's per-head errors from its cached run record (``anytime.record``) at the experiment's revision
(``dvc.api.read``). The generated part of the page sits between two markers; the text around it is kept.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
from pathlib import Path

import dvc.api
import numpy as np
from dvc.exceptions import FileMissingError, PathMissingError

from anytime.eann import MemberCurve
from anytime.metrics import milestone_heads
from anytime.record import RECORD_FILE, labels_file, parse_record
from anytime.weighting import eann_first_head
from experiments.run import run_log
from experiments.sets import ADAPTIVE, DEEP_CONST, OPT_OF, SIZES, WEIGHTINGS
from experiments.tables import (
    Trial,
    cost_to_reach,
    eann_rows,
    markdown_cost_to_reach,
    markdown_eann,
    markdown_weighting,
    weighting_table,
)
from pipelines.paths import member_name, opt_run_name

NAME = re.compile(r"^repro-(?P<size>\w+)-(?P<kind>weighting|eann)-s(?P<seed>\d+)$")


def finished(size: str) -> dict[str, list[tuple[str, int]]]:
    """Kind -> [(experiment name, seed)] of this size's finished experiments, in seed order."""
    listing = subprocess.run(
        ["dvc", "exp", "list", "--all-commits", "--name-only"], capture_output=True, text=True, check=True
    )
    found: dict[str, list[tuple[str, int]]] = {"weighting": [], "eann": []}
    for name in listing.stdout.split():
        match = NAME.match(name)
        if match and match["size"] == size:
            found[match["kind"]].append((name, int(match["seed"])))
    return {kind: sorted(runs, key=lambda r: r[1]) for kind, runs in found.items()}


def read_run(rev: str, folder: str, name: str) -> MemberCurve:
    """A trained network's curve from its cached run record at ``rev`` (the one reader of the format)."""
    path = f"outputs/{folder}/{name}/{RECORD_FILE}"
    try:
        text = dvc.api.read(path, repo=".", rev=rev)
    except (FileMissingError, PathMissingError):  # an experiment run before the record
        return read_format0_run(rev, folder, name)
    return MemberCurve.from_record(parse_record(text, f"{rev}:{path}"))


def read_format0_run(rev: str, folder: str, name: str) -> MemberCurve:
    """An experiment from before ``anytime.record`` (format 0, ``metrics.json``); drop once all are re-run."""
    metrics = json.loads(dvc.api.read(f"outputs/{folder}/{name}/metrics.json", repo=".", rev=rev))
    heads = len(metrics["flops"])
    untrained = eann_first_head(heads) if metrics.get("strategy", {}).get("eann", False) else 0
    return MemberCurve(name, metrics["flops"], metrics["val_top1"], metrics["test_top1"], untrained)


def read_trial(rev: str, seed: int, members: list[str], reference: str) -> Trial:
    """The experiment's members and the OPT(j) runs at ``reference``'s milestone heads."""
    curves = {name: read_run(rev, "members", name) for name in members}
    heads = sorted({h for h in milestone_heads(curves[reference].flops).values() if h is not None})
    opts = {opt_run_name(reference, j): read_run(rev, "opt", opt_run_name(reference, j)) for j in heads}
    labels = np.load(
        io.BytesIO(
            dvc.api.read(f"outputs/members/{reference}/{labels_file('test')}", repo=".", rev=rev, mode="rb")
        ),
        allow_pickle=False,
    )
    return Trial(seed, curves, opts, test_size=len(labels))


def eann_members(rev: str) -> list[str]:
    count = dvc.api.params_show(repo=".", rev=rev)["train"]["eann"]["members"]
    return [member_name(k) for k in range(count)]


def render(size: str) -> str:
    """The generated Markdown: run facts, then the three tables."""
    runs = finished(size)
    weighting = [read_trial(n, s, [*WEIGHTINGS, DEEP_CONST], OPT_OF) for n, s in runs["weighting"]]
    log_path = run_log(size)
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    walls = {name: entry.get("minutes") for name, entry in log.get("experiments", {}).items()}
    parts = [f"Experiments: {', '.join(n for kind in runs.values() for n, _ in kind) or 'none finished'}."]
    if log:
        parts.append(f"Hardware: {log.get('hardware', '?')}.")
        known = [m for m in walls.values() if m is not None]
        parts.append(
            f"Wall time: {sum(known):.0f} min over the {len(known)} experiment(s) timed (one at a time)."
        )
    if weighting:
        table = weighting_table(weighting, WEIGHTINGS, OPT_OF)
        parts += [
            f"### Weighting: relative increase in test error over OPT (%), seeds: {len(weighting)}",
            markdown_weighting(table, list(WEIGHTINGS)),
            f"### Small adaptive ANN vs the deeper CONST ANN ({DEEP_CONST})",
            markdown_cost_to_reach(
                {n: cost_to_reach(weighting, n, DEEP_CONST) for n in ADAPTIVE}, DEEP_CONST
            ),
        ]
    for name, seed in runs["eann"]:
        members = eann_members(name)
        trial = read_trial(name, seed, members, members[-1])
        parts += [
            f"### EANN vs OPT (seed {seed}): test error (%) at fractions of the deepest member's cost",
            markdown_eann(eann_rows(trial)),
        ]
    return "\n\n".join(parts)


def splice(page: str, generated: str, size: str) -> str:
    """Replace the text between this size's markers (append the block when the page has none)."""
    start, end = (
        f"<!-- results:{size}:start (python -m experiments.results) -->",
        f"<!-- results:{size}:end -->",
    )
    block = f"{start}\n{generated}\n{end}"
    if start in page and end in page:
        head, rest = page.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return page.rstrip() + "\n\n" + block + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.results", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    page = args.out.read_text() if args.out.is_file() else "# Results\n"
    args.out.write_text(splice(page, render(args.size), args.size))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
