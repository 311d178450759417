"""The documentation: the site builds with warnings as errors, its generated reference is current, and
every Python and shell example in the docs and the README runs as a reader would run it.

Each page's examples run in order in one workspace, as a reader follows a page: `models/all-MiniLM-L6-v2`
is the session's export of the packaged model, the fine-tuned models the pages name are tiny ones made
here, and the files they read (texts.txt, docs.jsonl, …) hold real text. Python blocks share one namespace
per page; shell blocks run in bash with this environment's `bertx` first on PATH.

A block that cannot run here says why in a comment before it (`<!-- not run: REASON -->`: an export of
minutes, a server, a cluster, package installs) or what it needs (`<!-- needs: bf16 -->`, `gpu`). Every
`bertx` command in every block, run or not, is parsed by the real command line, so an option that is
renamed or removed fails here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<marker><!-- (?P<kind>not run|needs): (?P<why>.+?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S
)
RUN = ("python", "bash")
NEEDS = ("bf16", "gpu")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    body: str
    not_run: str | None = None
    needs: str | None = None

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("lang")) + 1
        kind, why = match.group("kind"), match.group("why")
        found.append(
            Block(
                page=str(page.relative_to(ROOT)),
                line=line,
                lang=match.group("lang"),
                body=match.group("body"),
                not_run=why if kind == "not run" else None,
                needs=why if kind == "needs" else None,
            )
        )
    return found


EXAMPLES = {str(page.relative_to(ROOT)): [b for b in blocks(page) if b.lang in RUN] for page in PAGES}


def bertx_commands(block: Block) -> list[list[str]]:
    """The `bertx …` command lines of a shell block, as argument lists (comments and redirections cut)."""
    commands = []
    for line in block.body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for start, word in enumerate(words):
            if word == "bertx":
                args = words[start + 1 :]
                cut = next((i for i, w in enumerate(args) if w in ("<", ">", "|", "&&", ";")), len(args))
                commands.append(args[:cut])
                break
    return commands


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def parse(args: list[str], cwd: Path) -> None:
    """Parse `bertx ARGS` with the real command line, without running it (click's own validation)."""
    import typer

    from bertx.cli import app, optional_int8_value

    group = typer.main.get_command(app)
    with working_directory(cwd):
        args = optional_int8_value(args)
        root = group.make_context("bertx", list(args), resilient_parsing=True)
        name = args[0]
        command = group.get_command(root, name)
        assert command is not None, f"no command bertx {name}"
        command.make_context(name, list(args[1:]), parent=root)


def test_every_page_is_in_the_site_and_every_block_says_how_it_runs() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(re.findall(r"[\w/-]+\.md", str(config["nav"])))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == listed, (pages - listed, listed - pages)
    for found in EXAMPLES.values():
        for block in found:
            assert block.needs is None or block.needs in NEEDS, block.where()
            assert block.not_run is None or len(block.not_run) > 15, f"{block.where()}: say why it is not run"
            # Nothing that changes this environment or the repository runs from a page.
            changes = re.search(r"^\s*(pip|npm|make|apt|apt-get|rm) ", block.body, re.M)
            assert block.not_run or block.lang != "bash" or not changes, f"{block.where()}: mark it not run"
    assert sum(len(found) for found in EXAMPLES.values()) >= 40


def test_the_readmes_links_lead_to_files() -> None:
    # The site's own links are checked by its strict build; the README, outside the site, here.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert targets and any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, missing


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    from bertx.options import SPECS

    # The generated reference is there: every option, every command with its options, every route.
    options = (site / "reference" / "options" / "index.html").read_text(encoding="utf-8")
    assert all(f"<code>{spec.flag}</code>" in options for spec in SPECS)
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    import typer

    from bertx.cli import app

    group = typer.main.get_command(app)
    commands = group.list_commands(group.make_context("bertx", [], resilient_parsing=True))
    assert {"export", "embed", "search", "vocab", "serve", "info", "verify", "doctor", "bench"} <= set(commands)
    for command in commands:
        assert f'id="bertx-{command}"' in cli, command
    assert "--sentence-embedding" in cli and "--int8-target-cosine" in cli
    http = (site / "reference" / "http" / "index.html").read_text(encoding="utf-8")
    assert all(route in http for route in ("POST /v1/embeddings", "POST /embed/chunks", "POST /v1/rerank"))
    python = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    assert all(name in python for name in ("encode_words", "encode_chunks", "classify", "rerank"))
    import bertx

    undocumented = [name for name in bertx.__all__ if name[0].isupper() and f'id="bertx.{name}"' not in python]
    assert not undocumented, f"public names missing from docs/reference/python.md: {undocumented}"
    assert (site / "performance" / "all-MiniLM-L6-v2.png").is_file()


def test_the_http_reference_is_the_servers_schema(tiny_artifact: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "openapi_schema.py"), str(tiny_artifact), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the examples -------------------------------------------------------------------------------------

TEXTS = [
    "A man is eating food.",
    "Someone is having a meal.",
    "The new movie is awesome.",
    "The riverbank flooded after the storm.",
    "How do I reset my password?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Refund my order #4471 please, it arrived on 2026-03-14 with 3 of 12 items broken.",
    "def add(a, b): return a + b",
]


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, minilm_artifact: Path, export_tiny: Callable[..., Path]
) -> Path:
    """A folder laid out as the pages assume: the models they load and the files they read."""
    from test_tasks import make_classifier, make_tagger

    root = tmp_path_factory.mktemp("docs-workspace")
    models = root / "models"
    models.mkdir()
    (models / "all-MiniLM-L6-v2").symlink_to(minilm_artifact)
    base = make_tiny_model(root / "tiny-base")
    sentiment = export_tiny(make_classifier(base, root / "sentiment"))
    (models / "my-sentiment-model").symlink_to(sentiment)
    (models / "my-cross-encoder").symlink_to(sentiment)  # a pair classifier: rerank reads its last label
    (models / "my-ner-model").symlink_to(export_tiny(make_tagger(base, root / "ner")))
    prompts = (("query", "query: "), ("passage", "passage: "))
    (models / "my-e5-model").symlink_to(export_tiny(base, prompts=prompts, default_prompt_name="query"))
    faq = [line.split("\t")[1] for line in (ROOT / "examples" / "data" / "faq.tsv").read_text().splitlines() if line]
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (root / "docs.txt").write_text("\n".join(faq[:12]) + "\n", encoding="utf-8")
    (root / "corpus.txt").write_text("\n".join(faq) + "\n", encoding="utf-8")
    (root / "long.txt").write_text(" ".join(faq[:20]) + "\n" + " ".join(faq[20:40]) + "\n", encoding="utf-8")
    (root / "domain.txt").write_text("riverbank\npassword\nrefund\n", encoding="utf-8")
    rows = [json.dumps({"id": f"d{i}", "body": text}) for i, text in enumerate(faq[:12])]
    (root / "docs.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    lines = ['"text"'] + ['"' + text.replace('"', '""') + '"' for text in faq[:12]]
    (root / "docs.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def can_run(block: Block) -> str | None:
    """Why `block` is not run here, or None when it is."""
    if block.not_run:
        return block.not_run
    if block.needs == "bf16":
        from bertx.cpu import cpu_info

        return None if cpu_info().bf16 else "this CPU has no bf16"
    if block.needs == "gpu":
        import onnxruntime

        return None if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "no GPU"
    return None


def run_block(block: Block, namespace: dict[str, object], cwd: Path) -> None:
    if block.lang == "python":
        code = compile(block.body, block.where(), "exec")
        with working_directory(cwd), contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)
        return
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.body],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, f"{block.where()}:\n{block.body}\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page, found in EXAMPLES.items() if found])
def test_the_examples_of_each_page_run(page: str, workspace: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in EXAMPLES[page]:
        if block.lang == "bash":
            for args in bertx_commands(block):
                try:
                    parse(args, workspace)
                except Exception as error:  # click's usage errors, with the command they came from
                    pytest.fail(f"{block.where()}: bertx {shlex.join(args)}: {error}")
        if can_run(block) is None:
            run_block(block, namespace, workspace)
