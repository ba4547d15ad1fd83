"""The README's Python examples run as written, and its two commands are the ones CI runs."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples_and_both_commands():
    text = README.read_text()
    assert len(BLOCKS) >= 2
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        after = text.split(marker, 1)[1]
        command = re.search(r"```bash\n(.+?)\n```", after, re.S).group(1).strip()
        assert "\n" not in command and "pip install" in command
    ci = (README.parent / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci  # CI extracts and runs that exact line


@pytest.mark.fashion
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{r.stderr}"
