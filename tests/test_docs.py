"""The documentation's end-to-end script runs as written; every strategy and flag is documented."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def end_to_end_script() -> str:
    """The Python block that follows the ``<!-- end-to-end -->`` marker of docs/sklearn.md."""
    text = (DOCS / "sklearn.md").read_text()
    match = re.search(r"<!-- end-to-end -->\n```python\n(.*?)```", text, flags=re.S)
    assert match, "docs/sklearn.md: no Python block after <!-- end-to-end -->"
    return match.group(1)


def test_the_end_to_end_script_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    pytest.importorskip("joblib")
    monkeypatch.chdir(tmp_path)
    exec(compile(end_to_end_script(), str(DOCS / "sklearn.md"), "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("['cat' 'dog' 'owl'] ['audio', 'video'] accuracy ")
    assert float(printed[0].rsplit(" ", 1)[1]) > 0.6
    assert (tmp_path / "animals.csv").is_file() and (tmp_path / "animals.joblib").is_file()


def test_every_strategy_has_a_page_in_the_navigation():
    from altmodal.strategies import STRATEGIES

    nav = (ROOT / "mkdocs.yml").read_text()
    for name in STRATEGIES:
        page = DOCS / "strategies" / f"{name}.md"
        assert page.is_file() and f"strategies/{name}.md" in nav, name
        assert f"<!-- options {name} -->" in page.read_text()


def rendered(page: str) -> str:
    """A docs page as the site's build hook fills it in."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from docs_hooks import on_page_markdown
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return on_page_markdown((DOCS / page).read_text(), None, None, None)


def test_the_cli_reference_is_generated_from_the_parser():
    page = rendered("cli.md")
    assert "<!-- cli -->" not in page
    for flag in ("--threads", "--label", "--modality NAME=COLUMNS", "--strategy {mla,", "--version", "--present"):
        assert flag in page, flag
    assert "0.01 for mfeat, synthetic and feature files" in page


def test_the_results_page_shows_the_projection_table():
    page = rendered("results.md")
    table = page.split("## The head projection, checked\n", 1)[1].split("\n## ", 1)[0]
    assert "| measured / allowed change" in table and "<!-- readme" not in page
