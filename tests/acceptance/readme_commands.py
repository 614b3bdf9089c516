"""The README's own shell commands and Python code, read from its code blocks, so the
acceptance suite runs what a user copies and the README cannot drift from what works."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"
_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def section(title: str) -> str:
    """The text of the README section whose `## ` heading starts with `title`."""
    text = README.read_text()
    start = text.index(f"## {title}")
    following = text.find("\n## ", start + 3)
    return text[start : following if following >= 0 else len(text)]


def commands(text: str) -> list[list[str]]:
    """Every command line of the bash blocks in `text` as argv lists: continuation lines
    joined, comments dropped, `export NAME=VALUE` kept as ["export", "NAME=VALUE"]."""
    found = []
    for block in _BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                found.append(argv)
    return found


def python_blocks(text: str) -> list[str]:
    """The code of every python block in `text`, in order."""
    return _PYTHON_BLOCK.findall(text)
