"""The latent + text-embedding cache written by ``workbench prepare``.

Encoding 49 frames at 720x480 through the VAE costs seconds a clip and T5-XXL needs ~10 GB, so
both run once, here, and training reads the results (see finetrainers' precomputation and the
CogVideo repo's cached latents; unlike them we keep the VAE's latent *distribution*, mean and
log-variance, so training samples a fresh latent each step exactly as it would from raw video).

Layout of a cache directory::

    index.json               what the cache was made from (model, VAE config hash, frames, size,
                             fps, text length) and, once complete, every entry's shard
    empty_prompt.safetensors the T5 embedding of "" (caption dropout for classifier-free guidance)
    shards/NNNNNN.safetensors one sample each: the named tensors of the model family's encoders
                              (latent_dist (2C, F', H/8, W/8), prompt_embeds (L, D), and any a family adds)

Each shard is written to a temporary name, fsynced and renamed, so a kill never leaves a half-written
shard; re-running ``prepare`` encodes only what is missing, and the entries whose identity (``Entry.key``: the file,
and a range row's range) differs from the one the shard recorded. A full disk (ENOSPC, EDQUOT) stops ``prepare``
with one line naming the file and its size (``DiskFull``): the shards written before it are complete,
with their checksums, and the index still reads as an incomplete cache, which the next ``prepare`` finishes. Processes can split the work
(``--num-shards``/``--shard-index``, or one per GPU rank) since every sample has its own file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from workbench.common import UserError, atomic_write_bytes, atomic_write_json, atomic_write_text, writing
from workbench.data.manifest import Entry, read_manifest, refuse_paths_outside_root

FORMAT_VERSION = 2  # 2: frames by presentation time, half-frame ties rounded up (caches of 1 are stale)


class CacheError(UserError, ValueError):
    """A cache that is missing, incomplete or made for other settings."""


@dataclass(frozen=True)
class CacheKey:
    """Everything that changes what the cache holds; a mismatch makes a cache stale."""

    model: str
    vae_config_sha256: str
    text_encoder_config_sha256: str
    num_frames: int
    height: int
    width: int
    fps: float | None
    max_text_len: int
    format_version: int = FORMAT_VERSION
    buckets: tuple[tuple[int, int], ...] | None = None  # encoded at each clip's bucket (height x width ignored)
    family: str = ""  # the model family whose encoders wrote it (workbench.model.families)


def config_sha256(config) -> str:
    """A stable hash of a diffusers/transformers config (private keys such as _name_or_path dropped)."""
    items = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    items = {k: v for k, v in items.items() if not k.startswith("_") and k not in ("transformers_version",)}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` to ``path`` atomically; returns the file's sha256 (of the bytes as written)."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    # serialised once: the checksum is of these bytes, not of a second read of the file; a full disk is a DiskFull
    # naming the shard and its size, and leaves no temporary file
    atomic_write_bytes(path, data, what="a cache shard")
    return hashlib.sha256(data).hexdigest()


def checksum_path(shard: Path) -> Path:
    """The shard's sha256, recorded when it was written (``NNNNNN.sha256`` beside it)."""
    return shard.with_suffix(".sha256")


