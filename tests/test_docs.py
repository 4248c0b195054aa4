"""The user docs: every result table row is what `keras-hybrid summary`
prints for a committed result, the quick-start commands are the ones CI
runs, and no internal words."""

import glob
import os
import re

import pytest

from keras_hybrid.bench import headroom
from keras_hybrid.bench import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", os.path.join("benchmarks", "README.md"))


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _tables(text):
    """Markdown tables as lists of `{column: cell}` rows."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|")
                          .split("|")])
            continue
        if len(block) > 2:
            header = block[0]
            tables.append([dict(zip(header, row)) for row in block[2:]])
        block = []
    return tables


@pytest.fixture(scope="module")
def summary_tables():
    """The tables `keras-hybrid summary` prints for the committed results."""
    tables = []
    pattern = os.path.join(ROOT, "benchmarks", "results", "**", "*.json")
    for path in sorted(glob.glob(pattern, recursive=True)):
        if os.path.basename(path) not in ("bench.json", "headroom.json"):
            continue
        result = summary.load(path)
        text = (headroom.markdown_table(result)
                if result.get("kind") == "headroom"
                else summary.markdown_table(result))
        tables += _tables(text)
    assert tables
    return tables


@pytest.mark.parametrize("doc", DOCS)
def test_result_rows_are_summary_output(doc, summary_tables):
    columns = set()
    for table in summary_tables:
        columns.update(table[0])
    checked = 0
    for table in _tables(_read(doc)):
        shared = [c for c in table[0] if c in columns]
        if "task" not in shared or len(shared) < 4:
            continue  # not a result table
        for row in table:
            matches = [
                candidate for t in summary_tables for candidate in t
                if set(shared) <= set(candidate)
                and all(candidate[c] == row[c] for c in shared)
            ]
            assert matches, f"{doc}: no summary row matches {row}"
            checked += 1
    assert checked >= 4


def test_quick_start_commands_are_the_ones_ci_runs():
    readme = _read("README.md")
    assert '```bash\npip install ".[bench]" && keras-hybrid bench --quick\n```' \
        in readme
    test_command = 'pip install ".[test]" && python -m pytest -q tests'
    assert f"```bash\n{test_command}\n```" in readme
    ci = _read(os.path.join(".ci", "run"))
    assert 'pip install --quiet ".[test]"' in ci
    assert "python -m pytest -q tests" in ci


@pytest.mark.parametrize("doc", DOCS)
def test_no_internal_words(doc):
    text = _read(doc)
    for word in (r"\bissues?\b", r"\bsession\b", r"\bhelper\b"):
        assert not re.search(word, text, re.IGNORECASE), (doc, word)


def test_readme_images_exist():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", _read("README.md")):
        assert os.path.isfile(os.path.join(ROOT, path)), path
