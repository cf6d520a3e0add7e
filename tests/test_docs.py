"""The documentation pages and sections that the README, code, recipes and docstrings point to exist."""
import re

from conftest import ROOT

REFERENCE = re.compile(r'docs/([a-z_]+\.md)(?:, "([^"]+)")?')
LINK = re.compile(r"\]\((docs/)?([a-z_]+\.md|[a-z_]+\.jpg)\)")


def headings(page):
    return {line.lstrip("#").strip() for line in (ROOT / "docs" / page).read_text().splitlines()
            if line.startswith("#")}


def test_docs_sections_named_elsewhere_exist():
    files = [p for pattern in ("*.py", "*.yml") for p in ROOT.rglob(pattern)
             if ".venv" not in p.parts and "tests" not in p.parts]
    named = {(p.relative_to(ROOT), page, section) for p in files for page, section in REFERENCE.findall(p.read_text())}
    assert any(section for _, _, section in named), "no references to a section found: the pattern is out of date"
    missing = sorted(f"{path}: docs/{page}" + (f', "{section}"' if section else "") for path, page, section in named
                     if not (ROOT / "docs" / page).is_file() or (section and section not in headings(page)))
    assert not missing, missing


def test_every_page_the_readme_and_the_docs_link_to_exists():
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    links = {(p.name, target) for p in pages for _, target in LINK.findall(p.read_text())}
    assert {target for _, target in links} >= {"recipes.md", "architecture.md", "safety.md", "evaluation.md"}
    missing = sorted(f"{name} -> {target}" for name, target in links if not (ROOT / "docs" / target).is_file())
    assert not missing, missing


def test_the_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
