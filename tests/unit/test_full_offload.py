"""The 5B full fine-tune with FSDP CPU offload (benchmarks/drafts/cogvideox-5b-full-offload.yaml): the transformer reaches
FSDP's wrapping on the CPU, whatever device it was handed in on, and the blocks stay checkpointed through the
wrapping (tests/unit/test_selective_checkpointing.py: test_checkpointing_survives_block_wrapping). Lightning's
FSDPStrategy needs a GPU, so the strategy is stood in for by what configure_model reads of it."""

from types import SimpleNamespace

import pytest
import torch
from torch.distributed.fsdp import CPUOffload

from workbench.model.loading import CogVideoXComponents
from workbench.model.tiny import build_tiny_pipeline
from workbench.train.module import CogVideoXModule


def _module(offload: bool, mode: str = "full"):
    pipe = build_tiny_pipeline(0, "cogvideox-5b")
    moves = []
    transformer = pipe.transformer
    original = transformer.to

    def to(*args, **kwargs):
        moves.append(args[0] if args else kwargs.get("device"))
        return original(*args, **kwargs)

    transformer.to = to
    module = CogVideoXModule(model="tiny", mode=mode, frozen_dtype="bf16", encoders="offload",
                             speed={"gradient_checkpointing": True})
    module.components = CogVideoXComponents(transformer, None, None, pipe.tokenizer, pipe.scheduler)
    module.vae_config = {"scaling_factor": 0.7}
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    if offload:
        strategy.cpu_offload = CPUOffload(offload_params=True)
    module._trainer = SimpleNamespace(strategy=strategy, precision="bf16-mixed")
    module.configure_model()
    return module, moves


@pytest.mark.parametrize("offload", [True, False])
def test_configure_model_hands_fsdp_offload_a_cpu_transformer(offload):
    module, moves = _module(offload)
    assert ("cpu" in moves) == offload  # moved to the CPU before the fp32 master copy is made, only under offload
    assert next(module.transformer.parameters()).dtype == torch.float32
    assert all(getattr(b, "_workbench_checkpoint_policy", None) == "full" for b in module.transformer.transformer_blocks)


def test_lora_mode_is_unchanged_without_offload():
    module, moves = _module(False, mode="lora")
    assert "cpu" not in moves and any(".lora_" in n for n, _ in module.transformer.named_parameters())
