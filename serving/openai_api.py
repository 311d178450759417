"""OpenAI's conventions: `POST /v1/embeddings`, `GET /v1/models`, and `POST /v1/rerank` in the shape the
rerank APIs OpenAI-style clients call share (Cohere's and Jina's: `query`, `documents`, `top_n`,
`return_documents` in; `results` of `index` and `relevance_score` out)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import Field

from bertx.options import SENTENCE

from .guard import json_response, vector_json
from .models import RERANK, Models
from .schemas import OpenAIEmbeddingRequest, Strict


class Document(Strict):
    text: str


class OpenAIRerankRequest(Strict):
    """A rerank request as Cohere and Jina take it (and the OpenAI-style servers that copy them)."""

    query: str
    documents: list[str | Document] = Field(description="Texts, or objects with a `text`.")
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1, description="Return only the N most relevant [all].")
    return_documents: bool = False
    truncate: bool | None = Field(
        default=None, description="bertx: false refuses a pair over the model's length (413) [cut it]."
    )
    raw_scores: bool = Field(default=False, description="bertx: the head's logit instead of its probability.")


def add_openai_routes(app: FastAPI, models: Models) -> None:
    """Register /v1/embeddings, /v1/models and /v1/rerank on `app`."""
    loaded = int(time.time())

    @app.post("/v1/embeddings", summary="OpenAI-compatible embeddings")
    async def embeddings(body: OpenAIEmbeddingRequest) -> Response:
        service = models.pick(body.model)
        texts = service.texts(body.input)
        recipe = service.recipe(body.options, SENTENCE)
        vectors, tokens = await service.run(recipe, texts)
        data = [
            {"object": "embedding", "index": i, "embedding": vector_json(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"object": "list", "data": data, "model": service.name, "usage": usage})

    @app.get("/v1/models", summary="OpenAI-compatible list of the models served")
    async def list_models() -> Response:
        data = [{"id": name, "object": "model", "created": loaded, "owned_by": "bertx"} for name in models.services]
        return json_response({"object": "list", "data": data})

    @app.post("/v1/rerank", summary="Documents ordered by relevance to a query (Cohere's and Jina's shape)")
    async def rerank(body: OpenAIRerankRequest) -> Response:
        service = models.pick(body.model, RERANK)
        texts = service.texts([d if isinstance(d, str) else d.text for d in body.documents])
        scores, tokens = await service.rerank(body.query, texts, body.truncate, body.raw_scores)
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results: list[dict[str, Any]] = []
        for index in order:
            row: dict[str, Any] = {"index": int(index), "relevance_score": float(scores[index])}
            if body.return_documents:
                row["document"] = {"text": texts[index]}
            results.append(row)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"id": str(uuid.uuid4()), "model": service.name, "results": results, "usage": usage})
