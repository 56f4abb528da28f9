"""HTTP bodies of reranking and explanations: what a search asks of the reranker, how
it went, and why a hit matches (its explanation and the URL of its heatmap)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from xmodal.search.rerank.apply import ExplainReport
from xmodal.search.rerank.explain import Explanation
from xmodal.search.rerank.service import RerankReport, RerankRequest
from xmodal.search.rerank.settings import RerankMethod, RerankSettings

# A reranker spec is a Hub id (with @revision) or a folder path: a few hundred
# characters at most. Longer ones are refused before they reach the model registry.
MODEL_SPEC_CHARS = 1000

TOP_N_DESCRIPTION = "Rerank this many of the first hits (default: the server's rerank.top_n)."
MODEL_DESCRIPTION = (
    "The reranker's model spec, e.g. llava:llava-hf/llava-onevision-qwen2-0.5b-ov-hf or "
    "llava:local-dir:/path (default: the server's rerank.model)."
)
TIMEOUT_DESCRIPTION = (
    "Budget in milliseconds, at most the server's rerank.timeout_ms (the default); past "
    'it the hits keep their first order and `rerank.reason` says "timeout".'
)


class RerankOptions(BaseModel):
    """How to rerank a text search's first hits; an omitted field takes the server's
    `rerank` setting. `rerank_options_model` bounds it by those settings."""

    model_config = ConfigDict(extra="forbid")

    top_n: int | None = Field(None, ge=1, description=TOP_N_DESCRIPTION)
    model: str | None = Field(
        None, min_length=1, max_length=MODEL_SPEC_CHARS, description=MODEL_DESCRIPTION
    )
    method: RerankMethod | None = Field(
        None,
        description='"caption": the query\'s likelihood as the picture\'s caption; "vqa": '
        'the model\'s P(Yes) to "Does this image show ...?"; "auto": the model\'s own '
        "(default: the server's rerank.method).",
    )
    timeout_ms: float | None = Field(None, gt=0, description=TIMEOUT_DESCRIPTION)

    def request(self) -> RerankRequest:
        return RerankRequest(self.top_n, self.model, self.method, self.timeout_ms)


def rerank_options_model(settings: RerankSettings) -> type[RerankOptions]:
    """RerankOptions bounded by the server's settings: top_n by max_top_n, and the budget
    by timeout_ms, so that no request holds one of the server's threads longer."""
    return create_model(
        "RerankOptions",
        __base__=RerankOptions,
        __doc__=RerankOptions.__doc__,
        top_n=(
            int | None,
            Field(None, ge=1, le=settings.max_top_n, description=TOP_N_DESCRIPTION),
        ),
        timeout_ms=(
            float | None,
            Field(None, gt=0, le=settings.timeout_ms, description=TIMEOUT_DESCRIPTION),
        ),
    )


def _rerank_shape(value: Any) -> str:
    return "null" if value is None else "boolean" if isinstance(value, bool) else "options"


def rerank_field(options: type[RerankOptions]) -> Any:
    """The type of a search's `rerank`: true/false, the options object, or null. Told
    apart by the JSON type, so that a bad object gets the errors of the object alone
    (not also "not a boolean"), and OpenAPI shows oneOf [boolean, RerankOptions, null]."""
    return Annotated[
        Annotated[bool, Tag("boolean")]
        | Annotated[options, Tag("options")]
        | Annotated[None, Tag("null")],
        Discriminator(_rerank_shape),
    ]


class RerankOut(BaseModel):
    """How a search's reranking went."""

    applied: bool = Field(
        description="Whether the hits were reordered; false: they keep their first order "
        "(see reason)."
    )
    model: str = Field(description="The reranker's model spec.")
    method: str | None = Field(
        None,
        description='How pictures were scored, "caption" or "vqa"; null when the model could '
        "not be asked.",
    )
    reason: str | None = Field(
        None,
        description='Why not applied: "timeout", "model unavailable: ..." or "rerank '
        'failed: ..."; null when applied.',
    )
    candidates: int = Field(description="Hits considered (the first top_n).")
    scored: int = Field(description="Of them, those with a picture that got a rerank_score.")
    cached: int = Field(description="Of the scored, those answered from the score cache.")
    took_ms: float = Field(description="Milliseconds spent reranking.")

    @classmethod
    def of(cls, report: RerankReport) -> RerankOut:
        return cls.model_validate(report.__dict__)


