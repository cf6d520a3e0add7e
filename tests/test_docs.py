"""The README sections that code, recipes and docstrings point to exist under those names."""
import re

from conftest import ROOT

REFERENCE = re.compile(r'README[,:]? "([^"]+)"|"([^"]+)" in the README')


def test_readme_sections_named_elsewhere_exist():
    headings = {line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")}
    files = [p for pattern in ("*.py", "*.yml") for p in ROOT.rglob(pattern)
             if ".venv" not in p.parts and "tests" not in p.parts]
    named = {(p.relative_to(ROOT), a or b) for p in files for a, b in REFERENCE.findall(p.read_text())}
    assert named, "no references found: the pattern is out of date"
    missing = sorted(f"{path}: {name}" for path, name in named if name not in headings)
    assert not missing, missing
