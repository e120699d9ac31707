"""The landing page's example of dmcore's losses in a reader's own training loop runs as printed."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


@pytest.mark.slow
def test_the_training_loop_example_runs_and_learns():
    page = (ROOT / "book" / "intro.md").read_text()
    section = page.split("## Using dmcore's losses in your own training", 1)[1].split("\n## ", 1)[0]
    (example,) = _python_blocks(section)
    assert "losses.DMLoss" in example and "loss.backward()" in example
    # a fresh interpreter, as a reader would run it; one thread, as in the rest of the test suite
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"test accuracy after training on 40% noisy labels: ([0-9.]+)%\n", result.stdout)
    assert match, result.stdout
    assert float(match[1]) > 50, f"the example should learn well above chance (10%): {result.stdout}"
