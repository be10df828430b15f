"""Train the shapes world's text-video contrastive model, in the CLIP slot of the CLIP score.

A transformers ``CLIPModel`` at small widths (``clip_config``: ViT with 64x64 images in 8x8 patches;
text transformer over a 32-token context; 64-d projections) trained contrastively on (frame,
caption) pairs: a random frame of a rendered clip, augmented as decoded mp4s and generated videos
differ from clean renders (``augment``), with its caption.

Loss: CLIP's symmetric InfoNCE with its learnable logit scale (clamped at 100), adapted to a world of
48 captions: image -> text is a softmax over the 48 distinct captions (a batch repeats captions, so
its other copies are no negatives), text -> image a softmax over the batch's frames with every frame
of that caption a positive (targets spread evenly over them).

Preprocessing is the saved ``CLIPProcessor``'s (rescale 1/255, CLIP mean/std; at 64x64 resize and
crop are identities), done on tensors on the device; ``check_preprocessing`` asserts both agree.

The tokenizer is the project's deterministic CLIP BPE (``standins._train_clip_tokenizer``), here
built over the world's caption words so that every word is one token.

Saved with ``save_pretrained`` (model and processor) so ``workbench.metrics.clip_score.load_clip``
and ``VideoCLIPScore`` load it; ``report.json`` beside it holds held-out quality.

    workbench shapes make --out B --stages clip        (4,000 steps of batch 256)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workbench.shapes.augment import (
    ATTRIBUTE_VALUES,
    Progress,
    augment,
    autocast,
    generator_for,
    heldout_seed,
    lr_at,
    mp4_roundtrip,
    render_pool,
    resolve_device,
    seed_everything,
    setup_backend,
    train_seed,
    write_report,
)
from workbench.shapes.world import CAPTION, COLOURS, DIRECTIONS, SHAPES, caption, parse_caption

IMAGE_SIZE = 64
MAX_LENGTH = 32
REPORT_NAME = "report.json"


def caption_words() -> list[str]:
    """Every word the world's captions use."""
    words = set(CAPTION.replace("{colour}", "").replace("{shape}", "").replace("{direction}", "").split())
    words |= set(COLOURS) | set(SHAPES)
    for d in DIRECTIONS:
        words |= set(d.split())
    return sorted(words)


def build_tokenizer(words: list[str] | None = None, max_length: int = MAX_LENGTH):
    """CLIP BPE tokenizer (CLIP's normaliser, pre-tokeniser and specials) whose merges spell each of
    ``words`` (default: the world's caption words) as one token.

    A copy of ``workbench.metrics.standins._train_clip_tokenizer`` with a word list and no vocabulary
    cap, plus a fix-up: BPE applies merges by rank, so a merge made for one word can split another
    (``to`` inside ``bottom``); merges for the pieces a word actually falls into are appended until
    every word is a single token. Deterministic: no trainer, no hash-map order.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    words = sorted({w.lower() for w in (caption_words() if words is None else words)})
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    suffix = "</w>"

    def tokenizer_from(vocab: dict, merges: list) -> Tokenizer:
        tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), continuing_subword_prefix="",
                                   end_of_word_suffix=suffix, unk_token=eos))
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        split = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="removed", invert=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        return tok

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {bos: 0, eos: 1}
    for char in alphabet:
        for token in (char, char + suffix):
            vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []

    def add_chain(pieces: list[str]) -> None:
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            vocab.setdefault(current + piece, len(vocab))
            current += piece

    for word in words:
        add_chain(list(word[:-1]) + [word[-1] + suffix])
    for _ in range(10):
        tok = tokenizer_from(vocab, merges)
        split_words = [(w, tok.encode(w, add_special_tokens=False).tokens) for w in words]
        broken = [(w, pieces) for w, pieces in split_words if len(pieces) != 1]
        if not broken:
            break
        for _, pieces in broken:
            add_chain(pieces)
    else:
        raise RuntimeError(f"could not make single tokens of {broken}")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    for w in words:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RuntimeError(f"word {w!r} is {len(ids)} tokens")
    return tokenizer


def image_processor(image_size: int = IMAGE_SIZE):
    from workbench.metrics.standins import _clip_image_processor

    return _clip_image_processor(image_size)


def clip_config(tokenizer, *, hidden: int = 64, layers: int = 3, heads: int = 4, projection_dim: int = 64,
                image_size: int = IMAGE_SIZE, patch_size: int = 8, max_length: int = MAX_LENGTH):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim,
    )


class Preprocess:
    """The image processor's normalisation on tensors: (N, 3, H, W) values in [0, 255] -> pixel_values."""

    def __init__(self, processor, device: torch.device) -> None:
        ip = processor.image_processor if hasattr(processor, "image_processor") else processor
        self.scale = float(ip.rescale_factor)
        self.mean = torch.tensor(ip.image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() * self.scale - self.mean) / self.std


