"""A tiny random Qwen2.5-VL captioner, for tests and experiments offline (no caption quality: random weights).

The real class (``Qwen2_5_VLForConditionalGeneration``) built from Qwen2.5-VL-7B-Instruct's released config with
only the sizes changed (hidden sizes, layers, heads, vision depth and width, vocabulary), its processor with the
released settings (``Qwen2VLImageProcessor``'s patch size, merge size, temporal patch size, pixel bounds, CLIP
mean/std; the video processor's) and a real byte-level BPE tokenizer (``Qwen2Tokenizer``) trained here on a few
hundred words, with Qwen2.5-VL's special tokens and chat template, all saved with ``save_pretrained`` in the
released layout. ``from_pretrained`` on the folder and ``generate`` then run the real loading and generation code.
"""

from __future__ import annotations

import json
from pathlib import Path

# Qwen2.5-VL's special tokens, in the released vocabulary's order (ids follow the trained BPE's here).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the released models).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "a the an of in on at with and to from over under near behind beside while as it its is are was moves move "
    "moving slowly quickly across left right up down toward away camera pans tilts zooms static tracking shot wide "
    "close-up aerial view scene video shows frame background foreground light lighting soft bright dark warm cool "
    "sunlight shadow shadows colour color red green blue yellow white black grey orange purple pink brown golden "
    "circle square triangle shape shapes ball box car person man woman child dog cat bird tree trees grass field "
    "road street city building sky clouds water river sea beach mountain forest room table window door wall floor "
    "smooth gentle steady calm busy sunny rainy evening morning night day cinematic realistic style detailed "
    "texture surface edge edges small large tiny huge round flat bouncing rolling sliding falling rising turning "
    "walking running sitting standing holding looking wearing dress shirt hat hair face hands eyes smile open "
    "closed top bottom middle centre center corner side sides one two three several many few each other there "
    "this that these those which where when then after before during throughout entire whole clip continues"
).split()


def _train_tokenizer(vocab_size: int = 400):
    """vocab and merges of a byte-level BPE trained on ``_WORDS`` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    text = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(0, len(_WORDS), 7)]
    tok.train_from_iterator(text, trainer=trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return state["vocab"], merges


def save_tiny_captioner(out: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL-Instruct (model, tokenizer, processor) to ``out``; returns ``out``."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2Tokenizer)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = _train_tokenizer()
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace", unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=131072,
                               clean_up_tokenization_spaces=False, split_special_tokens=False)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)

    # Qwen2.5-VL-7B-Instruct's config.json with the sizes made tiny (everything else as released)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                sliding_window=32768, max_window_layers=28, use_sliding_window=False, hidden_act="silu",
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=False)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, hidden_act="silu",
                  in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2,
                  window_size=112, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], bos_token_id=ids["<|endoftext|>"],
                              eos_token_id=ids["<|im_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights large enough that greedy decoding does not stop at once
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    # the released preprocessor_config.json (Qwen2VLImageProcessor)
    image_processor = Qwen2VLImageProcessorPil(
        do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True, min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2,
        merge_size=2)
    video_processor = _video_processor()
    if video_processor is not None:  # the whole processor, as released (its video path needs torchvision)
        Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE).save_pretrained(out)
    else:  # the same files, part by part: the processor class cannot be built without torchvision
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
    config_path = out / "preprocessor_config.json"  # named as released (the PIL class loads for it without torchvision)
    pre = json.loads(config_path.read_text())
    pre.update(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2_5_VLProcessor")
    config_path.write_text(json.dumps(pre, indent=2) + "\n")
    return out


def _video_processor():
    """The released video processor's settings, or None where it cannot be built (it needs torchvision)."""
    try:
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return Qwen2VLVideoProcessor(
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
            min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2)
    except ImportError:
        return None
