"""Who may import whom (issue 11, item 8): the mapper (gpt_mapping/) runs the RTL through the
runtime (runtime/), never through the test benches (tb/), and no bench imports the mapper; the
runtime imports neither; the golden models import no mapper. Checked on the source text,
statically."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


RULES = {"gpt_mapping": {"tb"}, "runtime": {"tb", "gpt_mapping"}, "tb": {"gpt_mapping"},
         "golden": {"gpt_mapping"}}


@pytest.mark.parametrize("package", list(RULES))
def test_package_imports(package):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for path in sorted((ROOT / package).glob("*.py"))
           for name, line in imported_packages(path) if name in RULES[package]]
    assert not bad, bad
