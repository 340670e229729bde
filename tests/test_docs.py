"""The documentation site (mkdocs.yml, docs/): it builds with every warning an error, its command blocks
are checked as the README's are (``tests/doc_commands.py``), and a real headless browser opens it.

The build takes about 10-15 s on 2 busy cores, so it stays in the default run; one build serves all
the tests of this file.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from tests import doc_commands
from tests.conftest import HANG_GUARD_S, ROOT
from tests.doc_commands import in_repository_root, run_as_printed

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"
SNIPPET = re.compile(r'^--8<-- "([^":]+):([\w-]+)"$', re.M)
CHROMIUM_INSTALL = "apt-get install -y chromium"


def _mkdocs_config() -> dict:
    # mkdocs.yml holds no custom YAML tags, so a plain load reads it as MkDocs does.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _nav_files(nav) -> list[str]:
    files = []
    for entry in nav:
        (target,) = entry.values() if isinstance(entry, dict) else (entry,)
        files += _nav_files(target) if isinstance(target, list) else [target]
    return files


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as ``mkdocs build --strict`` writes it (any warning aborts the build)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 0, "mkdocs build --strict failed (pip install -r requirements-dev.txt?):\n" + (
        done.stdout[-3000:] + done.stderr[-5000:]
    )
    return out


# ------------------------------------------------------------------------------------- the build


def test_the_build_is_strict():
    """Broken links and anchors, missing references and pages outside the nav are warnings that
    ``strict`` turns into errors (a build with one is refused)."""
    config = _mkdocs_config()
    assert config["strict"] is True
    validation = config["validation"]
    assert validation["omitted_files"] == validation["nav"]["omitted_files"] == "warn"
    assert validation["nav"]["not_found"] == validation["links"]["not_found"] == "warn"
    assert validation["links"]["anchors"] == "warn"
    (snippets,) = [ext["pymdownx.snippets"] for ext in config["markdown_extensions"] if "pymdownx.snippets" in ext]
    assert snippets["check_paths"] is True  # an include of a missing file is an error


def test_every_page_is_in_the_nav():
    nav = set(_nav_files(_mkdocs_config()["nav"]))
    assert {page.name for page in PAGES} | {"bench-results.md"} == nav


def test_the_site_builds_with_every_page(site):
    for name in _nav_files(_mkdocs_config()["nav"]):
        page = "index.html" if name == "index.md" else f"{name.removesuffix('.md')}/index.html"
        assert (site / page).is_file(), page


def test_the_key_reference_is_generated_with_every_key(site):
    # The keys, read from configs/default.yaml (the file users read; tests/test_settings.py holds it
    # equal to the declarations the hook renders); a free-form mapping is one key.
    from vsml.settings import open_keys

    def dotted(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict) and value and prefix + key not in open_keys():
                yield from dotted(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    html = (site / "configuration" / "index.html").read_text()
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    missing = [key for key in dotted(default) if f"<code>{key}</code>" not in html]
    assert not missing, missing
    assert "<!-- settings reference -->" not in (site / "configuration" / "index.html").read_text()


def test_the_api_reference_is_generated_from_the_docstrings(site):
    html = (site / "api-reference" / "index.html").read_text()
    for name in ("train", "load", "pretrained_names", "pretrained", "LearnedAlgorithm", "TrainResult"):
        assert f'id="vsml.api.{name}"' in html or f'id="vsml.runs.{name}"' in html, name
    assert "Meta-trains as" in html  # the first line of api.train's docstring, rendered
    assert ":func:" not in html and ":class:" not in html  # Sphinx roles shown as the code they name


def test_the_benchmark_log_is_bench_results_md(site):
    html = (site / "bench-results" / "index.html").read_text()
    for heading in re.findall(r"^## (.+)$", (ROOT / "bench" / "RESULTS.md").read_text(), re.M):
        assert heading.split("`")[0].strip() in html, heading


# -------------------------------------------------------------------------- the command blocks


def _snippet_sections(path: Path) -> set[str]:
    return set(re.findall(r"--8<-- \[start:([\w-]+)\]", path.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_include_names_a_section_that_exists(page):
    """Blocks shown on both the README and a page are written once, in the README, and included
    (tests/test_readme.py runs them there)."""
    for file, section in SNIPPET.findall(page.read_text()):
        assert section in _snippet_sections(ROOT / file), f"{page.name}: {file}:{section}"


def _page_launch_commands() -> list[tuple[str, str]]:
    return [(page.name, command) for page in PAGES for command in doc_commands.launch_commands(page)]


def test_the_pages_have_the_commands_this_file_checks():
    found = _page_launch_commands() + [("README.md", c) for c in doc_commands.launch_commands(README)]
    assert len(found) >= 8, found  # the README and the pages together hold the commands of before the split
    assert any(page == "configuration.md" and "mpi_split" in command for page, command in found)


@pytest.mark.parametrize(("page", "command"), _page_launch_commands())
def test_launch_command_is_a_valid_run_as_printed(page, command, tmp_path):
    doc_commands.check_launch_command(command, tmp_path)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_named_scripts_and_modules_exist(page):
    """Each command that runs a file of the repository or a module of the package names one that exists."""
    for command in doc_commands.command_lines(page):
        words = shlex.split(command, comments=True)
        for word, after in zip(words, words[1:]):
            if word in (".venv/bin/python", "bash") and after.endswith((".py", ".sh")):
                assert (ROOT / after).is_file(), f"{page.name}: {command}"
            if word == "-m" and after.startswith("vsml"):
                assert importlib.util.find_spec(after) is not None, f"{page.name}: {command}"


# Examples that a test of their own runs and checks further (a marker each holds): the generic test leaves them out.
OWN_TESTS = ("load_wine",)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_examples_run_as_printed(page, tmp_path):
    """The page's own Python examples (``python -`` heredocs and ``python -c`` one-liners) run as printed."""
    examples = doc_commands.python_examples(page) + [
        command for command in doc_commands.command_lines(page) if command.startswith(".venv/bin/python -c ")
    ]
    for example in examples:
        if any(marker in example for marker in OWN_TESTS):
            continue
        done = run_as_printed(example, in_repository_root(tmp_path))
        assert done.returncode == 0, f"{page.name}: {example}\n{done.stderr[-3000:]}"


