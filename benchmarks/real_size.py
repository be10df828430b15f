"""Real-size CogVideoX-2B measurements on one GPU (random weights, the real configs).

Side by side in one process, on the same GPU: the plain diffusers + PEFT training step (the loop of
diffusers' examples/cogvideo/train_cogvideox_lora.py: bf16 base weights, fp32 LoRA, autocast, AdamW) and
the workbench's LightningModule step through a Lightning Trainer (bf16-mixed), with SDPA and with
FlashAttention-4; the A6000 recipes' validation rounds (validation loss + a validation video, as the
recipe's callbacks run them, after training steps); each bucket's step; and the stock pipeline's
seconds per 50-step CFG video with the exact and the approximate levers (videos per GPU-hour).

Every case reports the step time and the **allocated and reserved** peaks; "fits an A6000" counts the
reserved peak plus this process's CUDA context against the RTX A6000's 49,140 MiB (about 47.4 GiB
usable for the allocator). A case that asks for FlashAttention-4 where it cannot run is recorded as an
error, never silently run with SDPA.

    python benchmarks/real_size.py --out results.json --group training --loss-curves
    python benchmarks/real_size.py --out results.json --group validation,buckets
    python benchmarks/real_size.py --out results.json --group inference
    python benchmarks/real_size.py --only workbench_lora_r128_nockpt_compiled_flash4
    python benchmarks/real_size.py --smoke            # every case at toy size on the CPU (flash4: strict stand-in)

Model TFLOP/s counts forward + backward as 3x the forward FLOPs (recomputation not counted).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
A6000_MIB = 49140  # RTX A6000 (48 GB GDDR6) as nvidia-smi reports it


@dataclass
class Size:
    frames: int
    height: int
    width: int
    latent_channels: int
    text_len: int
    text_dim: int

    def latent(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int, int]:
        """(F', C, H/8, W/8) of a clip of this size (or of ``height`` x ``width``)."""
        return ((self.frames - 1) // 4 + 1, self.latent_channels, (height or self.height) // 8,
                (width or self.width) // 8)


REAL = Size(49, 480, 720, 16, 226, 4096)
REAL_15 = Size(81, 768, 1360, 16, 226, 4096)  # CogVideoX1.5-5B's native clip
SMOKE = Size(9, 64, 64, 4, 32, 32)  # the tiny random model of workbench.model.tiny
SIZE = REAL
DEVICE = "cuda"
MAX_STEPS = None  # --max-steps: every case's step count capped (a device call's 10 minutes)
FAMILY_SIZE = {"1.5": REAL_15, "1.5-i2v": REAL_15}  # the other families train at REAL


def cuda() -> bool:
    return DEVICE == "cuda"


def transformer_forward_flops(cfg, latent_frames=13, h=60, w=90, text_len=226) -> float:
    """Matmul FLOPs of one transformer forward (2 * MACs), attention included."""
    d = cfg.num_attention_heads * cfg.attention_head_dim
    tokens = latent_frames // (getattr(cfg, "patch_size_t", None) or 1) * (h // cfg.patch_size) * (w // cfg.patch_size)
    tokens += text_len
    per_layer = 2 * tokens * (4 * d * d)           # q, k, v, out projections
    per_layer += 2 * tokens * (2 * d * 4 * d)      # feed-forward (4x, gelu)
    per_layer += 2 * 2 * tokens * tokens * d       # QK^T and AV
    return cfg.num_layers * per_layer


# What the released transformer configs change against diffusers' defaults (= CogVideoX-2B's), from
# scripts/convert_cogvideox_to_diffusers.py; workbench/model/tiny.py's FAMILY_CHANGES are the same keys.
REAL_CONFIGS = {
    "2b": {},
    "5b": dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True),
    "1.5": dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True, patch_size_t=2,
                patch_bias=False, sample_height=300, sample_width=300, sample_frames=81),
}
# The image-to-video transformers (THUDM/CogVideoX-5b-I2V, THUDM/CogVideoX1.5-5B-I2V): twice the latent channels
# in (the video's 16 + the image's 16); 5B-I2V adds learned positional embeddings for its 49 x 60 x 90 sample size
# (diffusers' defaults), 1.5-I2V the ofs embedding (ofs_embed_dim = time_embed_dim = 512). tiny.py's FAMILY_CHANGES
# change the same keys.
REAL_CONFIGS["5b-i2v"] = dict(REAL_CONFIGS["5b"], in_channels=32, use_learned_positional_embeddings=True)
REAL_CONFIGS["1.5-i2v"] = dict(REAL_CONFIGS["1.5"], in_channels=32, ofs_embed_dim=512)
VAE_SCALING = {"2b": 1.15258426, "5b": 0.7, "1.5": 0.7, "5b-i2v": 0.7, "1.5-i2v": 0.7}
# The VAE config keys the families read besides the scaling factor: 1.5's invert_scale_latents (the I2V pipeline
# divides the image latent by the scaling factor)
VAE_EXTRA = {"1.5": {"invert_scale_latents": True}, "1.5-i2v": {"invert_scale_latents": True}}
SMOKE_FAMILY = {"2b": "cogvideox-2b", "5b": "cogvideox-5b", "1.5": "cogvideox1.5-5b", "5b-i2v": "cogvideox-5b-i2v",
                "1.5-i2v": "cogvideox1.5-5b-i2v"}


def build_transformer(dtype, family="2b", device=None):
    """The family's transformer with random weights in ``dtype`` on ``device`` (default: the benchmark's device;
    ``cpu`` for a strategy that shards or offloads it when it wraps the model)."""
    from diffusers import CogVideoXTransformer3DModel

    if SIZE is SMOKE:
        from workbench.model.tiny import build_tiny_pipeline

        return build_tiny_pipeline(0, SMOKE_FAMILY[family]).transformer.to(dtype)
    # Built directly in ``dtype`` (as from_pretrained(torch_dtype=...) loads): built in float32 first, a 5B
    # transformer alone peaks at 20.7 GiB on the GPU before the first step, and that peak was once read as the
    # training step's.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device or DEVICE):
            net = CogVideoXTransformer3DModel(**REAL_CONFIGS[family])
    finally:
        torch.set_default_dtype(default)
    return net.to(dtype)


