"""MkDocs hooks: the reference pages are written from the code itself when the site is built.

A page holds a marker where generated text goes, and the build replaces it:

- `<!-- bertx:options -->`: the table of options, from their one definition (`bertx.options`);
- `<!-- bertx:cli -->`: every command of the `bertx` CLI with its options, from the commands themselves;
- `<!-- bertx:http -->`: every HTTP route, from the server's OpenAPI schema (`docs/reference/openapi.json`,
  which `python scripts/openapi_schema.py` writes and the test suite checks against the running server);
- `<!-- bertx:bench NAME -->`: `bench/results/NAME.md` as `bertx bench` wrote it, with its chart;
- `<!-- bertx:include PATH -->`: a Markdown file of the repository outside docs/ (its title dropped).

A marker the build does not know, or a results file that is missing, fails the build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCHEMA = ROOT / "docs" / "reference" / "openapi.json"
MARKER = re.compile(r"<!-- bertx:(\w+)(?: ([\w./-]+))? -->")


class MarkerError(ValueError):
    """A generated-content marker that cannot be filled."""


def on_files(files: Any, config: Any) -> Any:
    """Publish the bench charts next to the performance page."""
    from mkdocs.structure.files import File

    for chart in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"performance/{chart.name}", abs_src_path=str(chart)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill each marker of a page with the text generated for it."""

    def fill(match: re.Match[str]) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "options":
            from bertx.options import options_table

            return options_table()
        if kind == "cli":
            return cli_reference()
        if kind == "http":
            return http_reference(json.loads(SCHEMA.read_text(encoding="utf-8")))
        if kind == "bench" and argument:
            return bench_results(argument)
        if kind == "include" and argument:
            return included(argument)
        raise MarkerError(f"{page.file.src_uri}: unknown marker {match.group(0)}")

    return MARKER.sub(fill, markdown)


# -- the command line ---------------------------------------------------------------------------------


def cli_reference() -> str:
    """A section per command: what it does, its usage line, and a table of its arguments and options."""
    import typer

    from bertx.cli import app

    group: Any = typer.main.get_command(app)
    root = group.make_context("bertx", [], resilient_parsing=True)
    parts = []
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
        rows = ["| argument or option | what |", "|---|---|"]
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            names, text = record
            rows.append(f"| `{names}` | {_cell(text)} |")
        usage = " ".join(command.collect_usage_pieces(ctx))
        parts.append(
            f"## bertx {name}\n\n{_doc(command.help)}\n\n```text\nbertx {name} {usage}\n```\n\n" + "\n".join(rows)
        )
    return "\n\n".join(parts)


def _doc(text: str | None) -> str:
    return (text or "").split("\f")[0].strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- the HTTP API -------------------------------------------------------------------------------------


def http_reference(schema: dict[str, Any]) -> str:
    """A section per route: its summary, the fields of its JSON body, and its answers."""
    components = schema.get("components", {}).get("schemas", {})
    parts = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            lines = [f"### `{method.upper()} {path}`", "", _doc(operation.get("summary"))]
            description = _doc(operation.get("description"))
            if description:
                lines += ["", description]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += ["", *_fields(_resolve(body, components))]
            answers = ", ".join(
                f"{code} {answer.get('description', '')}".strip() for code, answer in operation["responses"].items()
            )
            lines += ["", f"Answers: {answers}."]
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference:
        found: dict[str, Any] = components[reference.rsplit("/", 1)[1]]
        return found
    return schema


def _fields(schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:
        return [f"Body: {_type(schema)}."]
    required = set(schema.get("required", ()))
    rows = ["| field | type | default | what |", "|---|---|---|---|"]
    for name, field in properties.items():
        default = "required" if name in required else f"`{json.dumps(field['default'])}`" if "default" in field else "—"
        rows.append(f"| `{name}` | {_type(field)} | {default} | {_cell(field.get('description', ''))} |")
    return rows


def _type(field: dict[str, Any]) -> str:
    if "$ref" in field:
        return str(field["$ref"].rsplit("/", 1)[1])
    if "anyOf" in field:
        return " or ".join(_type(option) for option in field["anyOf"])
    if "enum" in field:
        return " \\| ".join(f"`{value}`" for value in field["enum"])
    kind = field.get("type", "any")
    if kind == "array":
        return f"list of {_type(field.get('items', {}))}"
    return str(kind)


# -- bench results --------------------------------------------------------------------------------------


def bench_results(name: str) -> str:
    """`bench/results/NAME.md`, its title dropped and its headings one level down, with its chart."""
    source = RESULTS / f"{name}.md"
    if not source.is_file():
        raise MarkerError(f"no bench results {source.relative_to(ROOT)}: run make bench")
    lines = source.read_text(encoding="utf-8").splitlines()
    body = [("#" + line if line.startswith("## ") else line) for line in lines if not line.startswith("# ")]
    chart = RESULTS / f"{name}.png"
    if chart.is_file():
        body += ["", f"![{name}: throughput and accuracy]({chart.name})"]
    return "\n".join(body)


def included(path: str) -> str:
    """A repository file's Markdown without its title (its own page heading stands instead)."""
    source = (ROOT / path).resolve()
    if ROOT not in source.parents or not source.is_file():
        raise MarkerError(f"no file {path} in the repository")
    return "\n".join(line for line in source.read_text(encoding="utf-8").splitlines() if not line.startswith("# "))
