"""The README's Python API example runs as written (so the README stays true)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "Machine(" in b and "TlbiTrap" in b)
    exec(compile(example, "README.md", "exec"), {})       # the example asserts on its own results
    assert "SUMMARY: 2 tests, 0 unexpected failures" in capsys.readouterr().out


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "python3 -m pip install -e '.[test]'" in text and "python3 -m pytest" in text


def test_ci_runs_the_readmes_two_commands():
    """`.ci/run` runs exactly the set-up block of "Set up and test" (the suite in parallel: `-n auto`)."""
    block = re.search(r"## Set up and test\n\n((?:    .*\n)+)", README.read_text()).group(1)
    commands = [line.strip() for line in block.splitlines()]
    assert commands == ["python3 -m pip install -e '.[test]'", "python3 -m pytest -n auto"]
    ci = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()]
    assert ci.index(commands[0]) < ci.index(commands[1])