def load_shard(path: Path, sha256: str | None) -> dict:
    """A shard's tensors; with ``sha256`` (recorded when it was written) the bytes are checked first, so a flipped
    byte or a truncated copy is a CacheError naming the shard and the fix, not a wrong latent or a crash."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = path.read_bytes()
    fix = ("delete it and re-run `workbench prepare` (or fit with data.cache: auto): only the missing shards are "
           "encoded again")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CacheError(f"{path}: cache shard is corrupted (its sha256 differs from the one recorded when it was "
                         f"written; {len(data)} bytes): {fix}")
    try:
        return load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise CacheError(f"{path}: cache shard does not read as safetensors ({e}): {fix}") from None


def normalised_fps(fps: float | str | None) -> float | None:
    """The frame rate as one number whatever way it was typed (``8``, ``8.0``, ``"8"``); None stays None."""
    return None if fps is None else float(fps)


def normalised_buckets(buckets) -> tuple[tuple[int, int], ...] | None:
    """Buckets as a tuple of (height, width) integer pairs (None stays None)."""
    return None if buckets is None else tuple((int(h), int(w)) for h, w in buckets)


def cache_key(model: str, num_frames: int, height: int, width: int, fps: float | None,
              buckets=None, *, family) -> CacheKey:
    """The CacheKey a run with these settings needs (reads the encoders' configs only, no weights).

    The one key function of prepare and fit: numbers are normalised (``fps: 8`` in a YAML and
    ``--fps 8.0`` on a command line give the same key and the same ``auto`` folder). ``family``: the model's
    family as the command read it where it started (its name and text length go into the key).
    """
    from diffusers import AutoencoderKLCogVideoX
    from transformers import AutoConfig

    from workbench.model.loading import absolute_if_local

    model = absolute_if_local(model)  # as the training module records it
    vae_cfg = AutoencoderKLCogVideoX.load_config(model, subfolder="vae")
    text_cfg = AutoConfig.from_pretrained(model, subfolder="text_encoder")
    max_len = family.text_len
    return CacheKey(model=str(model), family=family.name, vae_config_sha256=config_sha256(vae_cfg),
                    text_encoder_config_sha256=config_sha256(text_cfg), num_frames=int(num_frames),
                    height=int(height), width=int(width), fps=normalised_fps(fps), max_text_len=int(max_len),
                    buckets=normalised_buckets(buckets))


def auto_cache_dir(root: str | Path, model: str, num_frames: int, height: int, width: int, fps: float | None,
                   buckets=None) -> Path:
    """Where ``cache: auto`` lives: under the dataset, named by the model and the (normalised) data settings."""
    name = str(model).rstrip("/").replace("\\", "/").split("/")[-1] or "model"
    rate = "native" if fps is None else f"{normalised_fps(fps):g}"
    sizes = ("_".join(f"{h}x{w}" for h, w in normalised_buckets(buckets)) if buckets is not None
             else f"{int(height)}x{int(width)}")
    return Path(root) / ".workbench-cache" / f"{name}-{int(num_frames)}x{sizes}-{rate}fps"


def shard_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / "shards" / f"{index:06d}.safetensors"


def read_index(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / "index.json"
    if not path.is_file():
        raise CacheError(f"{cache_dir}: no cache here (index.json missing); run `workbench prepare` first")
    return json.loads(path.read_text())


def check_key(cache_dir: str | Path, expected: CacheKey) -> dict:
    """The cache's index, or a CacheError naming every setting that differs from ``expected``."""
    index = read_index(cache_dir)
    found = index.get("key", {})
    wanted = json.loads(json.dumps(asdict(expected)))  # as JSON stores it (tuples -> lists)
    diffs = [f"{k}: cache has {found.get(k)!r}, run needs {v!r}" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise CacheError(f"{cache_dir}: cache was made for other settings ({'; '.join(diffs)}); "
                         "re-run `workbench prepare` into a new directory")
    return index


def encode_entries(cache_dir: str | Path, root: str | Path, key: CacheKey, encode_fn, empty_prompt_fn,
                   rank: int = 0, world_size: int = 1, progress: bool = True) -> dict:
    """Encode every manifest entry of ``root`` that has no shard yet; return the final index.

    ``encode_fn(entry) -> {"latent_dist": ..., "prompt_embeds": ..., "size": (height, width)}`` does the model
    work (``size``: what the clip was encoded at, kept in the shard's metadata), so this function owns only the
    bookkeeping (what is done, atomic writes, resumption).
    Process ``rank`` of ``world_size`` encodes entries ``rank::world_size``; rank 0 writes the index.
    """
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    entries = read_manifest(root)  # before anything is created: a mistyped root leaves no folder behind
    refuse_paths_outside_root(entries, root, "workbench prepare")
    with writing(cache_dir / "shards", None, "the cache folder"):
        (cache_dir / "shards").mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / "index.json"
    if index_path.is_file():
        check_key(cache_dir, key)
    elif rank == 0:
        atomic_write_json(index_path, {"key": asdict(key), "root": str(Path(root).resolve()), "complete": False},
                          what="the cache index")
    if rank == 0 and not (cache_dir / "empty_prompt.safetensors").is_file():
        _atomic_safetensors(cache_dir / "empty_prompt.safetensors", {"prompt_embeds": empty_prompt_fn()})

    mine = [i for i in range(len(entries)) if i % world_size == rank]
    todo = [i for i in mine
            if not shard_path(cache_dir, i).is_file() or _stale_shard(shard_path(cache_dir, i), entries[i])]
    failures = {}
    bar = tqdm(todo, desc=f"encoding (rank {rank})" if world_size > 1 else "encoding", unit="clip",
               disable=not progress)
    for i in bar:
        try:
            tensors = encode_fn(entries[i])
        except Exception as e:  # noqa: BLE001 - a bad sample is reported, never fatal to the others
            failures[entries[i].key] = f"{type(e).__name__}: {e}"
            shard_path(cache_dir, i).unlink(missing_ok=True)  # a stale shard of another range must not stay
            continue
        height, width = tensors.pop("size")
        shard = shard_path(cache_dir, i)
        checksum_path(shard).unlink(missing_ok=True)  # a stale shard's: never beside the new bytes
        digest = _atomic_safetensors(shard, tensors, {"height": str(height), "width": str(width),
                                                      "key": entries[i].key})
        try:
            atomic_write_text(checksum_path(shard), digest + "\n", what="a cache shard's checksum")
        except BaseException:
            shard.unlink(missing_ok=True)  # no shard without its checksum: the next prepare encodes it again
            raise
    if failures:
        atomic_write_json(cache_dir / f"failures.rank{rank}.json", failures, what="the cache's failure list")
    if rank == 0:
        return finalize_index(cache_dir, root, key, entries)
    return read_index(cache_dir)


def finalize_index(cache_dir: Path, root, key: CacheKey, entries: list[Entry]) -> dict:
    """Record which entries have shards; ``complete`` only when all do."""
    have = [i for i in range(len(entries)) if shard_path(cache_dir, i).is_file()]
    failures = {}
    for f in cache_dir.glob("failures.rank*.json"):
        failures.update(json.loads(f.read_text()))
    index = {
        "key": asdict(key),
        "root": str(Path(root).resolve()),
        "complete": len(have) == len(entries),
        "num_entries": len(entries),
        "entries": [{"file_name": entries[i].file_name, "key": entries[i].key, "start": entries[i].start,
                     "end": entries[i].end, "caption": entries[i].caption, "image": entries[i].image,
                     "shard": shard_path(cache_dir, i).name, "size": _shard_size(shard_path(cache_dir, i)),
                     "sha256": _recorded_sha256(shard_path(cache_dir, i))}
                    for i in have],
        "failed": failures,
    }
    atomic_write_json(cache_dir / "index.json", index, what="the cache index")  # a full disk: the old index stays
    return index


def check_images(cache_dir: str | Path, index: dict, manifest: list[Entry]) -> None:
    """CacheError when the manifest now names other conditioning images than the cache was encoded with (an
    image-to-video cache stores each image's latents, so they are part of what keys it)."""
    cached = {e.get("key", e["file_name"]): e.get("image") for e in index.get("entries", [])}
    changed = [e for e in manifest if e.key in cached and cached[e.key] != e.image]
    if changed:
        e = changed[0]
        raise CacheError(f"{cache_dir}: {len(changed)} clips have another image than when the cache was made (first: "
                         f"{e.key}, {e.where}: {e.image!r}, cached {cached[e.key]!r}); delete the cache "
                         "folder (or prepare into a new one) to encode them again")


def stale_entries(index: dict, manifest: list[Entry]) -> list[tuple[Entry, str]]:
    """Manifest entries whose cached shard holds another range (or a range where the row has none, or none where
    it has one) than the row now names, with the key cached for each: the cache's sample identity is
    ``Entry.key``, by manifest position (shard N is row N)."""
    stale = []
    for cached in index.get("entries", []):
        i = int(Path(cached["shard"]).stem)
        if i >= len(manifest):
            continue
        entry, key = manifest[i], cached.get("key", cached["file_name"])
        if key != entry.key and (entry.range is not None or cached.get("start") is not None):
            stale.append((entry, key))
    return stale


def check_ranges(cache_dir: str | Path, index: dict, manifest: list[Entry]) -> None:
    """CacheError when manifest rows now name other clip ranges than the cache was encoded from."""
    stale = stale_entries(index, manifest)
    if stale:
        e, key = stale[0]
        raise CacheError(f"{cache_dir}: {len(stale)} manifest rows name another clip range than the cache holds "
                         f"(first: {e.where}: {e.key}, cached {key}); re-run `workbench prepare` (or fit with "
                         "data.cache: auto): it encodes those rows again")


def _stale_shard(shard: Path, entry: Entry) -> bool:
    """Whether ``shard`` was encoded from another sample than ``entry`` (its recorded key; a shard written before
    keys were recorded is a whole file's, stale only for a range row)."""
    from safetensors import safe_open

    try:
        with safe_open(str(shard), framework="pt") as f:
            recorded = (f.metadata() or {}).get("key")
    except Exception:  # noqa: BLE001 - an unreadable shard is the checksum's business, when it is read
        return False
    return recorded != entry.key if recorded is not None else entry.range is not None


def _recorded_sha256(shard: Path) -> str | None:
    """The checksum recorded when ``shard`` was written (None for a shard of a cache made before checksums)."""
    try:
        return checksum_path(shard).read_text().strip() or None
    except FileNotFoundError:
        return None


def _shard_size(path: Path) -> list[int]:
    """The (height, width) a shard's clip was encoded at (its metadata; the header alone is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return [int(meta["height"]), int(meta["width"])]


class CachedLatentDataset(Dataset):
    """Samples of a complete cache: latent distribution, prompt embedding, caption."""

    def __init__(self, cache_dir: str | Path, expected: CacheKey | None = None, entries: list[dict] | None = None,
                 index: dict | None = None):
        self.cache_dir = Path(cache_dir)
        if expected is not None:
            check_key(cache_dir, expected)
        index = index if index is not None else read_index(cache_dir)
        if not index.get("complete"):
            n, total = len(index.get("entries", [])), index.get("num_entries", "?")
            failed = index.get("failed") or {}
            if failed:
                shown = "; ".join(f"{name}: {why}" for name, why in list(failed.items())[:3])
                raise CacheError(f"{cache_dir}: cache is incomplete ({n}/{total} samples): {len(failed)} failed to "
                                 f"encode ({shown}{'; ...' if len(failed) > 3 else ''}); re-running prepare cannot fix "
                                 f"those: fix or remove them (`workbench data check {index.get('root', 'ROOT')}` "
                                 "reports them), or set data.on_bad_sample: skip to train without them")
            raise CacheError(f"{cache_dir}: cache is incomplete ({n}/{total} samples, an interrupted prepare); "
                             "re-run `workbench prepare` (or fit with data.cache: auto) to finish it")
        self.index = index
        self.entries = entries if entries is not None else index["entries"]
        # each entry's (height, width) when the cache holds several buckets (None: one size, batches of any)
        self.sizes = ([tuple(e["size"]) for e in self.entries] if index.get("key", {}).get("buckets") else None)
        self.empty_prompt_embeds = load_file(str(self.cache_dir / "empty_prompt.safetensors"))["prompt_embeds"]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        entry = self.entries[i]
        tensors = load_shard(self.cache_dir / "shards" / entry["shard"], entry.get("sha256"))
        # every named tensor the family's encoders stored (latent_dist, prompt_embeds, and whatever else it adds)
        return {**tensors, "caption": entry["caption"], "id": entry.get("key", entry["file_name"])}

    def collate(self, samples: list[dict]) -> dict:
        batch = {k: torch.stack([s[k] for s in samples]) for k, v in samples[0].items() if torch.is_tensor(v)}
        batch["caption"] = [s["caption"] for s in samples]
        batch["id"] = [s["id"] for s in samples]
        batch["empty_prompt_embeds"] = self.empty_prompt_embeds.unsqueeze(0)
        return batch
