"""Prompt embeddings: T5 tokenisation and encoding exactly as CogVideoXPipeline does it.

One function for training, the latent cache and anything else that embeds a caption, so a cached
embedding and a live one are the same tensor.
"""

from __future__ import annotations

import torch


def caption_token_count(tokenizer, caption: str) -> int:
    """Tokens of ``caption`` with the end-of-text token, as the model reads it before padding."""
    return len(tokenizer(caption).input_ids)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, captions: list[str], max_length: int) -> torch.Tensor:
    """T5 embeddings (B, max_length, D) on the text encoder's device.

    As ``CogVideoXPipeline._get_t5_prompt_embeds``: padded to ``max_length`` (the transformer's
    ``max_text_seq_length``, 226 for CogVideoX), truncated beyond it, no attention mask.
    """
    ids = tokenizer(captions, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]
