"""The questions a reranker asks a vision-language model, and how they become tokens.

Prompts go through the processor's own chat template, so a downloaded LLaVA-1.5, a
LLaVA-OneVision and the project's reference model (training/train_vlm_reference.py,
trained on exactly these prompts) are asked the same way. Answers are tokenised on
their own and appended to the prompt's tokens, so the answer's tokens are known
exactly whatever the tokenizer merges across the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Caption likelihood: how probable the query is as this picture's caption.
CAPTION_PROMPT = "Write a caption for this picture."
# Explanations: what the picture shows, in the model's own words.
DESCRIBE_PROMPT = "Describe this picture in detail."
YES, NO = "Yes", "No"


def vqa_prompt(query: str) -> str:
    """VQAScore's question (Lin et al., arXiv 2404.01291): P(Yes) is the score."""
    return f'Does this image show "{query}"? Answer yes or no.'


def chat_prompt(processor: Any, instruction: str) -> str:
    """One user turn (a picture, then `instruction`) and the assistant's cue, as text."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
    ]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def answer_text(prompt: str, answer: str) -> str:
    """The answer as it follows the prompt: after "ASSISTANT:" with a space, after a
    newline as is (LLaVA-1.5 and Qwen-style templates respectively)."""
    return answer if not prompt or prompt[-1].isspace() else f" {answer}"


@dataclass
class Encoded:
    """A padded batch: model inputs, and per position the token the model should
    predict there (-100 where nothing is asked: prompt, picture, padding)."""

    inputs: dict[str, Any]  # input_ids, attention_mask, pixel_values (+ image_sizes, ...)
    targets: Any  # (batch, length) long tensor, aligned with input_ids
    answer_span: int  # the longest answer, in tokens: every answer is in the last
    # answer_span positions when padded on the left


def encode(
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    end: bool = False,
    pad_left: bool = False,
) -> Encoded:
    """Tokenise picture+prompt pairs with answers to score (or train on).

    `prompts` are chat prompts (chat_prompt), one per picture. With `end` the
    tokenizer's end-of-sequence token closes each answer (training: the model learns
    to stop); scoring leaves it off, since a query may be part of a longer caption.
    With `pad_left` every row ends at the last position, so a forward pass need only
    compute the vocabulary's logits for the last `answer_span + 1` positions; the
    inputs then carry explicit position ids.
    """
    import torch

    if not (len(images) == len(prompts) == len(answers)):
        raise ValueError("one prompt and one answer per picture")
    tokenizer = processor.tokenizer
    batch = processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
    rows: list[list[int]] = []
    starts: list[int] = []
    for i, answer in enumerate(answers):
        mask = batch["attention_mask"][i].bool()
        prompt_ids = batch["input_ids"][i][mask].tolist()
        answer_ids = tokenizer(answer_text(prompts[i], answer), add_special_tokens=False)[
            "input_ids"
        ]
        if end and tokenizer.eos_token_id is not None:
            answer_ids = [*answer_ids, tokenizer.eos_token_id]
        starts.append(len(prompt_ids))
        rows.append(prompt_ids + list(answer_ids))
    length = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    targets = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        first = length - len(row) if pad_left else 0
        span = slice(first, first + len(row))
        input_ids[i, span] = torch.tensor(row)
        attention[i, span] = 1
        targets[i, first + start : first + len(row)] = input_ids[i, first + start : span.stop]
    inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    inputs.update(input_ids=input_ids, attention_mask=attention)
    if pad_left:
        inputs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
    answer_span = max(len(row) - start for row, start in zip(rows, starts, strict=True))
    return Encoded(inputs, targets, answer_span)


def answer_logprobs(logits: Any, targets: Any) -> Any:
    """Per position, log p(target token) under the model (0 where nothing is asked).

    logits (batch, length, vocab) from a forward pass over Encoded.inputs; position t's
    logits predict token t+1."""
    import torch

    shifted = targets[:, 1:]
    asked = shifted != -100
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(asked, picked, torch.zeros_like(picked))
