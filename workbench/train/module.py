"""The one LightningModule: CogVideoX fine-tuning in ``lora`` or ``full`` mode.

Read top to bottom: configure_model (load, freeze, adapt, speed levers) -> latent_moments and
prompt_embeddings (frozen VAE + T5, or the prepare cache) -> batch_loss (every random draw from
per-sample seeded generators; the objective in workbench.model.objective) -> training_step and
validation_step (fixed draws, so validations compare) -> optimizer and schedule -> what a
checkpoint keeps.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import lightning as L
import torch
from diffusers import AutoencoderKLCogVideoX
from diffusers.optimization import get_scheduler
from lightning.pytorch.utilities import rank_zero_warn
from torch.nn.attention import SDPBackend, sdpa_kernel

from workbench.common import torch_dtype
from workbench.model.adapters import add_lora
from workbench.model.attention import set_attention
from workbench.model.families import ModelFamily, family_of_configs
from workbench.model.loading import CogVideoXComponents, absolute_if_local, freeze, load_components
from workbench.model.objective import diffusion_loss
from workbench.model.speed import compile_blocks, enable_partial_checkpointing
from workbench.model.text import caption_token_count

def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype the transformer's matmuls and attention compute in under Lightning's ``precision``
    (None for full precision: the weights' own dtype)."""
    return {"bf16": torch.bfloat16, "16": torch.float16}.get(str(precision).split("-")[0])


SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


@dataclass
class LoRA:
    """The adapter (lora mode): PEFT LoRA on the transformer's attention projections.

    Args:
        rank: LoRA rank r.
        alpha: LoRA alpha (the update is scaled by alpha / rank).
        dropout: dropout on the LoRA path.
        targets: module names PEFT adapts (diffusers' attention projections).
    """

    rank: int = 64
    alpha: float = 64
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class Speed:
    """Memory and speed levers; none changes what is learned (docs/performance.md measures each).

    Args:
        gradient_checkpointing: recompute block activations in the backward pass.
        checkpoint_fraction: with gradient_checkpointing, the share of transformer blocks whose
            activations are recomputed (1.0 = all, as diffusers does; lower trades memory for speed).
        checkpoint_policy: what a checkpointed block keeps (selective activation checkpointing,
            workbench.model.speed): ``full`` (nothing: the whole block is recomputed), ``attention`` (the attention
            kernel's outputs are kept, so the backward recomputes no attention) or ``attention_and_matmuls`` (also
            every other matmul output, torchtitan's op policy). The same numbers as ``full``; more memory.
        compile_blocks: ``torch.compile`` each transformer block (regional compilation; CUDA).
        attention: ``sdpa`` (PyTorch's scaled_dot_product_attention), ``flash4`` (FlashAttention-4, Hopper;
            ``pip install ".[hopper]"``) or ``auto`` (flash4 where it can run, else sdpa, said in one line);
            see workbench.model.attention.
        attention_backend: force one PyTorch SDPA kernel for the transformer's attention (``cudnn`` is
            the fastest on Hopper; None lets PyTorch choose).
        fused_optimizer: fused AdamW kernels on CUDA (same update as the foreach implementation);
            not combinable with Lightning's gradient clipping under AMP, so unused when clipping.
        frozen_storage: ``fp8`` stores the frozen base transformer weights in float8_e4m3fn and casts each layer
            to ``frozen_dtype`` for its computation (diffusers' layerwise casting, as finetrainers' layerwise
            upcasting; lora mode only): about half the resident weight memory of bf16. Norms, embeddings, the
            patch embedding and ``proj_out`` stay in ``frozen_dtype``; it is enabled after the adapter is added,
            so the LoRA weights stay float32 (enabled before, PEFT would create them in fp8). None: off.
        vae_slicing: decode / encode a batch one sample at a time (diffusers' ``enable_slicing``).
        vae_tiling: decode / encode in spatial tiles (diffusers' ``enable_tiling``): what lets a 48 GB card
            decode a validation video at real size.
    """

    gradient_checkpointing: bool = False
    checkpoint_fraction: float = 1.0
    checkpoint_policy: Literal["full", "attention", "attention_and_matmuls"] = "full"
    compile_blocks: bool = False
    attention: Literal["sdpa", "flash4", "auto"] = "sdpa"
    attention_backend: Literal["flash", "cudnn", "efficient", "math"] | None = None
    fused_optimizer: bool = True
    frozen_storage: Literal["fp8"] | None = None
    vae_slicing: bool = True
    vae_tiling: bool = False


