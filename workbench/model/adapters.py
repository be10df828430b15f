"""PEFT LoRA on the CogVideoX transformer, saved and loaded in the diffusers LoRA format."""

from __future__ import annotations

from peft import LoraConfig


def add_lora(transformer, rank: int, alpha: float, dropout: float, targets: list[str]) -> LoraConfig:
    """Inject a LoRA adapter (diffusers' add_adapter over PEFT); only its weights require grad."""
    if rank < 1:
        raise ValueError(f"lora_rank={rank}: must be >= 1")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights=True,
                        target_modules=targets)
    transformer.add_adapter(config)
    return config
