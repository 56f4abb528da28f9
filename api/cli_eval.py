"""`xmodal eval`: retrieval quality on a captioned dataset (api/evaluate.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .cli import JsonOpt, app, build_settings, console, errors


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="Folder with captions.csv, or a COCO captions JSON.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="Model to evaluate: image-text for images, audio-text for sounds."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Index into (and keep) this store instead of a temporary one."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder for a COCO JSON (default: its folder).")
    ] = None,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Also measure text->image with the top reranked.")
    ] = False,
    rerank_top: Annotated[
        int | None, typer.Option(help="Hits reranked per caption (default: rerank.top_n).")
    ] = None,
    rerank_model: Annotated[
        str | None, typer.Option(help="The reranker (default: rerank.model), e.g. xmodal-ref-vlm.")
    ] = None,
    rerank_method: Annotated[
        str | None, typer.Option(help="caption or vqa (default: the model's own).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality on captioned images or sounds: text->media and media->text
    Recall@1/5/10, median and mean rank; with --rerank, text->image reranked too."""
    from xmodal.search.evaluation import read_dataset
    from xmodal.search.rerank.service import RerankRequest

    from .evaluate import evaluate
    from .progress_bar import progress_for

    captioned = read_dataset(dataset, images)
    settings = build_settings(data=data, model=model)
    request = RerankRequest(rerank_top, rerank_model, rerank_method) if rerank else None
    report = evaluate(
        captioned,
        settings,
        keep_store=data is not None,
        progress=None if as_json else progress_for(errors, settings.log),
        rerank=request,
    )
    metrics, media = report.metrics, report.media
    directions = {
        f"text_to_{media}": metrics.text_to_media,
        f"{media}_to_text": metrics.media_to_text,
    }
    reranked = report.reranked
    if reranked is not None:
        directions[f"text_to_{media}_reranked"] = reranked.text_to_media
    files = "sounds" if media == "audio" else "images"
    if as_json:
        summary: dict[str, Any] = {
            "model": report.model,
            "media": media,
            files: report.images,
            "captions": report.captions,
            "failed": [{"path": p, "reason": r} for p, r in report.failed],
        }
        for name, d in directions.items():
            summary[name] = {
                **{f"R@{k}": round(v, 4) for k, v in d.recall.items()},
                "median_rank": d.median_rank,
                "mean_rank": round(d.mean_rank, 2),
                "queries": d.queries,
            }
        if reranked is not None:
            summary[f"text_to_{media}_reranked"].update(
                model=reranked.model,
                method=reranked.method,
                top_n=reranked.top_n,
                weight=reranked.weight,
                pairs=reranked.pairs,
                seconds=round(reranked.seconds, 1),
            )
        print(json.dumps(summary, indent=2))
        return
    table = Table(
        "direction", *(f"R@{k}" for k in metrics.ks), "median rank", "mean rank", "queries"
    )
    for name, d in directions.items():
        table.add_row(
            name.replace("_", " "),
            *(f"{d.recall[k]:.3f}" for k in metrics.ks),
            f"{d.median_rank:g}",
            f"{d.mean_rank:.2f}",
            str(d.queries),
        )
    console.print(f"{report.model}: {report.images} {files}, {report.captions} captions")
    console.print(table)
    if reranked is not None:
        console.print(
            f"reranked: top {reranked.top_n} of each caption by {reranked.model} "
            f"({reranked.method}, weight {reranked.weight:g}): {reranked.pairs} pairs in "
            f"{reranked.seconds:.1f} s"
        )
    if report.failed:
        console.print(f"{len(report.failed)} file(s) could not be indexed and were left out")