def check_preprocessing(processor, frames_u8: torch.Tensor, atol: float = 1e-5) -> float:
    """Assert ``Preprocess`` equals the processor on uint8 frames (N, 3, H, W) fed as the project feeds
    them (``clip_score.image_text_embeddings``); returns the largest difference."""
    ref = processor(images=[f for f in frames_u8], return_tensors="pt")["pixel_values"]
    mine = Preprocess(processor, torch.device("cpu"))(frames_u8)
    if ref.shape != mine.shape:
        raise AssertionError(f"processor gives {tuple(ref.shape)}, tensor preprocessing {tuple(mine.shape)}")
    diff = float((ref - mine).abs().max())
    assert diff <= atol, f"tensor preprocessing differs from the processor by {diff}"
    return diff


def _tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor,
                     logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over (B images) x (K distinct captions); returns (loss, image->text logits)."""
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    scale = logit_scale.float().exp().clamp(max=100.0)
    logits = scale * img @ txt.t()  # (B, K)
    i2t = F.cross_entropy(logits, caption_ids)
    present = torch.unique(caption_ids)
    positives = (caption_ids.view(1, -1) == present.view(-1, 1)).float()  # (P, B)
    targets = positives / positives.sum(dim=1, keepdim=True)
    t2i = -(targets * logits.t()[present].log_softmax(dim=1)).sum(dim=1).mean()
    return (i2t + t2i) / 2, logits


@torch.no_grad()
def evaluate_retrieval(model, preprocess: Preprocess, text_inputs: dict, pool, device: torch.device,
                       frame: int | None = None, batch_size: int = 256) -> dict:
    """Held-out retrieval with one frame per clip (the middle one by default).

    ``text_to_image``: for each caption, is the top frame among the pool's of that caption (exact), and
    of its colour / shape / direction; ``image_to_text``: for each frame, is the top of the 48 captions
    its own (exact) and right in colour / shape / direction.
    """
    t = pool.frames.shape[1] // 2 if frame is None else frame
    embs = []
    for s in range(0, len(pool), batch_size):
        images = pool.frames[s : s + batch_size, t].to(device).permute(0, 3, 1, 2)
        embs.append(_tensor(model.get_image_features(pixel_values=preprocess(images))).float())
    img = F.normalize(torch.cat(embs), dim=-1)
    txt = F.normalize(_tensor(model.get_text_features(**text_inputs)).float(), dim=-1)
    sim = img @ txt.t()  # (N, K)
    labels = pool.labels.to(device)
    cap_ids = pool.caption_ids.to(device)
    attrs = torch.tensor([[ATTRIBUTE_VALUES[k].index(parse_caption(c)[k]) for k in ATTRIBUTE_VALUES]
                          for c in pool.captions], device=device)  # (K, 3)
    out = {}
    top_caption = sim.argmax(dim=1)  # image -> text
    i2t = {"exact": float((top_caption == cap_ids).float().mean())}
    for i, k in enumerate(ATTRIBUTE_VALUES):
        i2t[k] = float((attrs[top_caption, i] == labels[:, i]).float().mean())
    present = torch.unique(cap_ids)
    top_image = sim[:, present].argmax(dim=0)  # text -> image, captions that have clips
    t2i = {"exact": float((cap_ids[top_image] == present).float().mean())}
    for i, k in enumerate(ATTRIBUTE_VALUES):
        t2i[k] = float((labels[top_image, i] == attrs[present, i]).float().mean())
    out["text_to_image"] = {k: round(v, 4) for k, v in t2i.items()}
    out["image_to_text"] = {k: round(v, 4) for k, v in i2t.items()}
    out["num_images"] = len(pool)
    out["num_captions"] = int(len(present))
    return out


def _other(scene, key: str) -> str:
    """The scene's caption with ``key`` changed to the next value of that attribute."""
    values = ATTRIBUTE_VALUES[key]
    attrs = dict(scene.attributes)
    attrs[key] = values[(values.index(attrs[key]) + 1) % len(values)]
    return caption(attrs["colour"], attrs["shape"], attrs["direction"])


