"""The code passes the linter configured in pyproject.toml ([tool.ruff]): pyflakes' errors and the line length."""
import subprocess
import sys

from aus_lib.paths import REPO_ROOT


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
