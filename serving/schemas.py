"""The HTTP request bodies: OpenAI's embeddings request, and bertx's own, whose option fields are made from
the one definition of every option (`bertx.options`): the same names, defaults and help as Python's keywords
and the command line's flags. Values are checked by `EncodeOptions`, so a bad one gets the same message on
every front-end; the schema checks only JSON types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

from bertx.options import CHUNKS, DEFAULTS, SENTENCE, SPECS, TOKENS, WORDS, EncodeOptions

Texts = Annotated[str | list[str], Field(description="One text or a list of texts.")]
Encoding = Literal["float", "base64"]
Direction = Literal["Left", "Right", "left", "right"]
# TEI's truncation fields: `truncate` false refuses a text over the model's length (413), true or unset cuts it.
TRUNCATION: dict[str, Any] = {
    "truncate": (
        bool | None,
        Field(default=None, description="false: a text over the model's length is refused (413); true or unset: cut."),
    ),
    "truncation_direction": (
        Direction,
        Field(default="Right", description="Which end is kept: Right keeps the start."),
    ),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# Which served model a request is for: bertx's field on its own and TEI's routes, as `model` is OpenAI's.
ModelName = Annotated[
    str | None,
    Field(description="The served model to use (GET /v1/models) [with one model: it; else the route's default]."),
]


class OpenAIEmbeddingRequest(Strict):
    """OpenAI's embeddings request. `input` as token ids is not supported: send text."""

    input: Texts
    model: str | None = None
    encoding_format: Encoding = "float"
    dimensions: int | None = Field(
        default=None, description="Keep the first N dimensions, normalized after the cut (truncate_dim)."
    )
    user: str | None = None
    prompt_name: str | None = Field(
        default=None, description="bertx: one of the model's prompts (GET /info) [its default prompt, if any]."
    )

    def options(self) -> EncodeOptions:
        return EncodeOptions.from_mapping({"truncate_dim": self.dimensions, "prompt_name": self.prompt_name})


def option_fields(kind: str) -> dict[str, Any]:
    """Pydantic fields for the options that mean something for `kind`, from their single definition."""
    made: dict[str, Any] = {}
    for spec in SPECS:
        if kind not in spec.kinds:
            continue
        default = DEFAULTS[spec.name]
        plain = getattr(default, "value", default)
        field = Field(
            default=plain,
            description=spec.help,
            validation_alias=AliasChoices(spec.name, *spec.aliases) if spec.aliases else None,
            json_schema_extra={"enum": list(spec.choices)} if spec.choices else None,
        )
        made[spec.name] = (spec.wire, field)
    return made


def _request(name: str, kind: str, doc: str, inputs: Any, **more: Any) -> type[Strict]:
    model = create_model(
        name, __base__=Strict, __doc__=doc, inputs=inputs, model=(ModelName, None), **more, **option_fields(kind)
    )
    return model


def options_of(body: BaseModel, kind: str) -> EncodeOptions:
    """The request's options as one checked value (an alias counts as its option)."""
    names = [spec.name for spec in SPECS if kind in spec.kinds]
    return EncodeOptions.from_mapping({name: getattr(body, name) for name in names}, kind)


_WORD_INPUTS = (str | list[str] | list[list[str]], Field(description="Texts, or texts given as lists of words."))
if TYPE_CHECKING:
    EmbedRequest = Strict
    EmbedAllRequest = Strict
    TokensRequest = Strict
    WordsRequest = Strict
    ChunksRequest = Strict
else:
    EmbedRequest = _request(
        "EmbedRequest",
        SENTENCE,
        "TEI's embed request, and every bertx sentence option (see `Model.encode`).",
        (Texts, ...),
        encoding_format=(Encoding, "float"),
        **TRUNCATION,
    )
    EmbedAllRequest = _request(
        "EmbedAllRequest",
        TOKENS,
        "TEI's embed_all request: every token's vector, from any layers (see `Model.encode_tokens`).",
        (Texts, ...),
        **TRUNCATION,
    )
    TokensRequest = _request(
        "TokensRequest",
        TOKENS,
        "Token vectors, with the tokens and their character offsets (see `Model.encode_tokens`).",
        (Texts, ...),
    )
    WordsRequest = _request(
        "WordsRequest",
        WORDS,
        "Word vectors: sub-word pieces merged back into words (see `Model.encode_words`).",
        _WORD_INPUTS,
    )
    ChunksRequest = _request(
        "ChunksRequest",
        CHUNKS,
        "Late chunking: each text embedded in its whole context, its chunks pooled (see `Model.encode_chunks`).",
        (Texts, ...),
        spans=(
            list[list[tuple[int, int]]] | None,
            Field(default=None, description="Per text, the chunks as [start, end] character spans [its sentences]."),
        ),
    )