def evaluate_clip_score(out_dir: Path, pool, num_videos: int = 48, mp4_videos: int = 16) -> dict:
    """Frame-averaged CLIP score as the project computes it (``clip_score.load_clip`` of the saved
    directory, ``clip_score_video``) of held-out videos against their own caption and against it with
    the colour (shape, direction) changed; and with the videos through an H.264 mp4."""
    from workbench.metrics.clip_score import clip_score_video, load_clip

    clip = load_clip(out_dir)
    n = min(num_videos, len(pool))
    scores = {"matched": [], "colour": [], "shape": [], "direction": []}
    for i in range(n):
        video = pool.frames[i].permute(0, 3, 1, 2)  # (F, 3, H, W) uint8
        scene = pool.scenes[i]
        scores["matched"].append(clip_score_video(clip, video, scene.caption))
        for key in ATTRIBUTE_VALUES:
            scores[key].append(clip_score_video(clip, video, _other(scene, key)))
    matched = np.array(scores["matched"])
    out = {"num_videos": n, "matched": round(float(matched.mean()), 3)}
    for key in ATTRIBUTE_VALUES:
        other = np.array(scores[key])
        out[f"other_{key}"] = round(float(other.mean()), 3)
        out[f"matched_wins_vs_{key}"] = round(float((matched > other).mean()), 4)
    out["matched_minus_other_colour"] = round(float((matched - np.array(scores["colour"])).mean()), 3)
    k = min(mp4_videos, n)
    decoded = [mp4_roundtrip(pool.frames[i].numpy()) for i in range(k)] if k else []
    if decoded and decoded[0] is not None:
        m, o = [], []
        for i, frames in enumerate(decoded):
            video = torch.from_numpy(frames).permute(0, 3, 1, 2)
            m.append(clip_score_video(clip, video, pool.scenes[i].caption))
            o.append(clip_score_video(clip, video, _other(pool.scenes[i], "colour")))
        out["mp4"] = {"num_videos": k, "matched": round(float(np.mean(m)), 3),
                      "other_colour": round(float(np.mean(o)), 3),
                      "matched_wins_vs_colour": round(float((np.array(m) > np.array(o)).mean()), 4)}
    else:
        out["mp4"] = None
    return out


