"""Parts of a LLaVA-architecture model built from configs, with no download.

The reference reranker (training/train_vlm_reference.py) and the tests' tiny random
models (LLaVA-1.5 and LLaVA-OneVision layouts) are built here and saved the way
`save_pretrained` saves a downloaded checkpoint: config, weights, tokenizer,
processor and chat template in one folder, so that they load through exactly the
code a Hub model goes through.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK, IMAGE, VIDEO = "<pad>", "<s>", "</s>", "<unk>", "<image>", "<video>"

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), written for our
# processors: the image placeholder comes first in a user turn.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Qwen2's ChatML layout, as LLaVA-OneVision's processor uses it.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512, extra: Iterable[str] = ()) -> Any:
    """A byte-level BPE tokenizer trained on `corpus` (any text still encodes: bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK, IMAGE, VIDEO, *extra]
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE},
    )


def clip_image_processor(image_size: int) -> Any:
    """CLIP preprocessing: shortest edge to `image_size`, centre crop, CLIP's mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def llava_processor(tokenizer: Any, image_size: int, patch_size: int) -> Any:
    """A LLaVA-1.5-style processor: CLIP preprocessing, one token per patch (no CLS)."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=clip_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def llava_model(
    tokenizer: Any,
    *,
    image_size: int,
    patch_size: int,
    vision_width: int,
    vision_layers: int,
    text_width: int,
    text_layers: int,
    heads: int = 4,
    seed: int = 0,
) -> Any:
    """A LlavaForConditionalGeneration with a CLIP vision tower and a Llama language model."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_width,
        intermediate_size=vision_width * 4,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        projection_dim=vision_width,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_width,
        intermediate_size=text_width * 8 // 3 // 16 * 16,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_llava(folder: Path, model: Any, processor: Any) -> Path:
    """Write model and processor as from_pretrained reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_llava(folder: Path, seed: int = 0) -> Path:
    """A random LLaVA-1.5-layout model small enough for tests, saved to `folder`."""
    corpus = ["a red square on the left", "Does this image show", "Answer yes or no."] * 4
    tokenizer = build_tokenizer(corpus, vocab_size=300)
    model = llava_model(
        tokenizer,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        text_width=32,
        text_layers=2,
        seed=seed,
    )
    return save_llava(folder, model, llava_processor(tokenizer, 32, 8))


def tiny_onevision(folder: Path, seed: int = 0) -> Path:
    """A random model of LLaVA-OneVision's layout (SigLIP tower without a class token,
    Qwen2 language model, "anyres" tiling of large pictures, ChatML prompts), saved to
    `folder`: the code path of llava-hf/llava-onevision-qwen2-0.5b-ov-hf, in miniature."""
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    size, patch = 32, 8
    corpus = ["a red square on the left", "Does this image show", "Answer yes or no."] * 4
    tokenizer = build_tokenizer(corpus, vocab_size=300, extra=["<|im_start|>", "<|im_end|>"])
    pinpoints = [[size, size], [size, 2 * size], [2 * size, size]]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            image_size=size,
            patch_size=patch,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
        ),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        num_image_tokens=(size // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHATML_TEMPLATE,
    )
    return save_llava(folder, model, processor)
