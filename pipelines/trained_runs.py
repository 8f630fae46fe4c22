"""Reading the train stage's outputs back (DESIGN.md "Member outputs"), for the assemble and report stages."""

from __future__ import annotations

from pathlib import Path

from anytime.eann import MemberCurve, load_member


def load_runs(root: Path) -> list[MemberCurve]:
    """Every run under ``root`` that has a ``metrics.json`` (none if ``root`` does not exist)."""
    if not root.is_dir():
        return []
    return [load_member(d) for d in sorted(root.iterdir()) if (d / "metrics.json").is_file()]