@dataclass
class Validation:
    """The validation loss: fixed draws, so validations compare.

    Args:
        seed: seeds each validation sample's draws with its id.
        timesteps: fixed timesteps drawn per validation sample (more = steadier val loss).
        timestep_buckets: also log the validation loss at this many fixed timesteps, the centres of equal
            buckets of [0, num_train_timesteps) (``val/loss_t000-199``, ...; 0 turns it off): where the
            model over- or under-fits shows by noise level (high t: layout and motion, low t: detail).
    """

    seed: int = 0
    timesteps: int = 4
    timestep_buckets: int = 5


@dataclass
class ImageConditioning:
    """Image-to-video families only (workbench/model/families/image_to_video.py).

    Args:
        noise: when the conditioning image's noise augmentation (sigma = exp(N(-3, 0.5)) in pixel space) is
            drawn: ``per_clip`` (once per clip, seeded by its file name: the diffusers example, and what a cache
            stores) or ``per_step`` (every step, as the CogVideo repo; the image is encoded every step, so it
            needs ``encoders: device``).
        dropout: probability of training a sample with zero image latents (5 % in the released SAT configs and
            the diffusers example; the CogVideo repo uses none).
    """

    noise: Literal["per_clip", "per_step"] = "per_clip"
    dropout: float = 0.05


GROUPS = {"lora": LoRA, "speed": Speed, "validation": Validation, "image": ImageConditioning}