def train_clip(
    out_dir: str | Path,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_clips: int = 4096,
    eval_clips: int = 192,
    score_videos: int = 48,
    mp4_videos: int = 16,
    log_every: int = 100,
    warmup: int = 100,
    weight_decay: float = 0.1,
    bf16: bool = True,
    hidden: int = 64,
    layers: int = 3,
    projection_dim: int = 64,
) -> dict:
    """Train the CLIP model, save model and processor to ``out_dir`` and return the report (also
    written to ``out_dir/report.json``).

    Each step: ``batch_size`` random training clips, one random frame of each, augmented on the device;
    all 48 captions through the text tower. AdamW (betas 0.9/0.98, weight decay on matrices only) with
    warm-up and cosine decay; bf16 autocast on CUDA. The report holds held-out retrieval
    (``eval_clips`` clips of another seed) and the project's frame-averaged CLIP score of
    ``score_videos`` held-out videos against their caption and against wrong ones.
    """
    from transformers import CLIPModel, CLIPProcessor

    t0 = time.perf_counter()
    device = resolve_device(device)
    setup_backend(device)
    seed_everything(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    processor = CLIPProcessor(image_processor=image_processor(), tokenizer=tokenizer)
    print(f"[clip] rendering {num_clips} training clips + {eval_clips} held-out clips", flush=True)
    train = render_pool(num_clips, train_seed(seed))
    heldout = render_pool(eval_clips, heldout_seed(seed))
    check_preprocessing(processor, train.frames[:4, 8].permute(0, 3, 1, 2).contiguous())
    train_dev = train.to(device)
    render_s = time.perf_counter() - t0

    model = CLIPModel(clip_config(tokenizer, hidden=hidden, layers=layers, projection_dim=projection_dim))
    model = model.to(device).train()
    num_params = sum(p.numel() for p in model.parameters())
    text_inputs = tokenizer(train.captions, padding=True, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="pt")
    text_inputs = {k: v.to(device) for k, v in text_inputs.items()}
    preprocess = Preprocess(processor, device)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    index_gen = torch.Generator().manual_seed(seed)
    aug_gen = generator_for(device, seed + 1)
    num_frames = train.frames.shape[1]
    progress = Progress("clip", steps, log_every)
    print(f"[clip] {num_params:,} parameters, device {device}, {steps} steps of batch {batch_size}", flush=True)

    history = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(len(train), (batch_size,), generator=index_gen)
        t = torch.randint(num_frames, (batch_size,), generator=index_gen)
        idx_d, t_d = idx.to(device), t.to(device)
        frames = train_dev.frames[idx_d, t_d].permute(0, 3, 1, 2).unsqueeze(2).float()  # (B, 3, 1, H, W)
        images = augment(frames, aug_gen).squeeze(2)
        cap_ids = train_dev.caption_ids[idx_d]
        with autocast(device, bf16):
            image_emb = _tensor(model.get_image_features(pixel_values=preprocess(images)))
            text_emb = _tensor(model.get_text_features(**text_inputs))
        loss, logits = contrastive_loss(image_emb, text_emb, cap_ids, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(100.0)))
        if (step + 1) % max(1, log_every) == 0 or step == 0 or step + 1 == steps:
            acc = (logits.argmax(1) == cap_ids).float().mean().item()
            values = {"loss": loss.item(), "acc_i2t": acc, "logit_scale": model.logit_scale.detach().exp().item()}
            progress(step, **values, lr=opt.param_groups[0]["lr"])
            history.append({"step": step + 1, **{k: round(v, 4) for k, v in values.items()},
                            "elapsed_s": round(progress.elapsed(), 2)})
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = progress.elapsed()

    model.eval()
    retrieval = evaluate_retrieval(model, preprocess, text_inputs, heldout, device)
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    score = evaluate_clip_score(out_dir, heldout, num_videos=score_videos, mp4_videos=mp4_videos)
    size = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file() and f.name != REPORT_NAME)
    report = {
        "model": "CLIPModel",
        "retrieval": retrieval,
        "clip_score": score,
        "num_params": num_params,
        "size_bytes": size,
        "logit_scale": model.logit_scale.detach().exp().item(),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "num_clips": num_clips,
        "eval_clips": eval_clips,
        "hidden": hidden,
        "layers": layers,
        "projection_dim": projection_dim,
        "vocab_size": len(tokenizer),
        "device": str(device),
        "render_seconds": round(render_s, 2),
        "train_seconds": round(train_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": history,
    }
    write_report(out_dir / REPORT_NAME, report)
    print(f"[clip] held-out retrieval {retrieval['text_to_image']}, CLIP score matched {score['matched']} vs "
          f"other colour {score['other_colour']}, saved to {out_dir} ({size / 1e6:.2f} MB) "
          f"in {report['seconds']:.0f}s", flush=True)
    return report
