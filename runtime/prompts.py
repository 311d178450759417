"""Prompts: the text prefixes ("query: ", "passage: ") some embedding models were trained with.

Models such as e5 and bge embed a query and a document differently: the text is prefixed with an
instruction before it is tokenized. A sentence-transformers folder declares its prompts in
`config_sentence_transformers.json`; the exporter copies them into the manifest, so the runtime can
apply them by name, with the same rules as sentence-transformers' `encode(prompt_name=…)`,
`encode_query` and `encode_document`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError

# The prompt names `encode_query` and `encode_document` look for, in sentence-transformers' order.
QUERY_NAMES = ("query",)
DOCUMENT_NAMES = ("document", "passage", "corpus")


@dataclass(frozen=True)
class Prompts:
    """The named prompts of a model and which one applies when none is asked for.

    Attributes:
        named: Prompt name → the text put before each input (an empty text is a declared "no prefix").
        default_name: The prompt used when a call names none, or None.
        include_prompt: Whether the prompt's tokens count in mean and max pooling (sentence-transformers'
            Pooling `include_prompt`); [CLS] pooling is unaffected.
        origin: Where the prompts came from (a sentence-transformers config, the export command).
    """

    named: Mapping[str, str] = field(default_factory=dict)
    default_name: str | None = None
    include_prompt: bool = True
    origin: str = "none"

    def __post_init__(self) -> None:
        for name, text in self.named.items():
            if not isinstance(name, str) or not name or not isinstance(text, str):
                raise ValueError(f"a prompt needs a non-empty name and a text, got {name!r}: {text!r}")
        if self.default_name is not None and self.default_name not in self.named:
            raise ValueError(f"default prompt {self.default_name!r} is not one of the prompts ({self._listed()})")

    def resolve(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text to put before each input: `prompt` as given, the prompt called `prompt_name`, else the
        default prompt, else nothing. `prompt=""` turns a default prompt off.

        Raises:
            OptionError: both are given, the name is unknown, or either has the wrong type.
        """
        if prompt is not None and prompt_name is not None:
            raise OptionError("give prompt_name or prompt, not both")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise OptionError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        if prompt_name is None:
            return "" if self.default_name is None else self.named[self.default_name]
        if not isinstance(prompt_name, str):
            raise OptionError(f"prompt_name must be a string, got {type(prompt_name).__name__}")
        if prompt_name not in self.named:
            raise OptionError(f"unknown prompt_name {prompt_name!r}: this model has {self._listed()}")
        return self.named[prompt_name]

    def first_of(self, names: tuple[str, ...]) -> str | None:
        """The first of `names` this model declares (for `encode_query` / `encode_document`), or None."""
        return next((name for name in names if name in self.named), None)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON form."""
        return {
            "named": dict(self.named),
            "default_name": self.default_name,
            "include_prompt": self.include_prompt,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Prompts:
        """Read the manifest's JSON form; a manifest written before prompts existed has none."""
        if data is None:
            return cls()
        named = data.get("named", {})
        if not isinstance(named, Mapping):
            raise ValueError("prompts.named must be an object of name → text")
        default = data.get("default_name")
        return cls(
            dict(named),
            None if default is None else str(default),
            bool(data.get("include_prompt", True)),
            str(data.get("origin", "none")),
        )

    def _listed(self) -> str:
        if not self.named:
            return "no prompts (export with --prompt NAME=TEXT to add some)"
        return "prompts " + ", ".join(repr(name) for name in self.named)


def parse_prompt(value: str) -> tuple[str, str]:
    """NAME=TEXT from the command line → (name, text); the text may be empty or contain '='."""
    name, sep, text = value.partition("=")
    if not sep or not name.strip():
        raise OptionError(f"a prompt is given as NAME=TEXT (e.g. query='query: '), got {value!r}")
    return name.strip(), text