def build_encoders(dtype):
    """(VAE, T5 encoder, tokenizer) at the real configs (the tiny ones with --smoke), frozen, eval mode."""
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5Config, T5EncoderModel

    from workbench.model.tiny import build_tiny_pipeline, t5_style_tokenizer

    if SIZE is SMOKE:
        pipe = build_tiny_pipeline()
        vae, t5, tok = pipe.vae, pipe.text_encoder, pipe.tokenizer
    else:
        with torch.device(DEVICE):
            vae = AutoencoderKLCogVideoX()  # CogVideoX-2B's VAE config (scaling factor 1.15258426)
            t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                         num_heads=64, feed_forward_proj="gated-gelu",
                                         relative_attention_num_buckets=32))
        tok = t5_style_tokenizer(Path(tempfile.mkdtemp()))
        tok.model_max_length = SIZE.text_len
    return vae.to(dtype).eval().requires_grad_(False), t5.to(dtype).eval().requires_grad_(False), tok


def scheduler():
    from diffusers import CogVideoXDPMScheduler

    from workbench.model.tiny import COGVIDEOX_2B_SCHEDULER

    return CogVideoXDPMScheduler(**COGVIDEOX_2B_SCHEDULER)


def cleanup():
    gc.collect()
    if cuda():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync():
    if cuda():
        torch.cuda.synchronize()


def peaks() -> dict:
    """Allocated and reserved peaks (GiB) since the last reset."""
    if not cuda():
        return {"alloc_gib": 0.0, "reserved_gib": 0.0}
    return {"alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
            "reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def cuda_context_gib() -> float:
    """Device memory this process holds outside PyTorch's allocator (the CUDA context, cuBLAS/cuDNN
    workspaces and module images): driver-reported use minus what the allocator has reserved. Other
    processes on the GPU would count too; the device machine runs none."""
    if not cuda():
        return 0.0
    free, total = torch.cuda.mem_get_info()
    return (total - free - torch.cuda.memory_reserved()) / 2**30


def a6000_verdict(reserved_gib: float, context_gib: float) -> dict:
    """Does a peak fit an RTX A6000? reserved + CUDA context against its 49,140 MiB."""
    need = reserved_gib + context_gib
    return {"a6000_need_gib": round(need, 2), "fits_a6000": need <= A6000_MIB / 1024}


def timed(step, n_warmup=2, n=5):
    for _ in range(n_warmup):
        step()
    sync()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flash4_fn():
    """FlashAttention-4's flash_attn_func, or with --smoke the tests' strict stand-in (same contract)."""
    if SIZE is SMOKE:
        sys.path.insert(0, str(REPO))
        from tests.helpers.kernels import strict_flash_attn_func

        return strict_flash_attn_func
    return None


def install_attention(transformer, attention: str, compute_dtype=torch.bfloat16) -> None:
    """``sdpa`` (diffusers' processor) or ``flash4`` exactly as the workbench installs it; with --smoke the
    FlashAttention-4 processor gets the strict stand-in kernel."""
    from workbench.model.attention import Flash4Attention, set_attention, set_flash4_kernels

    if attention == "sdpa":
        return
    if SIZE is SMOKE:  # the op workbench::flash4_attention over the tests' CPU reference kernels
        flash4_fn()
        from tests.helpers.kernels import reference_flash4_backward, reference_flash4_forward

        set_flash4_kernels(reference_flash4_forward, reference_flash4_backward)
        transformer.set_attn_processor(Flash4Attention())
    elif set_attention(transformer, "flash4", DEVICE, compute_dtype=compute_dtype) != "flash4":
        raise RuntimeError("FlashAttention-4 was asked for and is not in use")


def baseline_lora(rank, checkpointing, profile=None, family="2b", fp8=False, steps=7, attention="sdpa"):
    """Plain diffusers + PEFT, as diffusers' CogVideoX LoRA example trains.

    ``family``: 2b, 5b, 1.5, 5b-i2v or 1.5-i2v (the released transformer configs); ``fp8``: diffusers' layerwise
    casting of the base weights after add_adapter (fp8 storage, bf16 compute; the LoRA layers are skipped by
    default). ``attention``: sdpa or flash4 (the workbench's FlashAttention-4 processor on the plain loop).
    An image-to-video family is conditioned as the stock CogVideoXImageToVideoPipeline feeds its transformer
    (``i2v_step``). ``profile``, if a path, receives a kernel-time summary of one more step (torch.profiler)."""
    from peft import LoraConfig

    from workbench.model.families import family_of_configs
    from workbench.model.objective import diffusion_loss

    steps = min(steps, MAX_STEPS or steps)
    net = build_transformer(torch.bfloat16, family).requires_grad_(False)
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                               target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if fp8:
        net.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    fam = family_of_configs(net.config)
    resident = torch.cuda.memory_allocated() / 2**30 if cuda() else 0.0
    if cuda():
        torch.cuda.reset_peak_memory_stats()  # the step's peak, not the model's construction
    if checkpointing:
        net.enable_gradient_checkpointing()
    install_attention(net, attention)
    net.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = scheduler()
    size = FAMILY_SIZE.get(family, SIZE) if SIZE is REAL else SIZE
    lat = torch.randn(1, *size.latent(), device=DEVICE, dtype=torch.bfloat16)
    lat = fam.pad_latent_frames(lat)  # 1.5: 21 latent frames -> 22, as the pipeline pads
    emb = torch.randn(1, SIZE.text_len, SIZE.text_dim, device=DEVICE, dtype=torch.bfloat16)
    i2v = family.endswith("-i2v")
    if i2v:  # the latent of the conditioning image (a VAE encode of the clip's first frame), one latent frame
        image = torch.randn(1, 1, *lat.shape[2:], device=DEVICE, dtype=torch.bfloat16)
        vae_config = {"scaling_factor": VAE_SCALING[family], **VAE_EXTRA.get(family, {})}

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            if i2v:
                loss = i2v_loss(net, sched, lat, emb, image, vae_config, fam)
            else:
                loss = diffusion_loss(net, sched, lat, emb, family=fam)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = timed(step, n=max(1, steps - 2))
    result = {"step_s": seconds, "resident_gib": resident, **peaks(), "flops_shape": tuple(lat.shape[1:2]) + tuple(lat.shape[3:])}
    if profile:
        with step_profiler() as prof:
            t0 = time.perf_counter()
            step()
            sync()
        write_profile(prof, profile, time.perf_counter() - t0)
    return result, net.config


def i2v_loss(net, sched, latents, prompt_embeds, image_latent, vae_config, fam):
    """One image-to-video training loss written plainly, as a diffusers user conditions the transformer the way
    CogVideoXImageToVideoPipeline does (prepare_latents and __call__): the image latent scaled (multiplied by
    the scaling factor, divided with the VAE's ``invert_scale_latents``, CogVideoX1.5), in the first latent
    frame and zeros after it, concatenated on channels to the noisy video latents; ``ofs`` 2.0 where the
    transformer has an ofs embedding (1.5-I2V). The loss as the diffusers example: x0 from v, weighted by
    1 / (1 - alphas_cumprod[t]). ``latents`` are already padded to the frame count the transformer takes (the
    1.5 pipeline pads the video latents in front; the image latent sits in that first frame)."""
    b, f = latents.shape[:2]
    if vae_config.get("invert_scale_latents"):
        image_latent = image_latent / vae_config["scaling_factor"]
    else:
        image_latent = image_latent * vae_config["scaling_factor"]
    zeros = image_latent.new_zeros(b, f - 1, *image_latent.shape[2:])
    image_latents = torch.cat([image_latent, zeros], dim=1)
    noise = torch.randn_like(latents)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), device=latents.device)
    noisy = sched.add_noise(latents, noise, t)
    ofs = noisy.new_full((1,), 2.0) if net.config.ofs_embed_dim else None
    rotary = fam.rotary_embeddings(f, latents.shape[3], latents.shape[4], latents.device)
    v = net(hidden_states=torch.cat([noisy, image_latents], dim=2), encoder_hidden_states=prompt_embeds, timestep=t,
            ofs=ofs, image_rotary_emb=rotary, return_dict=False)[0]
    pred = sched.get_velocity(v, noisy, t)
    alphas = sched.alphas_cumprod.to(latents.device)[t]
    weights = (1 / (1 - alphas)).view(b, 1, 1, 1, 1)
    return (weights * (pred.float() - latents.float()) ** 2).reshape(b, -1).mean(1).mean()


