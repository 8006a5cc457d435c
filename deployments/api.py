"""The HTTP contract of the search app: request/response models, input checks and readable 4xx errors.

Every bad input (empty, over-long or control-character queries, k out of range, wrong JSON types, unknown
fields, malformed JSON) is answered with 422 and a message naming the field and the fix, never a 500.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_QUERY_CHARS = 512
MAX_K = 1000
MAX_FILTER_VALUES = 64
PAGE = Path(__file__).with_name("search.html")

FilterValue = Annotated[StrictStr, Field(min_length=1, max_length=200)]


class SearchRequest(BaseModel):
    """``POST /search`` body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: StrictStr = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="shopper query text",
                             examples=["red tshirt for men"])
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of results")
    filters: dict[StrictStr, FilterValue | list[FilterValue]] | None = Field(
        None, max_length=16, description="attribute filters, e.g. {\"gender\": \"Women\", \"baseColour\": "
                                         "[\"Black\", \"Red\"]}; a product must match every column, any value")
    rerank: bool = Field(True, description="order by the re-ranker attached to the served version, when it has "
                                           "one (`vitrine rerank --attach=true`); false = dense order only")

    @field_validator("query")
    @classmethod
    def _clean_query(cls, q: str) -> str:
        bad = next(((i, c) for i, c in enumerate(q) if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn")
                    and c not in "\t\n\r"), None)
        if bad is not None:
            raise ValueError(f"query contains the control/invalid character U+{ord(bad[1]):04X} at position "
                             f"{bad[0]}; send plain text")
        if not q.strip():
            raise ValueError("query is only whitespace; send at least one word")
        return " ".join(q.split())

    @field_validator("filters")
    @classmethod
    def _lists(cls, f: dict[str, str | list[str]] | None) -> dict[str, list[str]] | None:
        if f is None:
            return None
        out = {col: [v] if isinstance(v, str) else list(v) for col, v in f.items()}
        for col, values in out.items():
            if not values or len(values) > MAX_FILTER_VALUES:
                raise ValueError(f"filter {col!r} needs 1..{MAX_FILTER_VALUES} values, got {len(values)}")
        return out


class SearchHit(BaseModel):
    """One result."""

    product_id: str
    title: str
    score: float
    title_weight: float = Field(description="Modal Adaptation weight of the title in the product vector")
    image_weight: float = Field(description="Modal Adaptation weight of the image (0 when it has none)")
    image_url: str | None = Field(None, description="product image, or null when the product has none")
    stage: str = Field("dense", description="what ordered it: 'rerank' (the attached ranker, score = its score) "
                                            "or 'dense' (the index, score = cosine)")


class SearchResponse(BaseModel):
    """``POST /search`` answer."""

    query: str
    k: int
    results: list[SearchHit]
    model_name: str
    model_version: str
    reranked: bool = Field(False, description="the served version's re-ranker ordered the results")
    took_ms: float


class ErrorResponse(BaseModel):
    """A 4xx answer: a readable message plus the details."""

    detail: str
    errors: list[dict[str, Any]] = []


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')}); send a JSON " \
               "object such as {\"query\": \"red shirt\", \"k\": 10}"
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{loc}'; allowed fields: query, k, filters, rerank"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{loc}: {err.get('msg', 'invalid')} (got {got})"


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence per problem (FastAPI's details kept, inputs cut short)."""
    errors = [{k: (str(v)[:200] if k in ("input", "ctx") else v) for k, v in e.items() if k != "url"}
              for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": "; ".join(_describe(e) for e in exc.errors()),
                                                  "errors": errors})


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """HTTP errors as JSON; FastAPI's vague body-parse 400 gets a message saying what to send."""
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = ("request body could not be read as UTF-8 JSON; send a JSON object such as "
                  "{\"query\": \"red shirt\", \"k\": 10} with content-type application/json")
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)


def make_api() -> FastAPI:
    """The FastAPI app the ingress is mounted on (routes are the ingress's methods)."""
    api = FastAPI(title="Vitrine search", version="0.2.0",
                  description="Text-to-multimodal product search: a shopper query in, products judged by "
                              "their title and image out. `GET /` is a search page.")
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    return api
