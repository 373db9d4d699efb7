"""The files tokenstorm ships beside its code, found where the package is, installed or not.

They live in the package `tokenstorm._assets` (locustfiles/, configs/, data/): in a checkout as
links to the top-level folders of those names, in a wheel as copies. Every path to a shipped file
comes from here, so `tokenstorm run`, `tokenstorm mock --config NAME` and the offline tokenizer
work the same from a checkout and after `pip install tokenstorm`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def assets_dir() -> Path:
    """The folder holding locustfiles/, configs/ and data/ (on disk: `locust -f` needs a real path)."""
    return Path(str(files("tokenstorm._assets")))


def locustfile(name: str = "chat_stream") -> Path:
    """A shipped locustfile: chat_stream, staged or tool_agent."""
    return assets_dir() / "locustfiles" / f"{name}.py"


def configs_dir() -> Path:
    """configs/: Locust .conf files, scenarios/, mock/ (the mock's profiles), k8s/."""
    return assets_dir() / "configs"


def data_dir() -> Path:
    """data/: the prompt datasets and the tokenizer file (cl100k_base.tiktoken)."""
    return assets_dir() / "data"


def find(path: str | Path) -> Path:
    """`path` as given when it exists, else the shipped file of that name relative to the shipped
    folders (`configs/scenarios/tool-agent.yaml`, `data/prompts.csv`, `locustfiles/staged.py`), so
    the README's relative paths work after `pip install` from any folder; else `path` as given."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    shipped = assets_dir() / given
    return shipped if shipped.exists() and given.parts[:1] in (("configs",), ("data",), ("locustfiles",)) else given
