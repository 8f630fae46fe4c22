"""The method is documented inside the repository: every citation points to an existing docs/METHOD.md §N.

Code, docs and params cite the method as ``METHOD.md §N``; none of them may cite a method document that
lives outside the project.
"""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "METHOD.md"
# Citations of a method document outside the repository, in any capitalisation.
OUTSIDE_CITATION = re.compile(r"spec §|shared/spec|anytime-spec", re.IGNORECASE)
METHOD_CITATION = re.compile(r"METHOD\.md §(\d+)")
SECTION_HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)
EXPECTED_SECTIONS = list(range(1, 9))  # §1 Architectures .. §8 Claims, numbered for citation


def tracked_texts() -> dict[str, str]:
    """Every tracked UTF-8 text file by repository path, except this one (it names the patterns)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    texts = {}
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def test_method_sections_are_numbered_for_citation():
    assert [int(n) for n in SECTION_HEADING.findall(METHOD.read_text())] == EXPECTED_SECTIONS


def test_nothing_cites_a_method_document_outside_the_repository():
    offenders = [
        f"{name}:{line_no}: {line.strip()}"
        for name, text in tracked_texts().items()
        for line_no, line in enumerate(text.splitlines(), start=1)
        if OUTSIDE_CITATION.search(line)
    ]
    assert not offenders, "cite docs/METHOD.md §N instead:\n" + "\n".join(offenders)


def test_every_method_citation_names_an_existing_section():
    sections = {int(n) for n in SECTION_HEADING.findall(METHOD.read_text())}
    texts = tracked_texts()
    cited = {(name, int(n)) for name, text in texts.items() for n in METHOD_CITATION.findall(text)}
    assert len({name for name, _ in cited}) >= 20  # the library, pipelines and tests all cite it
    missing = sorted(f"{name}: METHOD.md §{n}" for name, n in cited if n not in sections)
    assert not missing, "no such section in docs/METHOD.md:\n" + "\n".join(missing)
