"""Write the HTTP server's OpenAPI schema to docs/reference/openapi.json, for the docs' HTTP reference.

The schema does not depend on the model served; any artifact builds it (default: the packaged
all-MiniLM-L6-v2 that `make demo` exports). A test checks that the committed file is current.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "reference" / "openapi.json"


def openapi_schema(artifact: Path) -> dict[str, Any]:
    """The OpenAPI schema of a server over `artifact`."""
    import bertx
    from bertx.serving import create_app

    schema: dict[str, Any] = create_app(bertx.Model.from_pretrained(artifact)).openapi()
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", type=Path, default=Path("models/all-MiniLM-L6-v2"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schema is not current")
    args = parser.parse_args()
    text = render(openapi_schema(args.artifact))
    if args.check:
        if SCHEMA.read_text(encoding="utf-8") != text:
            raise SystemExit(f"{SCHEMA} is stale: run python scripts/openapi_schema.py")
        return
    SCHEMA.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA}")


if __name__ == "__main__":
    main()