def recipe_settings(recipe: str) -> tuple[dict, dict]:
    """(the recipe's ``model:`` arguments, its ValidationVideos arguments), read from recipes/<recipe>.yaml."""
    import yaml

    cfg = yaml.safe_load((REPO / "recipes" / f"{recipe}.yaml").read_text())
    videos = next(cb.get("init_args", {}) for cb in cfg["trainer"]["callbacks"]
                  if cb["class_path"].endswith("ValidationVideos"))
    return dict(cfg["model"]), dict(videos)


def workbench_step(mode="lora", rank=128, checkpointing=False, source="cache", steps=7, fraction=1.0,
                   compile_=False, losses=None, profile=None, attention="sdpa", size=None, recipe=None,
                   validation_steps=None, family="2b", frozen_storage=None, strategy=None, policy="full"):
    """The workbench's LightningModule through a Lightning Trainer; median step time over steps 3..N, and
    the training steps' allocated/reserved peaks.

    ``attention``: sdpa or flash4 (FlashAttention-4, as ``model.speed.attention: flash4`` installs it).
    ``size``: (height, width) of the clips (a bucket); default the native 480 x 720.
    ``recipe``: take every model argument from recipes/<recipe>.yaml instead (rank, checkpointing, compile...).
    ``validation_steps``: after training, one validation round as the recipe's callbacks run it (the
    validation loss over 4 samples, then a validation video through ``sampling_pipeline``, the VAE and T5
    moved from the CPU to the GPU for it) with this many denoising steps (every step has the same shape,
    so the peak does not depend on their number); its own allocated/reserved peaks are reported.
    ``losses``, if a list, receives the training loss of every step (for the loss-curve comparison).
    ``profile``, if a path, receives a kernel-time summary of the last step (torch.profiler).
    ``strategy``: None (one device, plain) or ``fsdp_offload``: Lightning's FSDPStrategy on the one GPU with
    every CogVideoXBlock wrapped and parameters, gradients and AdamW state offloaded to the CPU (what
    benchmarks/drafts/cogvideox-5b-full-offload.yaml sets); the transformer is then built on the CPU, as ``configure_model``
    loads it from a model directory, so that FSDP moves one block at a time to the GPU, flattens it and offloads
    it back; the process's peak host memory is reported as well.
    ``policy``: ``model.speed.checkpoint_policy`` (full, attention, attention_and_matmuls).
    ``family``: 2b, 5b, 1.5, 5b-i2v or 1.5-i2v; an image-to-video family trains from cached image latents too.
    """
    import resource

    import lightning as L
    from torch.utils.data import DataLoader, Dataset

    from workbench.model.loading import CogVideoXComponents
    from workbench.train.callbacks import StepStats, ValidationVideos
    from workbench.train.guards import NonFiniteGuard
    from workbench.train.module import CogVideoXModule

    steps = min(steps, MAX_STEPS or steps)
    clip = FAMILY_SIZE.get(family, SIZE) if SIZE is REAL else SIZE
    height, width = size or (clip.height, clip.width)
    latent = clip.latent(height, width)
    on_device = source == "raw"
    vae = t5 = tok = None
    if on_device or validation_steps:
        vae, t5, tok = build_encoders(torch.bfloat16)
        if not on_device:  # offloaded, as encoders: offload keeps them: on the CPU until sampling
            vae, t5 = vae.cpu(), t5.cpu()
            cleanup()
    kwargs = dict(mode=mode, lora={"rank": rank, "alpha": rank}, frozen_dtype="bf16", learning_rate=1e-4,
                  warmup_steps=0, speed={"gradient_checkpointing": checkpointing, "checkpoint_fraction": fraction,
                                         "checkpoint_policy": policy, "compile_blocks": compile_,
                                         "frozen_storage": frozen_storage})
    videos = {}
    if recipe:
        kwargs, videos = recipe_settings(recipe)
        kwargs["warmup_steps"] = 0
    speed = kwargs["speed"] = dict(kwargs.get("speed") or {})
    compile_ = speed.get("compile_blocks", False)
    speed["attention"] = "sdpa" if SIZE is SMOKE else attention  # the module installs flash4 itself
    kwargs.update(model="random-real-config", encoders="device" if on_device else "offload")
    if vae is not None:  # what configure_model does to loaded encoders (handed-in ones are used as they are)
        if speed.get("vae_slicing", True):
            vae.enable_slicing()
        if speed.get("vae_tiling", False):
            vae.enable_tiling()
    if not cuda():
        speed["compile_blocks"] = False  # the CPU smoke run checks the code path, not the compiler
    i2v = family.endswith("-i2v")
    if i2v and on_device:
        raise ValueError("image-to-video cases train from the cache (source='cache')")
    where = "cpu" if strategy == "fsdp_offload" else None
    comps = CogVideoXComponents(build_transformer(torch.bfloat16, family, device=where), vae, t5, tok, scheduler())
    module = CogVideoXModule(**kwargs)
    module.components = comps
    if not on_device:
        module.vae_config = {"scaling_factor": VAE_SCALING[family], **VAE_EXTRA.get(family, {})}

    class Synthetic(Dataset):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            item = {"id": str(i), "caption": "a red circle"}
            if on_device:
                item["video"] = torch.rand(3, SIZE.frames, height, width, generator=g) * 2 - 1
                return item
            item["latent_dist"] = torch.randn(2 * latent[1], latent[0], *latent[2:], generator=g).bfloat16()
            item["prompt_embeds"] = torch.randn(SIZE.text_len, SIZE.text_dim, generator=g).bfloat16()
            item["empty_prompt_embeds"] = torch.zeros(SIZE.text_len, SIZE.text_dim).bfloat16()
            if i2v:  # what a cache stores for an I2V family: the per-clip noised image's latent distribution
                item["image_latent_dist"] = torch.randn(2 * latent[1], 1, *latent[2:], generator=g).bfloat16()
            return item

    times, result = [], {}

    class Timer(L.Callback):
        prof = None

        def on_train_start(self, trainer, pl_module):
            result["resident_gib"] = torch.cuda.memory_allocated() / 2**30 if cuda() else 0.0
            if cuda():
                torch.cuda.reset_peak_memory_stats()  # the steps' peak, not the model's construction

        def on_fit_start(self, trainer, pl_module):
            if attention != "sdpa" and SIZE is SMOKE:
                install_attention(pl_module.transformer, attention)

        def on_train_batch_start(self, trainer, *a):
            sync()
            if profile and trainer.global_step == steps - 1:
                self.prof = step_profiler()
                self.prof.start()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, *a):
            sync()
            times.append(time.perf_counter() - self.t0)
            if self.prof is not None:
                self.prof.stop()
                write_profile(self.prof, profile, times[-1])
                self.prof = None
            if losses is not None:
                losses.append(float(outputs["loss"]))
            if len(times) == steps:  # the training peaks, before any validation
                result.update(peaks())

        def on_validation_start(self, trainer, pl_module):
            sync()
            if cuda():
                torch.cuda.reset_peak_memory_stats()  # the reserved peak restarts from what training left reserved
            self.v0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            sync()
            v = peaks()
            result.update(validation_alloc_gib=v["alloc_gib"], validation_reserved_gib=v["reserved_gib"],
                          validation_s=time.perf_counter() - self.v0)

    callbacks = [Timer(), StepStats(), NonFiniteGuard()]
    val = {}
    if validation_steps:
        callbacks.append(ValidationVideos(prompts=["a red circle moves to the right"],
                                          num_inference_steps=validation_steps,
                                          guidance_scale=videos.get("guidance_scale", 6.0),
                                          num_frames=SIZE.frames, height=height, width=width))
        val = dict(val_dataloaders=DataLoader(Synthetic(4), batch_size=1), )
    root = tempfile.mkdtemp()
    kind = strategy
    strategy = "auto"
    if kind == "fsdp_offload":
        from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
        from lightning.pytorch.strategies import FSDPStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        strategy = FSDPStrategy(cpu_offload=True, auto_wrap_policy=ModuleWrapPolicy({CogVideoXBlock}),
                                sharding_strategy="FULL_SHARD", state_dict_type="full")
    elif kind == "deepspeed_offload":  # the CogVideo repo's choice: ZeRO-2, the optimizer (fp32 master + AdamW) on
        # the CPU; the module's torch AdamW runs there (no DeepSpeedCPUAdam: that is a JIT-built C++ op)
        from lightning.pytorch.strategies import DeepSpeedStrategy

        strategy = DeepSpeedStrategy(config={
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                                  "contiguous_gradients": True, "overlap_comm": True,
                                  "reduce_bucket_size": 2e8, "allgather_bucket_size": 2e8},
            "zero_force_ds_cpu_optimizer": False, "zero_allow_untested_optimizer": True,
            "train_micro_batch_size_per_gpu": 1, "gradient_clipping": 1.0})
    elif kind is not None:
        raise ValueError(f"strategy {kind!r}: None, fsdp_offload or deepspeed_offload")
    trainer = L.Trainer(accelerator="gpu" if cuda() else "cpu", devices=1, precision="bf16-mixed", max_steps=steps,
                        strategy=strategy,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks,
                        gradient_clip_val=None if kind == "deepspeed_offload" else 1.0,  # DeepSpeed's config clips
                        num_sanity_val_steps=0, default_root_dir=root,
                        limit_val_batches=4 if validation_steps else 0,
                        val_check_interval=steps if validation_steps else None)
    trainer.fit(module, train_dataloaders=DataLoader(Synthetic(steps), batch_size=1, num_workers=2), **val)
    steady = times[2:] or times
    result["step_s"] = statistics.median(steady)
    result["host_peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    result["flops_shape"] = (latent[0] + (latent[0] % 2 if family.startswith("1.5") else 0), latent[2], latent[3])
    return result, comps.transformer.config


def step_profiler():
    """The profiler both step profiles use: host ops and CUDA kernels."""
    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                              torch.profiler.ProfilerActivity.CUDA])


