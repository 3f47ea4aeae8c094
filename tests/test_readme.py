"""The README is a front door: short, and every link from it (and between the
docs/ pages) leads somewhere, down to the heading it names."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
MAX_README_LINES = 200
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation
    dropped, spaces to hyphens (outside code blocks)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            text = line.lstrip("#").strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            anchors.add(text.replace(" ", "-"))
    return anchors


def _broken_links(page: str) -> list[str]:
    """Relative links of `page` whose file, or heading, does not exist."""
    broken = []
    for target in _LINK.findall(_read(page)):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(target)
        elif anchor and full.endswith(".md") and anchor not in _anchors(_read(full)):
            broken.append(target)
    return broken


def test_the_readme_is_at_most_200_lines():
    assert len(_read(README).splitlines()) <= MAX_README_LINES


def test_the_readme_links_every_docs_page_and_each_link_resolves():
    links = _LINK.findall(_read(README))
    docs = {target.partition("#")[0] for target in links if target.startswith("docs/")}
    pages = {f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs"))
             if name.endswith(".md")}
    assert pages and docs == pages  # every page reachable from the front door
    assert _broken_links(README) == []


def test_links_between_the_docs_pages_resolve():
    docs = os.path.join(REPO, "docs")
    broken = {name: _broken_links(os.path.join(docs, name))
              for name in sorted(os.listdir(docs)) if name.endswith(".md")}
    assert {name: links for name, links in broken.items() if links} == {}


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\n[ok](#a-section) [gone](missing.md) "
                    "[bad anchor](#nope) [web](https://example.com)\n")
    assert _broken_links(str(page)) == ["missing.md", "#nope"]


def test_every_module_the_readme_runs_exists():
    """`python -m X` in the README names a module of this checkout (found by
    its file: importing a launcher package would change this process's
    environment for the tests after it)."""
    modules = set(re.findall(r"python -m ([\w.]+)", _read(README)))
    assert {"launch.train", "launch.quickstart", "data_prep.build_tfrecords"} <= modules

    def exists(module):
        path = os.path.join(REPO, *module.split("."))
        return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__main__.py"))
    assert [m for m in sorted(modules) if not exists(m)] == []