def test_tabular_example_learns_with_statistics_per_feature(tmp_path):
    """docs/datasets.md's tabular example, as printed: a shipped algorithm learns wine (3 classes) with the
    default statistics per feature, and stays near chance (1/3) with one global mean and std."""
    (example,) = [e for e in doc_commands.python_examples(DOCS / "datasets.md") if "load_wine" in e]
    done = run_as_printed(example, in_repository_root(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = {
        stats: float(value) for stats, value in (line.split() for line in done.stdout.strip().splitlines()[-2:])
    }
    assert accuracy["auto"] > 0.7, accuracy  # clearly above chance: it learned
    assert accuracy["global"] < 0.45, accuracy  # the measurements' scales swamp it: chance is 0.333


# ------------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built site and records every request's path and status."""

    def __init__(self, *args, requests: list, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def log_request(self, code="-", size="-"):
        self._requests.append((self.path, int(code)))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_site(site):
    requests: list[tuple[str, int]] = []
    handler = functools.partial(_RecordingHandler, directory=str(site), requests=requests)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("path", "expected"), [("/", "Where to go"), ("/api-reference/", "pretrained_names")])
def test_page_loads_in_a_headless_browser_without_console_messages(served_site, path, expected):
    """Chromium loads the page and runs its scripts: nothing is logged to the console (no error, no
    warning), every request it makes is answered, and the page's script fetched the search index."""
    browser = _chromium()
    if browser is None:
        pytest.skip(f"no chromium here: {CHROMIUM_INSTALL}")
    url, requests = served_site
    requests.clear()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            + ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
            + ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", url + path],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout  # the DOM after the scripts ran
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    failed = [(request, status) for request, status in requests if status >= 400]
    assert not failed, failed
    assert any(request.startswith("/search/search_index.json") for request, _ in requests), requests
