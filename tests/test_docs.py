"""The README and docs/*.md point only at files and headings that exist.

Images (`![alt](path)`) and links to local files (`[text](docs/cli.md#anchor)`) are resolved from
the folder of the page that names them; a screenshot the docs show must be one the browser test
(`tests/test_browser_app.py`) takes, so renaming a step there cannot leave the README pointing at
an old file. Fast: only files are read.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def strip_code(text: str) -> str:
    """The markdown without fenced code blocks and inline code spans, whose brackets are not links."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def markdown_links(text: str) -> list[tuple[bool, str]]:
    """(is_image, target) for every inline link and image outside code.

    >>> markdown_links("![a](x.png) and [b](docs/cli.md#flags) but not `![c](y.png)`")
    [(True, 'x.png'), (False, 'docs/cli.md#flags')]
    """
    return [(bang == "!", target) for bang, target in LINK.findall(strip_code(text))]


def is_local(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#")


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page: lower case, punctuation dropped, spaces to hyphens.

    >>> sorted(heading_anchors("# GGUF for llama.cpp and Ollama\\n## Judged by the task, not the loss"))
    ['gguf-for-llamacpp-and-ollama', 'judged-by-the-task-not-the-loss']
    """
    anchors = set()
    for line in strip_code(text).splitlines():
        if m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return anchors


def broken_links(page: Path) -> list[str]:
    """Every image or local link of `page` whose file (or heading, after `#`) does not exist."""
    broken = []
    for is_image, target in markdown_links(page.read_text(encoding="utf-8")):
        if not is_local(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve()
        if not file.exists():
            broken.append(f"{page.name}: {'image' if is_image else 'link'} {target} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{page.name}: {target} names no heading of {path}")
    return broken


def screenshots_taken() -> set[str]:
    """File names of the screenshots the browser test takes (`shot(page, "NAME")`)."""
    text = (ROOT / "tests" / "test_browser_app.py").read_text(encoding="utf-8")
    return {f"{name}.png" for name in re.findall(r'shot\(page, "([^"]+)"\)', text)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_image_and_local_link_exists(page):
    assert broken_links(page) == []


def test_the_readme_shows_screenshots_and_links_the_docs():
    links = markdown_links((ROOT / "README.md").read_text(encoding="utf-8"))
    images = [t for is_image, t in links if is_image and is_local(t)]
    assert len(images) >= 4, images
    linked = {t.partition("#")[0] for is_image, t in links if not is_image}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in linked, f"docs/{page.name} is not linked from the README"


def test_shown_screenshots_are_the_browser_tests_own():
    taken = screenshots_taken()
    assert "02-recommendation.png" in taken, "the browser test's shot(...) calls were not found"
    for page in PAGES:
        for is_image, target in markdown_links(page.read_text(encoding="utf-8")):
            if is_image and "screenshots/" in target:
                assert Path(target).name in taken, f"{page.name} shows {target}, which tests/test_browser_app.py does not take"


def test_a_missing_image_or_heading_is_found(tmp_path):
    """A copy of the README and docs/ with one missing image and one wrong anchor planted: both, and only both, are reported."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    readme = tmp_path / "README.md"
    assert broken_links(readme) == []
    readme.write_text(readme.read_text(encoding="utf-8")
                      + "\n![gone](docs/screenshots/99-nowhere.png)\n[cli](docs/cli.md#no-such-heading)\n"
                      + "```\n![in code](not/checked.png)\n```\n", encoding="utf-8")
    assert broken_links(readme) == ["README.md: image docs/screenshots/99-nowhere.png does not exist",
                                    "README.md: docs/cli.md#no-such-heading names no heading of docs/cli.md"]
