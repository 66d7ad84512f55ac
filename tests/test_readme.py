"""README numbers come from the code: the step tables are regenerated and compared."""
import re
from pathlib import Path

from zipar.cli.steps import steps_table
from zipar.pipelines.settings import call_arguments_table
from zipar.zipar_core.models import registry

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = [(24, 24, False, [8, 12, 14, 16]), (32, 32, False, [4, 8, 12, 16]), (48, 48, True, [11, 14, 17, 20]),
          (96, 96, True, [8, 12, 16, 24, 32]), (128, 128, True, [8, 12, 16, 24, 32])]  # the last two: Lumina-mGPT 2.0


def expected_block() -> str:
    return "\n\n".join(steps_table(*t) for t in TABLES)


def test_defaults_table_matches_the_registry():
    block = re.search(r"<!-- defaults:begin -->\n(.*?)\n<!-- defaults:end -->", README.read_text(), re.S)
    assert block, "README lost its defaults markers"
    assert block.group(1) == registry.defaults_table(), "run: python tests/test_readme.py to regenerate"


def test_pipeline_arguments_table_matches_the_code():
    block = re.search(r"<!-- call-arguments:begin -->\n(.*?)\n<!-- call-arguments:end -->", README.read_text(), re.S)
    assert block, "README lost its call-arguments markers"
    assert block.group(1) == call_arguments_table(), "run: python tests/test_readme.py to regenerate"


def test_step_tables_match_the_code():
    text = README.read_text()
    block = re.search(r"<!-- steps:begin -->\n(.*?)\n<!-- steps:end -->", text, re.S)
    assert block, "README lost its steps markers"
    assert block.group(1) == expected_block(), "run: python tests/test_readme.py to regenerate the tables"


def test_the_python_api_example_on_the_demo_model_runs_as_printed(capsys):
    """README's first Python example (the demo model through load_model, generate and the pipeline) runs, and prints
    what its comment says."""
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102  (the README's own code)
    printed = capsys.readouterr().out.strip()
    said = re.search(r"print\(result.codes.shape, result.stats.passes\)\s+# (.*)", block).group(1)
    assert printed == said


def test_the_step_tables_name_the_commands_that_make_them():
    """`zipar steps` alone does not print the README's tables: the README gives each table's flags."""
    text = " ".join(README.read_text().split())
    for rows, cols, eol, windows in TABLES:
        command = f"zipar steps --rows {rows} --cols {cols}{' --eol' if eol else ''} --windows {' '.join(map(str, windows))}"
        assert command in text, command


if __name__ == "__main__":  # regenerate
    text = README.read_text()
    text = re.sub(r"<!-- steps:begin -->\n.*?<!-- steps:end -->",
                  lambda m: f"<!-- steps:begin -->\n{expected_block()}\n<!-- steps:end -->", text, flags=re.S)
    text = re.sub(r"<!-- defaults:begin -->\n.*?<!-- defaults:end -->",
                  lambda m: f"<!-- defaults:begin -->\n{registry.defaults_table()}\n<!-- defaults:end -->", text,
                  flags=re.S)
    text = re.sub(r"<!-- call-arguments:begin -->\n.*?<!-- call-arguments:end -->",
                  lambda m: f"<!-- call-arguments:begin -->\n{call_arguments_table()}\n<!-- call-arguments:end -->",
                  text, flags=re.S)
    README.write_text(text)
