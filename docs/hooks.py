"""MkDocs hooks (mkdocs.yml `hooks:`): the pages that are generated rather than written.

- ``configuration.md``: the line ``<!-- settings reference -->`` becomes the key table that
  ``python -m vsml.settings --markdown`` prints, from the declarations in ``vsml/settings/`` — the
  same table as docs/DESIGN.md §9, never copied by hand.
- ``bench-results.md``: ``bench/RESULTS.md`` itself, so the measured figures live in one file.

And the docstrings' Sphinx roles (``:func:`train```), which mkdocstrings' Google-style
rendering would show as text, are shown as the code they name.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MARKER = "<!-- settings reference -->"
BENCH_RESULTS = ROOT / "bench" / "RESULTS.md"
SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj):(?=<code>)")


def on_files(files, config):
    """Adds bench/RESULTS.md as the page ``bench-results.md``."""
    files.append(File.generated(config, "bench-results.md", content=BENCH_RESULTS.read_text()))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Fills the settings marker with the generated key reference."""
    if SETTINGS_MARKER not in markdown:
        return markdown
    # This checkout's vsml, installed or not (mkdocs restores sys.path after loading the hooks).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from vsml.settings import reference_markdown  # imported here: only the pages that need it pay for it

    return markdown.replace(SETTINGS_MARKER, reference_markdown())


def on_page_content(html: str, page, config, files) -> str:
    """Drops the Sphinx role before a rendered code name (``:func:<code>train</code>``)."""
    return SPHINX_ROLE.sub("", html)