def write_profile(prof, path, wall_s):
    """Device time of one step by kernel family, and the top kernels, to ``path`` (text)."""
    families = {"attention": ("flash", "fmha", "cudnn", "attention", "sdpa"),
                "matmul": ("gemm", "xmma", "nvjet", "cutlass", "sm90", "ampere", "mm_"),
                "triton (fused elementwise/norms)": ("triton",), "optimizer": ("adam", "foreach", "multi_tensor"),
                "copy/memset": ("copy", "memset", "memcpy", "fill")}
    totals = dict.fromkeys(list(families) + ["other"], 0.0)
    kernel_rows = []
    for e in prof.key_averages():
        t = e.self_device_time_total
        if t <= 0 or e.device_type != torch.autograd.DeviceType.CUDA:  # kernels only, not the ops launching them
            continue
        if e.key.startswith(("Optimizer.", "ProfilerStep")):  # GPU-side user annotations spanning the step
            continue
        name = e.key.lower()
        fam = next((f for f, keys in families.items() if any(k in name for k in keys)), "other")
        totals[fam] += t / 1e6
        kernel_rows.append((t / 1e6, e.count, e.key[:110], fam))
    kernel_rows.sort(reverse=True)
    busy = sum(totals.values())
    lines = [f"wall {wall_s:.3f} s, device busy {busy:.3f} s ({100 * busy / wall_s:.0f}%)"]
    lines += [f"  {f:34s} {t:7.3f} s {100 * t / wall_s:5.1f}%" for f, t in totals.items()]
    lines += ["", "top kernels (s, calls, name, family):"]
    lines += [f"  {t:7.4f} {n:5d} {k} [{f}]" for t, n, k, f in kernel_rows[:40]]
    open(path, "w").write("\n".join(lines) + "\n")
    prof.export_chrome_trace(str(path) + ".trace.json")
    print("\n".join(lines[:8]), flush=True)




