"""Every relative link of the README and ``docs/`` points at a file of the repository, and every
``#anchor`` into a Markdown file at one of its headings (GitHub's heading slugs: lower case,
punctuation other than ``-`` and ``_`` dropped, spaces as ``-``, repeats numbered ``-1``, ``-2``).
Result pages move when a default changes (records are archived under ``docs/results/``); a link
left behind would otherwise fail silently for the reader."""
from __future__ import annotations

import os
import re
from functools import lru_cache

import pytest

from tests.conftest import REPO

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"#{1,6}\s+(.*)")


def _outside_fences(path: str):
    """``(line number, line)`` of a Markdown file, code blocks left out."""
    fence = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("```"):
                fence = not fence
                continue
            if not fence:
                yield number, line.rstrip("\n")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text (before numbering repeats)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: str) -> frozenset[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    out, seen = set(), {}
    for _, line in _outside_fences(path):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def markdown_files() -> list[str]:
    files = [os.path.join(REPO, "README.md")]
    for folder, _, names in os.walk(os.path.join(REPO, "docs")):
        files += [os.path.join(folder, n) for n in names if n.endswith(".md")]
    return sorted(files)


def broken_links(path: str) -> list[str]:
    """``'FILE:LINE: TARGET (why)'`` for each relative link of ``path`` that leads nowhere."""
    bad = []
    for number, line in _outside_fences(path):
        for target in LINK.findall(line):
            if re.match(r"[a-zA-Z][a-zA-Z+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f"{os.path.relpath(path, REPO)}:{number}: {target}"
            if not os.path.exists(dest):
                bad.append(f"{where} (no such file)")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                bad.append(f"{where} (no heading with that anchor)")
    return bad


def test_slug_follows_github():
    assert slug("int4 of the trained, merged weights on the whole val split (2026-12-04)") == \
        "int4-of-the-trained-merged-weights-on-the-whole-val-split-2026-12-04"
    assert slug("The `quant_draft` switch: A + B") == "the-quant_draft-switch-a--b"


def test_broken_links_are_found(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Title\n## Part one\n## Part one\n")
    page.write_text("[ok](other.md#part-one-1) [web](https://example.org/x)\n"
                    "```\n[in a code block](nowhere.md)\n```\n"
                    "[gone](nowhere.md) [anchor](other.md#part-two) [self](#title-here)\n")
    monkeypatch.setattr("tests.test_docs_links.REPO", str(tmp_path))
    bad = broken_links(str(page))
    assert [b.split(": ", 1)[1] for b in bad] == ["nowhere.md (no such file)",
                                                  "other.md#part-two (no heading with that anchor)",
                                                  "#title-here (no heading with that anchor)"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_every_tool_is_listed_in_the_readme_layout():
    """The README's layout block names every script of tools/ (a new tool is found from the front door)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme[readme.index("\ntools/ "):]
    block = block[:block.index("\ntests/ ")]
    named = set(re.findall(r"[\w.-]+\.(?:py|sh)", block))
    tools = {n for n in os.listdir(os.path.join(REPO, "tools")) if n.endswith((".py", ".sh"))}
    assert tools - named == set(), "add these to the tools/ line of the README's layout"
