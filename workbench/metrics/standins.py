"""Tiny, randomly initialised stand-ins for the metric networks (tests, CPU quickstart).

They keep the real networks' interfaces so the production code paths run
unchanged: the CLIP stand-in is loaded through ``from_pretrained``, the I3D
stand-in through ``torch.jit.load`` with StyleGAN-V's call contract, the
VideoMAE-v2 stand-in (cd-fvd) through ``load_videomae_detector`` from a state dict
with the real checkpoint's keys (or TorchScript). Their scores mean nothing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.metrics.fvd import I3D_FEATURE_DIM, I3D_RESOLUTION
from workbench.metrics.videomae import CONFIG_METADATA_KEY, VideoMAEConfig, VideoMAEFeatures, VideoMAEv2

_WORDS = (
    "a an the of in on at with and over under through into from by to near "
    "cat dog bird fish horse person man woman child people car boat train plane "
    "city street road forest mountain river sea ocean beach sky cloud sun moon rain snow "
    "walking running flying swimming driving dancing playing jumping sitting standing "
    "red blue green yellow white black golden bright dark slow fast camera view close shot "
    "video scene night day sunset sunrise light water fire tree flower field waves"
).split()


class _TinyI3D(nn.Module):
    """Same forward contract as StyleGAN-V's i3d_torchscript.pt.

    ``forward(x, rescale=False, resize=False, return_features=False)`` with x of
    shape (B, 3, T, H, W): ``rescale`` maps [0, 255] to [-1, 1], ``resize``
    resamples frames to 224x224, ``return_features`` returns the ``feature_dim``
    (400, as I3D's) pre-softmax values instead of class probabilities. ``feature_dim``
    is kept as an attribute, which ``workbench.metrics.fvd.detector_feature_dim`` reads.
    """

    def __init__(self, feature_dim: int = I3D_FEATURE_DIM) -> None:
        super().__init__()
        self.resolution = I3D_RESOLUTION
        self.feature_dim = feature_dim
        self.conv1 = nn.Conv3d(3, 8, kernel_size=(3, 8, 8), stride=(1, 8, 8), padding=(1, 0, 0))
        self.conv2 = nn.Conv3d(8, 16, kernel_size=3, stride=2, padding=1)
        self.head = nn.Linear(16, feature_dim)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if x.dim() != 5 or x.size(1) != 3:
            raise ValueError("expected input of shape (B, 3, T, H, W)")
        x = x.float()
        if rescale:
            x = x * (2.0 / 255.0) - 1.0
        if resize:
            size = [x.size(2), self.resolution, self.resolution]
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        logits = self.head(h.mean(dim=[2, 3, 4]))
        if return_features:
            return logits
        return logits.softmax(dim=1)


def build_tiny_i3d(path: str | Path, seed: int = 0, feature_dim: int = I3D_FEATURE_DIM) -> Path:
    """Write a tiny random TorchScript I3D stand-in to ``path`` (deterministic for a seed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = torch.jit.script(_TinyI3D(feature_dim).eval())
    torch.jit.save(module, str(path))
    return path


TINY_VIDEOMAE_CONFIG = VideoMAEConfig(embed_dim=48, depth=2, num_heads=2, mlp_hidden_dim=96, num_classes=174)


def build_tiny_videomae(path: str | Path, seed: int = 0, config: VideoMAEConfig = TINY_VIDEOMAE_CONFIG) -> Path:
    """Write a tiny random VideoMAE-v2 (cd-fvd's architecture, ViT-g's patch 14, tubelet 2, 224x224
    input, 16 frames; width 48 and 2 blocks by default) to ``path`` (deterministic for a seed).

    The file's form follows its suffix:

    * ``.safetensors``: the ViT's state dict, keyed as cd-fvd's checkpoint, with the
      ``VideoMAEConfig`` as JSON metadata (``"videomae_config"``);
    * ``.pth``: ``torch.save({"model": state_dict, "videomae_config": json})``, the layout of
      cd-fvd's ``vit_g_hybrid_pt_1200e_ssv2_ft.pth``, read back with ``weights_only=True``;
    * anything else (``.pt``): TorchScript of ``VideoMAEFeatures`` (uint8 (B, 3, T, H, W) -> (B, D)).

    All three load with ``workbench.metrics.videomae.load_videomae_detector``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = VideoMAEv2(config).eval()
        with torch.no_grad():  # trunc-normal(0.02)-like weights, LayerNorms at identity, as VideoMAE initialises
            for name, p in vit.named_parameters():
                if "norm" in name:
                    continue
                p.copy_(torch.randn_like(p) * (0.02 if p.ndim > 1 else 0.01))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: config.to_json()})
    elif path.suffix == ".pth":
        torch.save({"model": state, CONFIG_METADATA_KEY: config.to_json()}, str(tmp))
    else:
        torch.jit.save(torch.jit.script(VideoMAEFeatures(vit).eval()), str(tmp))
    os.replace(tmp, path)
    return path


def _train_clip_tokenizer(vocab_size: int, max_length: int):
    """A byte-level BPE with CLIP's normalisation and specials, trained on a small word list."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    suffix = "</w>"
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix=suffix, unk_token=eos))
    # Same normaliser and pre-tokeniser as transformers' CLIPTokenizer, so the
    # trained merges mean the same thing when it rebuilds the tokenizer.
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    split = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # Merges are built, not trained: the BPE trainer breaks frequency ties in hash-map order, so a
    # trained tiny tokenizer (and every CLIP score made with it) would differ from build to build.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {bos: 0, eos: 1}
    for char in alphabet:  # every byte, also in its end-of-word form, as in CLIP's vocabulary
        for token in (char, char + suffix):
            vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted({w.lower() for w in _WORDS}):
        pieces = list(word[:-1]) + [word[-1] + suffix]
        current = pieces[0]
        for piece in pieces[1:]:
            if current + piece not in vocab:
                merges.append((current, piece))
                vocab[current + piece] = len(vocab)
            current += piece
        if len(vocab) >= vocab_size + 2 * len(alphabet):
            break
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _clip_image_processor(image_size: int):
    import transformers

    # The default CLIPImageProcessor needs torchvision; the PIL one is equivalent.
    cls = transformers.CLIPImageProcessor
    if importlib.util.find_spec("torchvision") is None:
        cls = getattr(transformers, "CLIPImageProcessorPil", cls)
    return cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def build_tiny_clip(out_dir: str | Path, seed: int = 0, image_size: int = 32, max_length: int = 32) -> Path:
    """Save a tiny random CLIPModel and CLIPProcessor to ``out_dir`` with ``save_pretrained``.

    Loadable with ``CLIPModel.from_pretrained(out_dir)`` /
    ``CLIPProcessor.from_pretrained(out_dir)`` and ``workbench.metrics.clip_score.load_clip``.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    out_dir = Path(out_dir)
    tokenizer = _train_clip_tokenizer(vocab_size=400, max_length=max_length)
    processor = CLIPProcessor(image_processor=_clip_image_processor(image_size), tokenizer=tokenizer)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