def pipeline_case(steps=50, compile_=False, attention="sdpa", lever=None, warmup=True, _cache={}):
    """Seconds per CFG video of the stock CogVideoXPipeline (text encoding, ``steps`` denoising steps and the
    tiled VAE decode), and its allocated/reserved peaks. One pipeline serves every inference case of a run
    (built once, its processor, compilation and caching hooks changed in place).

    ``compile_``: the blocks compiled as ``workbench eval/generate --compile`` does; ``attention``: sdpa or
    flash4 (as ``--attention flash4``); ``lever``: an approximate lever of ``workbench eval --approximate``
    (workbench.model.caching; FirstBlockCache's skips depend on the weights, so with random weights its
    speed is not what a trained model gets; PAB and FasterCache skip on a fixed timestep schedule)."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    from workbench.model.caching import approximation
    from workbench.model.speed import compile_blocks
    from workbench.model.tiny import COGVIDEOX_2B_SCHEDULER

    if "pipe" not in _cache:
        vae, t5, tok = build_encoders(torch.bfloat16)
        pipe = CogVideoXPipeline(tokenizer=tok, text_encoder=t5, vae=vae, transformer=build_transformer(torch.bfloat16).eval(),
                                 scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_2B_SCHEDULER))  # CogVideoX-2b samples with DDIM
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
        _cache.update(pipe=pipe, compiled=False)
    pipe = _cache["pipe"]
    if attention == "flash4":
        install_attention(pipe.transformer, "flash4")
    else:
        pipe.transformer.set_attn_processor(CogVideoXAttnProcessor2_0())
    if compile_ and not _cache["compiled"] and cuda():
        compile_blocks(pipe.transformer)
        _cache["compiled"] = True
    if not compile_ and _cache["compiled"]:
        raise RuntimeError("eager inference cases must run before the compiled ones")
    kw = dict(prompt="a red circle", num_frames=SIZE.frames, height=SIZE.height, width=SIZE.width, guidance_scale=6.0,
              max_sequence_length=SIZE.text_len, output_type="np")
    warm = None
    with approximation(pipe, lever):
        if warmup:  # kernels, autotuning and compilation
            t0 = time.perf_counter()
            pipe(num_inference_steps=2, generator=torch.Generator(DEVICE).manual_seed(0), **kw)
            sync()
            warm = time.perf_counter() - t0
        cleanup()
        t0 = time.perf_counter()
        pipe(num_inference_steps=steps, generator=torch.Generator(DEVICE).manual_seed(0), **kw)
        sync()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "videos_per_gpu_hour": 3600 / seconds, "warmup_2steps_s": warm, **peaks()}


def compare_loss_curves(variants: dict[str, dict], steps: int, **common) -> dict:
    """Same seed, same data, one ``workbench_step`` per variant (its keyword arguments over ``common``): each
    variant's per-step losses and training peaks, and the largest and mean absolute loss difference between
    the first two."""
    curves, peaks_ = {}, {}
    for name, kwargs in variants.items():
        cleanup()
        torch.manual_seed(0)
        curves[name] = []
        r, _ = workbench_step(**{**common, **kwargs}, steps=steps, losses=curves[name])
        peaks_[name] = {k: r[k] for k in ("step_s", "alloc_gib", "reserved_gib")}
    first, second = list(variants)[:2]
    diffs = [abs(a - b) for a, b in zip(curves[first], curves[second])]
    return {**curves, "max_abs_difference": max(diffs), "mean_abs_difference": sum(diffs) / len(diffs),
            "peaks": peaks_}


def loss_curves(steps=12):
    """The A6000 LoRA recipe's settings (compiled blocks, no checkpointing): SDPA vs FlashAttention-4."""
    return compare_loss_curves({"sdpa": dict(attention="sdpa"), "flash4": dict(attention="flash4")}, steps,
                               mode="lora", rank=128, checkpointing=False, source="cache", compile_=True)