def _group(cls, value):
    """A settings group from its dataclass, a dict (a checkpoint's hyperparameters) or None (the defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**value)
    raise TypeError(f"{cls.__name__}: expected {cls.__name__} or a dict, got {type(value).__name__}")


class CogVideoXModule(L.LightningModule):
    """Fine-tunes the CogVideoX transformer; the VAE and T5 stay frozen in eval mode.

    A recipe's ``model:`` section holds these arguments; the grouped ones nest (``lora: {rank: 64}``,
    ``--model.lora.rank 64`` on the command line). Checkpoints keep each group as a plain dict.

    Args:
        model: hub id (``THUDM/CogVideoX-2b``, ``THUDM/CogVideoX-5b``, ``THUDM/CogVideoX1.5-5B``) or local
            directory in diffusers layout.
        family: the model family (``cogvideox-2b``, ``cogvideox-5b``, ``cogvideox1.5-5b``; workbench.model.families),
            or ``auto`` (default): read from the model's configs. A named family the model is not is an error.
        mode: ``lora`` (PEFT LoRA on the attention projections, ``lora``) or ``full``.
        lora: the adapter (``LoRA``: rank, alpha, dropout, targets).
        learning_rate, weight_decay, adam_betas, adam_eps: AdamW's.
        lr_schedule, warmup_steps: diffusers' ``get_scheduler`` schedule and its warm-up.
        frozen_dtype: dtype of the frozen weights (VAE, T5 and, in lora mode, the base transformer).
        caption_dropout: probability of training on the empty prompt (for classifier-free guidance).
        encoders: ``device`` keeps the VAE and T5 on the training device (training from raw
            videos); ``offload`` (training from a ``workbench prepare`` cache) loads them only when
            sampling needs them, keeps them on the CPU and moves them to the device just for that.
        noise_seed: seeds every training draw (with the step and the sample's position).
        speed: memory and speed levers (``Speed``: checkpointing, compile, attention kernel, fp8 storage, VAE
            slicing and tiling).
        validation: the validation loss's fixed draws (``Validation``: seed, timesteps, timestep buckets).
        image: image-to-video conditioning (``ImageConditioning``: noise, dropout).
    """

    def __init__(
        self,
        model: str = "THUDM/CogVideoX-2b",
        family: str = "auto",
        mode: Literal["lora", "full"] = "lora",
        lora: LoRA | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-4,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
        lr_schedule: str = "constant_with_warmup",
        warmup_steps: int = 100,
        frozen_dtype: Literal["fp32", "bf16", "fp16"] = "fp32",
        caption_dropout: float = 0.0,
        encoders: Literal["device", "offload"] = "device",
        noise_seed: int = 0,
        speed: Speed | None = None,
        validation: Validation | None = None,
        image: ImageConditioning | None = None,
    ):
        super().__init__()
        model = absolute_if_local(model)
        lora, speed = _group(LoRA, lora), _group(Speed, speed)
        validation, image = _group(Validation, validation), _group(ImageConditioning, image)
        if encoders not in ("device", "offload"):
            raise ValueError(f"encoders={encoders!r}: choose 'device' or 'offload'")
        if mode not in ("lora", "full"):
            raise ValueError(f"mode={mode!r}: choose 'lora' or 'full'")
        if validation.timestep_buckets < 0:
            raise ValueError(f"validation.timestep_buckets={validation.timestep_buckets}: must be >= 0")
        if speed.frozen_storage is not None and (mode != "lora" or frozen_dtype == "fp32"):
            raise ValueError(f"speed.frozen_storage={speed.frozen_storage!r}: needs mode: lora and frozen_dtype bf16 "
                             "or fp16 (the dtype each layer is cast to for its computation)")
        if (speed.frozen_storage is not None and speed.compile_blocks and speed.gradient_checkpointing
                and speed.checkpoint_policy == "full"):
            # Measured on an H200 (5B, every block checkpointed, compiled), reproduced on the CPU: an eager
            # torch.utils.checkpoint recomputes the compiled block with the weights in fp8 where the forward saved
            # them in bf16, and the backward stops with CheckpointError ("Recomputed values ... have different
            # metadata"). A selective policy compiles the checkpoint with the block, so the recomputation is in the
            # compiled graph (tests/unit/test_selective_checkpointing.py).
            raise ValueError("speed.frozen_storage='fp8' does not combine with speed.compile_blocks and "
                             "speed.gradient_checkpointing with checkpoint_policy 'full' (the checkpoint's "
                             "recomputation sees fp8 weights where the forward saw bf16): use checkpoint_policy "
                             "'attention', or turn compile_blocks or gradient_checkpointing off")
        if not 0.0 <= caption_dropout < 1.0:
            raise ValueError(f"caption_dropout={caption_dropout}: must be in [0, 1)")
        if not 0.0 <= image.dropout < 1.0:
            raise ValueError(f"image.dropout={image.dropout}: must be in [0, 1)")
        if image.noise not in ("per_clip", "per_step"):
            raise ValueError(f"image.noise={image.noise!r}: choose 'per_clip' or 'per_step'")
        if image.noise == "per_step" and encoders == "offload":
            raise ValueError("image.noise='per_step' encodes the image every step: it needs encoders: device "
                             "(or image.noise: per_clip, which a cache stores)")
        self.lora, self.speed, self.validation, self.image = lora, speed, validation, image
        self.save_hyperparameters()
        # Plain dicts in the hyperparameters: a checkpoint loads weights-only (no dataclasses to unpickle), and
        # MLflow gets model/lora/rank, model/speed/compile_blocks, ... as params.
        for name in GROUPS:
            self.hparams[name] = self._hparams_initial[name] = asdict(getattr(self, name))
        self.components: CogVideoXComponents | None = None
        self.transformer = self.vae = self.text_encoder = None
        self.vae_config: dict | None = None
        self.family: ModelFamily | None = None
        # Checkpoints hold only what trains (see on_save_checkpoint); the frozen rest comes from `model`.
        self.strict_loading = False
        self._truncation_warned: set[str] = set()

    # -- model ---------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.transformer is not None:
            return
        hp = self.hparams
        on_device = hp.encoders == "device"
        # Components may be handed in already built (benchmarks build real-size random ones).
        c = self.components or load_components(hp.model, load_vae=on_device, load_text_encoder=on_device)
        frozen = torch_dtype(hp.frozen_dtype)
        if on_device:
            self._prepare_encoders(c)
            self.vae_config = dict(c.vae.config)
        elif c.vae is not None:
            self.vae_config = dict(c.vae.config)
        elif self.vae_config is None:  # the scaling factor is all training from a cache needs of the VAE
            self.vae_config = AutoencoderKLCogVideoX.load_config(hp.model, subfolder="vae")
        if self.family is None:  # `workbench fit` hands in its data module's family, read once where the command
            # started (workbench.train.cli); a module built in code (benchmarks, notebooks) reads it from its configs
            self.family = family_of_configs(c.transformer.config, self.vae_config, name=hp.family, where=hp.model)
        trainer = getattr(self, "_trainer", None)
        if getattr(getattr(trainer, "strategy", None), "cpu_offload", None) and trainer.strategy.cpu_offload.offload_params:
            # FSDP's CPU offload moves one wrapped block at a time to the GPU, flattens it and offloads it: a
            # transformer handed in on the GPU (benchmarks build them there) would stay resident whole, and its fp32
            # master copy too (full mode). from_pretrained loads on the CPU already.
            c.transformer.to("cpu")
        if hp.mode == "lora":
            freeze(c.transformer)
            c.transformer.to(frozen)
            add_lora(c.transformer, self.lora.rank, self.lora.alpha, self.lora.dropout, list(self.lora.targets))
            for p in c.transformer.parameters():
                if p.requires_grad:  # LoRA weights train in fp32 over low-precision base weights, as diffusers does
                    p.data = p.data.float()
            if self.speed.frozen_storage == "fp8":  # after add_lora: diffusers' default patterns skip the PEFT layers
                c.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=frozen)
        else:
            c.transformer.float().requires_grad_(True)  # fp32 master weights; bf16 comes from autocast
        c.transformer.train()
        set_attention(c.transformer, self.speed.attention, trainer.strategy.root_device if trainer is not None else None,
                      compute_dtype=autocast_dtype(trainer.precision) if trainer is not None else None)
        if self.speed.gradient_checkpointing:
            enable_partial_checkpointing(c.transformer, self.speed.checkpoint_fraction, self.speed.checkpoint_policy)
        if self.speed.compile_blocks:
            compile_blocks(c.transformer)
        self.components = c
        # Registered as submodules so Lightning moves them to the device; offloaded encoders are not.
        self.transformer = c.transformer
        if on_device:
            self.vae, self.text_encoder = c.vae, c.text_encoder

    def _prepare_encoders(self, c: CogVideoXComponents) -> None:
        frozen = torch_dtype(self.hparams.frozen_dtype)
        for m in (c.vae, c.text_encoder):
            freeze(m)
            m.to(frozen)
        if self.speed.vae_slicing:
            c.vae.enable_slicing()
        if self.speed.vae_tiling:
            c.vae.enable_tiling()

    @contextmanager
    def sampling_pipeline(self):
        """A stock CogVideoXPipeline over the live (fine-tuning) transformer, in eval mode.

        With ``encoders: offload`` the VAE and T5 are loaded on first use, moved to the device for
        the duration of the block and back to the CPU after it.
        """
        c = self.components
        offload = self.hparams.encoders == "offload"
        if offload and c.vae is None:
            loaded = load_components(self.hparams.model, transformer_module=c.transformer)
            c.vae, c.text_encoder, c.tokenizer = loaded.vae, loaded.text_encoder, loaded.tokenizer
            c.sampling_scheduler = c.sampling_scheduler or loaded.sampling_scheduler
            self._prepare_encoders(c)
        if offload:
            c.vae.to(self.device)
            c.text_encoder.to(self.device)
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            pipe = c.pipeline()
            pipe.set_progress_bar_config(disable=True)
            yield pipe
        finally:
            self.transformer.train(was_training)
            if offload:
                c.vae.to("cpu")
                c.text_encoder.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def train(self, mode: bool = True):
        """Keep the frozen parts in eval mode whatever Lightning asks of the whole module."""
        super().train(mode)
        for m in (self.vae, self.text_encoder):
            if m is not None:
                m.eval()
        return self

    # -- encoding ------------------------------------------------------------------------------
    @property
    def max_text_len(self) -> int:
        return self.family.text_len

    def encode_prompts(self, captions: list[str]) -> torch.Tensor:
        """T5 embeddings padded to the family's text length (226 in every released config)."""
        tok = self.components.tokenizer
        for c in captions:
            if c not in self._truncation_warned and caption_token_count(tok, c) > self.max_text_len:
                self._truncation_warned.add(c)
                rank_zero_warn(f"caption truncated to {self.max_text_len} tokens: {c[:80]!r}...")
        return self.family.encode_prompts(tok, self.text_encoder, captions)

    @torch.no_grad()
    def latent_moments(self, batch: dict) -> dict[str, torch.Tensor]:
        """What the family encodes a sample as: the VAE's latent distribution (mean, log-variance) of each
        clip, ``latent_dist`` (B, 2C, F', H/8, W/8), and for an image-to-video family the conditioning image
        (``image``) and the latent distribution of its per-clip noised version (``image_latent_dist``).

        A cache entry stores exactly these, so cached and raw-video training sample alike.
        """
        if "latent_dist" in batch:
            return {k: batch[k] for k in ("latent_dist", "image", "image_latent_dist") if k in batch}
        if self.vae is None:
            raise RuntimeError("this batch holds raw videos but encoders='offload' left the VAE and T5 "
                               "unloaded: train from a cache (`workbench prepare`, data.cache) or set "
                               "model.encoders=device")
        return self.family.encode_clips(self.vae, batch["video"], images=batch.get("image"), ids=batch["id"])

    def per_sample_generators(self, batch_size: int, *key: int) -> list[torch.Generator]:
        """One CPU generator per sample, seeded by (noise_seed, key, position in the global batch).

        The scalar draws (timestep, caption dropout) come from it directly, the tensors from
        device generators it seeds (``draw``).

        Every random draw of a step comes from these, so a run is the same whatever the number of
        processes sharing its global batch, and again after a resume from a checkpoint.
        """
        first = self.global_rank * batch_size
        seeds = [hash((self.hparams.noise_seed, *key, first + i)) & 0x7FFF_FFFF_FFFF_FFFF for i in range(batch_size)]
        return [torch.Generator().manual_seed(s) for s in seeds]

    def draw(self, generators: list[torch.Generator], shape: torch.Size) -> torch.Tensor:
        """A standard normal tensor of ``shape`` per sample, stacked, on this module's device.

        Each sample's CPU generator gives a seed, and the tensor is drawn on the device by a
        generator of that seed: as deterministic per sample as a CPU draw, without the host-side
        randn and the blocking copy (30 ms of an 0.9 s real-size step on an H100, before the
        forward could start; benchmarks/real_size.py's profile case).
        """
        out = []
        for g in generators:
            seed = int(torch.randint(0, 2**63 - 1, (), generator=g))
            device_gen = torch.Generator(device=self.device).manual_seed(seed)
            out.append(torch.randn(shape, generator=device_gen, device=self.device))
        return torch.stack(out)

    def sample_moments(self, moments: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """mean + std * eps of a latent distribution (B, 2C, ...), as DiagonalGaussianDistribution.sample."""
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return mean + std * self.draw(generators, mean.shape[1:])

    def draw_latents(self, moments: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """A latent sample, scaled, as (B, F', C, H, W), with the latent frames the transformer takes (the
        family's padding: CogVideoX1.5 patches frame pairs)."""
        latents = self.sample_moments(moments, generators) * self.family.scaling_factor
        return self.family.pad_latent_frames(latents.permute(0, 2, 1, 3, 4)).contiguous()

    def prompt_embeddings(self, batch: dict, drop: torch.Tensor) -> torch.Tensor:
        """T5 embeddings of the captions (cached or computed), the empty prompt where ``drop``."""
        if "prompt_embeds" in batch:
            embeds = batch["prompt_embeds"]
            if drop.any():
                empty = batch["empty_prompt_embeds"].to(embeds).expand_as(embeds)
                embeds = torch.where(drop.view(-1, 1, 1).to(embeds.device), empty, embeds)
            return embeds
        return self.encode_prompts(["" if d else c for c, d in zip(batch["caption"], drop.tolist())])

    def batch_loss(self, batch: dict, generators: list[torch.Generator], train: bool,
                   moments: torch.Tensor | None = None, prompt_embeds: torch.Tensor | None = None,
                   timestep: int | None = None) -> torch.Tensor:
        """The objective for one batch; all randomness drawn from ``generators`` in a fixed order.

        ``moments`` (``latent_moments``' dict) and ``prompt_embeds`` may be passed in when the same batch is scored several
        times (validation), so the VAE and T5 run once. ``timestep`` fixes every sample's timestep
        (the per-bucket validation loss) instead of drawing it.
        """
        encoded = self.latent_moments(batch) if moments is None else moments
        latents = self.draw_latents(encoded["latent_dist"], generators).to(self.transformer.dtype if self.hparams.mode == "lora"
                                                              else torch.float32)
        n_train = self.components.scheduler.config.num_train_timesteps
        noise = self.draw(generators, latents.shape[1:]).to(latents.dtype)
        timesteps = torch.stack([torch.randint(0, n_train, (), generator=g) for g in generators]).to(self.device)
        if timestep is not None:
            timesteps = torch.full_like(timesteps, timestep)
        drop = torch.zeros(len(generators), dtype=torch.bool)
        if train and self.hparams.caption_dropout > 0:
            drop = torch.stack([torch.rand((), generator=g) for g in generators]) < self.hparams.caption_dropout
        if prompt_embeds is None:
            prompt_embeds = self.prompt_embeddings(batch, drop)
        prompt_embeds = prompt_embeds.to(latents.dtype)  # a cache may hold them in another dtype (prepare --dtype)
        # the family's conditioning beyond text (an I2V family's image latents; None for text-to-video), drawn
        # after every other draw of the step
        image_latents = self.family.training_conditioning(encoded, self.sample_moments, generators, latents.shape[1],
                                                          train, settings=self.image, vae=self.vae)
        if image_latents is not None:
            image_latents = image_latents.to(latents.dtype)
        with self.attention_kernel():
            return diffusion_loss(self.transformer, self.components.scheduler, latents, prompt_embeds,
                                  noise=noise, timesteps=timesteps, family=self.family, image_latents=image_latents)

    def attention_kernel(self):
        """The SDPA backend context the recipe asks for (a no-op when it asks for none)."""
        name = self.speed.attention_backend
        if name is None or self.device.type != "cuda":
            return nullcontext()
        return sdpa_kernel(SDPA_BACKENDS[name])

    # -- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        accumulate = self.trainer.accumulate_grad_batches
        micro_step = self.global_step * accumulate + batch_idx % accumulate
        gens = self.per_sample_generators(len(batch["caption"]), 1, micro_step)
        loss = self.batch_loss(batch, gens, train=True)
        # averaged over processes too, so the logged curve is the global batch's whatever the process count
        self.log("train/loss", loss, prog_bar=True, batch_size=len(gens), sync_dist=self.trainer.world_size > 1)
        return loss

    def _fixed_generators(self, batch: dict, *key) -> list[torch.Generator]:
        """One generator per sample, seeded by (val_seed, the sample's id, key): the same draws at every
        validation, however validation is batched or split over processes."""
        return [torch.Generator().manual_seed(hash((self.validation.seed, zlib.crc32(str(i).encode()), *key))
                                              & 0x7FFF_FFFF_FFFF_FFFF) for i in batch["id"]]

    def timestep_buckets(self) -> list[tuple[int, int, int]]:
        """(low, high, centre) of each validation timestep bucket of [0, num_train_timesteps)."""
        n_train = self.components.scheduler.config.num_train_timesteps
        k = self.validation.timestep_buckets
        edges = [round(i * n_train / k) for i in range(k + 1)] if k else []
        return [(lo, hi - 1, (lo + hi - 1) // 2) for lo, hi in zip(edges, edges[1:])]

    def validation_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """``val/loss``: the loss under fixed draws per (val_seed, sample, repeat), comparable across
        validations; and ``val/loss_tLLL-HHH`` at each bucket's centre timestep, with fixed noise."""
        # Encode once; every repeat draws its own latent sample, noise and timestep from the moments.
        moments = self.latent_moments(batch)
        prompt_embeds = self.prompt_embeddings(batch, torch.zeros(len(batch["caption"]), dtype=torch.bool))
        common = dict(train=False, moments=moments, prompt_embeds=prompt_embeds)
        losses = [self.batch_loss(batch, self._fixed_generators(batch, k), **common)
                  for k in range(self.validation.timesteps)]
        out = {"val/loss": torch.stack(losses).mean()}
        for lo, hi, centre in self.timestep_buckets():
            out[f"val/loss_t{lo:03d}-{hi:03d}"] = self.batch_loss(
                batch, self._fixed_generators(batch, "bucket", lo), timestep=centre, **common)
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.validation_losses(batch)
        for name, value in losses.items():
            self.log(name, value, prog_bar=name == "val/loss", batch_size=len(batch["caption"]), sync_dist=True)
        return losses["val/loss"]

    # -- optimisation --------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        # Lightning's AMP plugin cannot clip gradients of a fused optimizer; foreach is then used.
        fused = self.speed.fused_optimizer and self.device.type == "cuda" and not self.trainer.gradient_clip_val
        opt = torch.optim.AdamW(params, lr=hp.learning_rate, betas=tuple(hp.adam_betas), eps=hp.adam_eps,
                                weight_decay=hp.weight_decay, **({"fused": True} if fused else {"foreach": True}))
        sched = get_scheduler(hp.lr_schedule, opt, num_warmup_steps=hp.warmup_steps,
                              num_training_steps=max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's FSDP precision plugin cannot clip by norm; FSDP's own clip_grad_norm_ computes
        the global norm over the shards."""
        from lightning.pytorch.strategies import FSDPStrategy

        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            if gradient_clip_algorithm not in (None, "norm"):
                raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}: FSDP clips by norm only")
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self):
        """Replace Lightning's default Rich progress bar by one that counts optimizer steps (a subclass, so
        Lightning swaps it in); a recipe's own progress bar, or none, is left alone."""
        from lightning.pytorch.callbacks import RichProgressBar

        from workbench.train.callbacks import step_progress_bar

        bar = getattr(self._trainer, "progress_bar_callback", None) if self._trainer is not None else None
        if type(bar) is RichProgressBar:
            return [step_progress_bar()(theme=bar.theme)]
        return []

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trained weights: LoRA tensors in lora mode, the transformer in full mode."""
        # By key, not via named_parameters(): FSDP and compile rename parameters, the state dict does not.
        full = self.hparams.mode == "full"
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k.startswith("transformer.") and (full or ".lora_" in k)}
        checkpoint["workbench"] = {"mode": self.hparams.mode, "model": self.hparams.model}