class ExplainReportOut(BaseModel):
    """How a search's explanations went."""

    explained: int = Field(description="Hits that got an explanation.")
    model: str = Field(description="The model that explained them.")
    reason: str | None = Field(
        None, description="Why fewer hits than asked were explained (the model is unavailable)."
    )
    took_ms: float = Field(description="Milliseconds spent explaining.")

    @classmethod
    def of(cls, report: ExplainReport) -> ExplainReportOut:
        return cls.model_validate(report.__dict__)


class WordSupportOut(BaseModel):
    word: str = Field(description="A word of the query.")
    support: float = Field(
        description="How much the picture raises the model's log-probability of the word "
        "against a blank picture, in nats: >= 1 the picture shows it, <= -1 it argues "
        "against it."
    )


class ExplanationOut(BaseModel):
    """Why a picture matches a query, in the words of the vision-language model."""

    model: str = Field(description="The model that explained it.")
    description: str = Field(description="What the model says the picture shows.")
    summary: str = Field(description="One or two sentences a person can read.")
    confirmed: list[str] = Field(description="Words of the query the picture shows.")
    contradicted: list[str] = Field(description="Words of the query the picture argues against.")
    words: list[WordSupportOut] = Field(description="Each word of the query with its support.")
    heatmap_url: str = Field(
        description="Relative URL of a PNG of the picture coloured where the evidence for "
        "the query lies (GET /items/{item_id}/explain.png)."
    )

    @classmethod
    def of(cls, explanation: Explanation, heatmap: str) -> ExplanationOut:
        return cls(
            model=explanation.model,
            description=explanation.description,
            summary=explanation.summary,
            confirmed=explanation.confirmed,
            contradicted=explanation.contradicted,
            words=[WordSupportOut(word=w.word, support=w.support) for w in explanation.words],
            heatmap_url=heatmap,
        )


def heatmap_url(item_id: str, text: str, seconds: float | None, model: str | None) -> str:
    """The relative URL of an item's heatmap for a query: `t` the video moment (repr
    round-trips the float, so the same frame is decoded), `model` when not the server's."""
    params = {"q": text.strip()}
    if seconds is not None:
        params["t"] = repr(float(seconds))
    if model:
        params["model"] = model
    return f"/items/{quote(item_id, safe='')}/explain.png?{urlencode(params, quote_via=quote)}"


class ExplainRequest(BaseModel):
    """Why an indexed item matches a text; `explain_request_model` bounds `text`."""

    text: str = Field(description="The query text.")
    item_id: str = Field(description="The indexed image or video to explain.")
    t: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="For a video: the moment, in seconds (default: a tenth of the way in).",
    )
    model: str | None = Field(
        None, min_length=1, max_length=MODEL_SPEC_CHARS, description=MODEL_DESCRIPTION
    )


def explain_request_model(max_text_chars: int, max_id_chars: int = 512) -> type[ExplainRequest]:
    return create_model(
        "ExplainRequest",
        __base__=ExplainRequest,
        __doc__=ExplainRequest.__doc__,
        text=(str, Field(description="The query text.", max_length=max_text_chars)),
        item_id=(
            str,
            Field(description="The indexed image or video to explain.", max_length=max_id_chars),
        ),
    )


class ExplainResponse(ExplanationOut):
    took_ms: float = Field(description="Milliseconds, the model's work included.")

    @classmethod
    def answering(
        cls,
        explanation: Explanation,
        item_id: str,
        text: str,
        seconds: float | None,
        model: str | None,
        took_ms: float,
    ) -> ExplainResponse:
        """The answer to POST /explain {text, item_id, t: seconds, model}."""
        url = heatmap_url(item_id, text, seconds, model)
        return cls(**ExplanationOut.of(explanation, url).model_dump(), took_ms=took_ms)