def fp8_loss_curves(steps=16):
    """5B at 49 x 480 x 720, the low-memory recipe's settings (every block checkpointed, no compile): the frozen
    base weights stored in bf16 vs fp8 (model.speed.frozen_storage, diffusers' layerwise casting)."""
    return compare_loss_curves({"bf16": dict(frozen_storage=None), "fp8": dict(frozen_storage="fp8")}, steps,
                               mode="lora", rank=128, checkpointing=True, source="cache", compile_=False, family="5b")


def train(**kw):
    return lambda: workbench_step(**kw)


LORA = dict(mode="lora", rank=128, source="cache", steps=8)
A6000_LORA = dict(LORA, checkpointing=False, compile_=True)  # the A6000 LoRA recipe's levers, at r128
LOWMEM = dict(LORA, checkpointing=True, compile_=True)       # the low-memory recipe's levers, at r128
FULL = dict(mode="full", rank=0, source="cache", steps=8, checkpointing=True, compile_=True)

CASES = {
    "training": {
        "baseline_lora_r128_nockpt": lambda: baseline_lora(128, False),
        "baseline_lora_r128_ckpt": lambda: baseline_lora(128, True),
        "workbench_lora_r128_nockpt_compiled": train(**A6000_LORA),
        "workbench_lora_r128_nockpt_compiled_flash4": train(**A6000_LORA, attention="flash4"),
        "workbench_lora_r128_ckpt_compiled": train(**LOWMEM),
        "workbench_lora_r128_ckpt_compiled_flash4": train(**LOWMEM, attention="flash4"),
        "workbench_full_ckpt_compiled": train(**FULL),
        "workbench_full_ckpt_compiled_flash4": train(**FULL, attention="flash4"),
    },
    "buckets": {  # the A6000 LoRA recipe's levers (SDPA, as an A6000 runs) at each bucket
        "bucket_720x480_lora_r128_nockpt_compiled": train(**A6000_LORA, size=(720, 480)),
        "bucket_576x576_lora_r128_nockpt_compiled": train(**A6000_LORA, size=(576, 576)),
    },
    "validation": {  # each A6000 recipe exactly (rank, checkpointing, compile, encoders offloaded, VAE tiling)
        "recipe_cogvideox-2b-lora-a6000_validation_round": train(recipe="cogvideox-2b-lora-a6000", steps=4,
                                                                 validation_steps=2),
        "recipe_cogvideox-2b-lora-lowmem_validation_round": train(recipe="cogvideox-2b-lora-lowmem", steps=4,
                                                                  validation_steps=2),
        "recipe_cogvideox-2b-full-a6000_validation_round": train(recipe="cogvideox-2b-full-a6000", steps=4,
                                                                 validation_steps=2),
    },
    "5b": {  # CogVideoX-5B, 49 x 480 x 720, LoRA r128
        "baseline_5b_lora_r128_ckpt": lambda: baseline_lora(128, True, family="5b"),
        "baseline_5b_lora_r128_ckpt_fp8": lambda: baseline_lora(128, True, family="5b", fp8=True),
        "workbench_5b_lora_r128_ckpt75_compiled": train(**LOWMEM, fraction=0.75, family="5b"),
        "workbench_5b_lora_r128_ckpt50_compiled": train(**LOWMEM, fraction=0.5, family="5b"),
        "workbench_5b_lora_r128_ckpt75_compiled_flash4": train(**LOWMEM, fraction=0.75, family="5b", attention="flash4"),
        "workbench_5b_lora_r128_ckpt_compiled_fp8": train(**LOWMEM, family="5b", frozen_storage="fp8"),
        "workbench_5b_lora_r128_ckpt_fp8": train(**{**LOWMEM, "compile_": False}, family="5b", frozen_storage="fp8"),
        # the memory fp8 frees, spent on fewer checkpointed blocks (no compile: see frozen_storage)
        "workbench_5b_lora_r128_ckpt75_fp8": train(**{**LOWMEM, "compile_": False}, fraction=0.75, family="5b",
                                                   frozen_storage="fp8"),
        "workbench_5b_lora_r128_ckpt_compiled": train(**LOWMEM, family="5b"),
    },
    "5b_full": {  # CogVideoX-5B full fine-tune on one GPU: FSDP with CPU offload (run it as its own process:
        # host_peak_gib is the process's peak). No compile: FSDP's per-block unshard hooks break the graphs.
        "workbench_5b_full_fsdp_offload_ckpt": train(**{**FULL, "compile_": False, "steps": 5}, family="5b",
                                                     strategy="fsdp_offload"),
        # needs deepspeed (benchmarks/gpu_session.sh packs it: .gpu/deepspeed); its own process as well
        "workbench_5b_full_deepspeed_zero2_offload_ckpt": train(**{**FULL, "compile_": False, "steps": 5}, family="5b",
                                                                strategy="deepspeed_offload"),
    },
    "1.5": {  # CogVideoX1.5-5B, 81 x 768 x 1360 (21 latent frames padded to 22), LoRA r128
        "baseline_1.5_lora_r128_ckpt": lambda: baseline_lora(128, True, family="1.5", steps=5),
        "workbench_1.5_lora_r128_ckpt_compiled": train(**{**LOWMEM, "steps": 6}, family="1.5"),
        "workbench_1.5_lora_r128_ckpt_compiled_flash4": train(**{**LOWMEM, "steps": 6}, family="1.5",
                                                              attention="flash4"),
    },
    "i2v": {  # image-to-video at real size: 5B-I2V at 49 x 480 x 720, 1.5-I2V at 81 x 768 x 1360, LoRA r128; the
        # plain loop conditioned as the stock I2V pipeline (i2v_loss), the module with its I2V recipe's levers
        "baseline_5b_i2v_lora_r128_ckpt": lambda: baseline_lora(128, True, family="5b-i2v"),
        "baseline_5b_i2v_lora_r128_ckpt_flash4": lambda: baseline_lora(128, True, family="5b-i2v", attention="flash4"),
        "workbench_5b_i2v_lora_r128_ckpt75_compiled": train(**LOWMEM, fraction=0.75, family="5b-i2v"),
        "workbench_5b_i2v_lora_r128_ckpt75_compiled_flash4": train(**LOWMEM, fraction=0.75, family="5b-i2v",
                                                                   attention="flash4"),
        "baseline_1.5_i2v_lora_r128_ckpt": lambda: baseline_lora(128, True, family="1.5-i2v", steps=5),
        "baseline_1.5_i2v_lora_r128_ckpt_flash4": lambda: baseline_lora(128, True, family="1.5-i2v", steps=5,
                                                                        attention="flash4"),
        "workbench_1.5_i2v_lora_r128_ckpt_compiled": train(**{**LOWMEM, "steps": 6}, family="1.5-i2v"),
        "workbench_1.5_i2v_lora_r128_ckpt_compiled_flash4": train(**{**LOWMEM, "steps": 6}, family="1.5-i2v",
                                                                  attention="flash4"),
    },
    "sac_5b": {  # selective activation checkpointing (model.speed.checkpoint_policy), 5B 49 x 480 x 720, LoRA r128,
        # compiled; beside workbench_5b_lora_r128_ckpt_compiled / ckpt75 (group 5b) and the plain loop
        "baseline_5b_lora_r128_ckpt": lambda: baseline_lora(128, True, family="5b"),
        "workbench_5b_lora_r128_ckpt_compiled": train(**LOWMEM, family="5b"),
        "workbench_5b_lora_r128_ckpt_compiled_flash4": train(**LOWMEM, family="5b", attention="flash4"),
        "workbench_5b_lora_r128_sac_attn_compiled": train(**LOWMEM, family="5b", policy="attention"),
        "workbench_5b_lora_r128_sac_attn_compiled_flash4": train(**LOWMEM, family="5b", policy="attention",
                                                                 attention="flash4"),
        "workbench_5b_lora_r128_sac_attn_compiled_fp8": train(**LOWMEM, family="5b", policy="attention",
                                                              frozen_storage="fp8"),
        "workbench_5b_lora_r128_sac_attn_compiled_fp8_flash4": train(**LOWMEM, family="5b", policy="attention",
                                                                     frozen_storage="fp8", attention="flash4"),
        "workbench_5b_lora_r128_sac_attnmm_compiled": train(**LOWMEM, family="5b", policy="attention_and_matmuls"),
        "workbench_5b_lora_r128_sac_attnmm_compiled_fp8_flash4": train(**LOWMEM, family="5b", frozen_storage="fp8",
                                                                       policy="attention_and_matmuls",
                                                                       attention="flash4"),
    },
    "sac_1.5": {  # the same at 81 x 768 x 1360 (attention outputs are 0.26 GiB a block here: no matmul policy)
        "workbench_1.5_lora_r128_sac_attn_compiled": train(**{**LOWMEM, "steps": 6}, family="1.5", policy="attention"),
        "workbench_1.5_lora_r128_sac_attn_compiled_flash4": train(**{**LOWMEM, "steps": 6}, family="1.5",
                                                                  policy="attention", attention="flash4"),
        "workbench_1.5_lora_r128_sac_attn_compiled_fp8": train(**{**LOWMEM, "steps": 6}, family="1.5",
                                                               policy="attention", frozen_storage="fp8"),
        "workbench_1.5_lora_r128_sac_attn_compiled_fp8_flash4": train(**{**LOWMEM, "steps": 6}, family="1.5",
                                                                      policy="attention", frozen_storage="fp8",
                                                                      attention="flash4"),
    },
    "profile": {
        "profile_baseline_lora_r128_nockpt": lambda: baseline_lora(128, False, profile="profile_baseline_nockpt.txt"),
        "profile_workbench_lora_r128_nockpt_compiled": train(**{**A6000_LORA, "steps": 6},
                                                             profile="profile_lora_nockpt_compiled.txt"),
    },
}
# eager cases first: the compiled ones compile the one shared pipeline's blocks
INFERENCE = {
    "pipeline_50step_cfg_stock": dict(),
    "pipeline_50step_cfg_pab": dict(lever="pab"),
    "pipeline_50step_cfg_faster-cache": dict(lever="faster-cache"),
    "pipeline_50step_cfg_first-block-cache": dict(lever="first-block-cache"),
    "pipeline_12step_cfg_stock": dict(steps=12),
    "pipeline_50step_cfg_flash4": dict(attention="flash4"),
    "pipeline_50step_cfg_compiled": dict(compile_=True),
    "pipeline_50step_cfg_flash4_compiled": dict(compile_=True, attention="flash4"),
}


