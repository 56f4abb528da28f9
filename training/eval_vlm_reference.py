"""The reference reranker's figures on held-out scenes, through the engine.

    python -m training.eval_vlm_reference --pairs 200 --singles 200

Held-out scenes come from xmodal/synthetic/swapped_pairs.py, whose drawing code is
not the trainer's renderer. Measured:
  binding      swapped-colour pairs: each pair's two pictures are indexed with
               xmodal-ref (metadata `pair`), and the pair's query is searched with a
               filter on that pair, without and with reranking (each method): the
               share of queries whose right picture comes first;
  description  engine.explain's description names exactly the scene's colours and
               shapes (pairs' right pictures and single objects);
  heatmap      single-object scenes: the heatmap's hottest cell lies inside the
               object's bounding box (Grad-CAM and plain gradient).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from xmodal.indexer import index_paths
from xmodal.search import Engine
from xmodal.search.encoders.builtin import REFERENCE_MODEL, REFERENCE_RERANKER
from xmodal.search.rerank import CAPTION, VQA
from xmodal.search.rerank.explain import peak
from xmodal.search.rerank.service import RerankRequest
from xmodal.search.rerank.settings import RerankSettings
from xmodal.search.store import item_id_for
from xmodal.synthetic.swapped_pairs import names_exactly, single_objects, swapped_pairs


def evaluate(
    pairs: int,
    singles: int,
    seed: int,
    model: str,
    reranker: str,
    split: str,
    weight: float = RerankSettings().weight,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="xmodal-vlm-eval-") as scratch:
        folder = Path(scratch) / "library"
        folder.mkdir()
        held_out = swapped_pairs(pairs, seed, split)
        metadata: dict[str, dict[str, object]] = {}
        for i, pair in enumerate(held_out):
            for role, image in (("right", pair.image), ("twin", pair.twin)):
                path = folder / f"pair{i:04d}-{role}.png"
                image.save(path)
                metadata[str(path)] = {"pair": i, "role": role}
        engine = Engine.open(
            Path(scratch) / "store",
            model=model,
            device="cpu",
            audio_model="none",
            rerank=RerankSettings(model=reranker, timeout_ms=600_000, top_n=2, weight=weight),
        )
        index_paths(engine, [folder], metadata=metadata)
        first_wins = {"contrastive": 0, CAPTION: 0, VQA: 0}
        started = time.perf_counter()
        for i, pair in enumerate(held_out):
            right = item_id_for(str(folder / f"pair{i:04d}-right.png"))
            found = engine.search_text(pair.query, k=2, filter={"pair": i})
            first_wins["contrastive"] += found.hits[0].item.id == right
            for method in (CAPTION, VQA):
                request = RerankRequest(top_n=2, method=method)
                reranked = engine.search_text(pair.query, k=2, filter={"pair": i}, rerank=request)
                assert reranked.rerank is not None and reranked.rerank.applied, reranked.rerank
                first_wins[method] += reranked.hits[0].item.id == right
        binding_seconds = time.perf_counter() - started

        described = 0
        for i, pair in enumerate(held_out):
            right = item_id_for(str(folder / f"pair{i:04d}-right.png"))
            described += names_exactly(engine.explain(pair.query, right).description, pair.scene)
        reranker_model = engine.reranking.reranker()
        singles_set = single_objects(singles, seed, split)
        described_single = 0
        inside = {"occlusion": 0, "gradcam": 0, "gradient": 0}
        for item in singles_set:
            description = reranker_model.describe([item.image])[0]
            described_single += names_exactly(description, item.scene)
            x0, y0, x1, y1 = item.box
            side = item.image.width  # square pictures: the model's view is all of it
            for weighting in inside:
                fx, fy = peak(reranker_model.heatmap(item.query, item.image, weighting))
                inside[weighting] += x0 <= fx * side < x1 and y0 <= fy * side < y1
    return {
        "model": model,
        "reranker": reranker,
        "split": split,
        "seed": seed,
        "pairs": pairs,
        "weight": weight,
        "binding_first_right": {name: round(v / pairs, 4) for name, v in first_wins.items()},
        "binding_seconds": round(binding_seconds, 1),
        "description_names_exactly": {
            "pairs": round(described / pairs, 4),
            "single_objects": round(described_single / max(singles, 1), 4),
        },
        "singles": singles,
        "heatmap_peak_inside_object": {k: round(v / max(singles, 1), 4) for k, v in inside.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--split", choices=["seen", "unseen"], default="seen")
    parser.add_argument("--model", default=REFERENCE_MODEL)
    parser.add_argument("--reranker", default=REFERENCE_RERANKER)
    parser.add_argument(
        "--weight", type=float, default=RerankSettings().weight, help="rerank.weight"
    )
    args = parser.parse_args(argv)
    figures = evaluate(
        args.pairs, args.singles, args.seed, args.model, args.reranker, args.split, args.weight
    )
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
