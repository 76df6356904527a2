"""The guide's Python examples run as written (the README points to them)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
GUIDE = README.parent / "docs" / "guide.md"


def test_python_blocks_of_the_guide_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}  # the blocks run in order, like one session
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "fou" in printed and "audio+video" in printed
    assert (tmp_path / "runs" / "from-python" / "metrics.json").is_file()
    assert "['0', '1', '2']" in printed and "'accuracy'" in printed  # load_run's classes and evaluate
    assert (tmp_path / "runs" / "own" / "model.safetensors").is_file()


def test_the_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    first_block = README.read_text().split("```")[1]
    commands = [line for line in first_block.splitlines() if line.rstrip().endswith("# tests")]
    assert len(commands) == 1 and "pytest" in commands[0] and "# tests" in ci


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(((?:docs/)[^)#]+)", README.read_text())
    assert links
    assert [link for link in links if not (README.parent / link).is_file()] == []