def main() -> None:
    global SIZE, DEVICE, MAX_STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="training,buckets,validation,inference",
                        help="comma-separated groups: training, buckets, validation, inference, 5b, 5b_full, 1.5, i2v, "
                             "sac_5b, sac_1.5, profile")
    parser.add_argument("--only", help="comma-separated case names (any group)")
    parser.add_argument("--out", default="real_size.json")
    parser.add_argument("--cap-gib", type=float, default=None,
                        help="cap the allocator (set_per_process_memory_fraction); default none: the reserved "
                             "peak is measured and judged against the A6000 instead")
    parser.add_argument("--loss-curves", action="store_true", help="also compare SDPA vs flash4 loss curves")
    parser.add_argument("--fp8-loss-curves", action="store_true",
                        help="also compare bf16 vs fp8 storage of 5B's frozen weights over 16 steps")
    parser.add_argument("--smoke", action="store_true", help="every case at toy size on the CPU, to check the script")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap every case's steps (at least 4: two warm-up steps, then the timed ones)")
    args = parser.parse_args()
    MAX_STEPS = max(4, args.max_steps) if args.max_steps else None
    if args.smoke:
        SIZE, DEVICE = SMOKE, "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    if cuda():
        torch.zeros(1, device="cuda")  # the context, before the allocator reserves anything
    if args.cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total))
    context = cuda_context_gib()
    results = {"device": torch.cuda.get_device_name() if cuda() else "cpu (smoke)", "torch": torch.__version__,
               "cap_gib": args.cap_gib, "cuda_context_gib_at_start": context, "a6000_mib": A6000_MIB}
    out = Path(args.out)
    if out.is_file():  # one run over several calls: later groups add to the same file
        results = {**json.loads(out.read_text()), **results}
    groups = args.group.split(",")
    wanted = args.only.split(",") if args.only else None
    cases = list({n: fn for g, cs in reversed(CASES.items()) for n, fn in reversed(cs.items())
                  if (wanted and n in wanted) or (not wanted and g in groups)}.items())[::-1]  # a name once
    if wanted:  # in the order --only names them (a device call runs the ones that matter most first)
        cases.sort(key=lambda case: wanted.index(case[0]))
    inference = [(n, kw) for n, kw in INFERENCE.items()
                 if (wanted and n in wanted) or (not wanted and "inference" in groups)]

    def record(name, fn):
        cleanup()
        t0 = time.perf_counter()
        try:
            r = fn()
            if isinstance(r, tuple):  # a training case: (result, transformer config)
                r, cfg = r
                shape = r.pop("flops_shape", (13, 60, 90))
                r["model_tflops"] = 3 * transformer_forward_flops(cfg, *shape, SIZE.text_len) / r["step_s"] / 1e12
            ctx = max(context, cuda_context_gib())  # kernels loaded by the case (FlashAttention-4's) count too
            r.update(cuda_context_gib=ctx, **a6000_verdict(r["reserved_gib"], ctx))
            if "validation_reserved_gib" in r:
                r["validation_fits_a6000"] = a6000_verdict(r["validation_reserved_gib"], ctx)["fits_a6000"]
        except Exception as e:  # noqa: BLE001 - record and go on to the next case
            traceback.print_exc()
            r = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        r["case_wall_s"] = time.perf_counter() - t0
        results[name] = r
        print(name, json.dumps(r), flush=True)
        out.write_text(json.dumps(results, indent=1))

    for name, fn in cases:
        record(name, fn)
    for name, kw in inference:
        record(name, lambda kw=kw: pipeline_case(**kw))
    comparisons = [("loss_curves_sdpa_vs_flash4", args.loss_curves, loss_curves),
                   ("loss_curves_5b_bf16_vs_fp8", args.fp8_loss_curves,
                    lambda: fp8_loss_curves(steps=4 if args.smoke else 16))]
    for name, wanted, fn in comparisons:
        if not wanted:
            continue
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - record and go on
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(name, json.dumps(results[name]), flush=True)
        out.write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict) -> None:
    fams = ("_", "_5b_", "_1.5_", "_5b_i2v_", "_1.5_i2v_")
    bases = {fam: results.get(f"baseline{fam}lora_r128_ckpt", {}).get("step_s") for fam in fams}
    print(f"\n{results['device']}; A6000 = {A6000_MIB} MiB; CUDA context {results['cuda_context_gib_at_start']:.2f} GiB")
    print(f"{'case':52s} {'s':>8s} {'alloc':>6s} {'resvd':>6s} {'A6000':>6s} {'vs base':>8s}")
    for name, r in results.items():
        if not isinstance(r, dict) or not ("step_s" in r or "seconds" in r or "error" in r):
            continue
        if "error" in r:
            print(f"{name:52s} {r['error'][:70]}")
            continue
        s = r.get("step_s", r.get("seconds"))
        base = bases[max((f for f in fams if f in name), key=len)]
        ratio = f"{base / s:.2f}x" if base and "step_s" in r else ""
        fits = "fits" if r.get("fits_a6000") else "NO"
        print(f"{name:52s} {s:8.3f} {r['alloc_gib']:6.1f} {r['reserved_gib']:6.1f} {fits:>6s} {ratio:>8s}")
        if "validation_reserved_gib" in r:
            print(f"{'  validation round':52s} {r['validation_s']:8.1f} {r['validation_alloc_gib']:6.1f} "
                  f"{r['validation_reserved_gib']:6.1f} {'fits' if r['validation_fits_a6000'] else 'NO':>6s}")


if __name__ == "__main__":
    main()
