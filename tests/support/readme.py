"""What the README shows, read from it, so the tests check the text a user copies."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## ``."""
    text = readme()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end >= 0 else len(text)]


def code_block(title: str, language: str) -> str:
    """The first ``language`` code block of the section ``title``."""
    found = re.search(rf"```{language}\n(.*?)```", section(title), re.S)
    assert found is not None, f"no {language} block under '## {title}'"
    return found.group(1)


def campaign_example() -> str:
    """The campaign bundle file of *Campaigns*."""
    return code_block("Campaigns", "toml")
