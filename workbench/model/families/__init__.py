"""Model families: everything that differs between the members of the CogVideoX family lives here.

One module per family (``cogvideox_2b.py``, ``cogvideox_5b.py``, ``cogvideox15_5b.py``, and the image-to-video
``cogvideox_5b_i2v.py``, ``cogvideox15_5b_i2v.py`` with what they share in ``image_to_video.py``), each a subclass of
``ModelFamily`` registered in ``FAMILIES``. A family owns: the native clip (the recipes' and suites'
default), the clip rules (frame count, sizes) with the fix in the message, the text length, the VAE scaling
of latents, the latent frame padding for ``patch_size_t`` (which the stock pipeline removes after sampling), the
rotary grid, the encoders,
the pipeline class, and what an export's model card says. Nothing outside this package reads transformer or
VAE config keys that tell the families apart.

The family of a model is read from the model itself (``transformer/config.json`` and ``vae/config.json``,
``family_of_configs``) or named in a recipe (``model.family``); a name that contradicts the model's configs
is a ``FamilyError``. Adding a family: docs/architecture.md, "Where to add things".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# the families, registered on import; detection takes the first whose ``matches`` holds
from workbench.model.families import (cogvideox15_5b, cogvideox15_5b_i2v, cogvideox_2b,  # noqa: F401
                                       cogvideox_5b, cogvideox_5b_i2v)
from workbench.model.families.base import FAMILIES, Clip, FamilyError, ModelFamily, takes_image

__all__ = ["FAMILIES", "Clip", "FamilyError", "ModelFamily", "family_class", "family_of_configs",
           "family_of_hub_id", "family_of_model", "family_of_pipeline", "read_model_configs"]


def family_class(name: str) -> type[ModelFamily]:
    if name not in FAMILIES:
        raise FamilyError(f"family={name!r}: choose one of {', '.join(FAMILIES)} (or auto: read from the model)")
    return FAMILIES[name]


def family_of_configs(transformer_config: Mapping[str, Any], vae_config: Mapping[str, Any] | None = None,
                      name: str | None = None, where: str = "") -> ModelFamily:
    """The family of a model from its configs; with ``name`` (a recipe's ``model.family``) the named one,
    checked against the configs."""
    # a family's ``matches`` reads its transformer's architecture; whether it takes an image is one rule for all
    i2v = takes_image(transformer_config)
    found = next((cls for cls in FAMILIES.values() if cls.matches(transformer_config) and cls.image_conditioned == i2v),
                 None)
    if found is None:
        raise FamilyError(f"{where or 'this model'}: its transformer config matches no CogVideoX family "
                          f"({', '.join(FAMILIES)})")
    if name not in (None, "auto") and family_class(name) is not found:
        raise FamilyError(f"{where or 'this model'} is a {found.title} model, not {family_class(name).title}: set "
                          f"model.family: {found.name} (or auto)")
    return found(transformer_config, vae_config)


def read_model_configs(model: str) -> tuple[dict, dict | None]:
    """(transformer config, VAE config) of a model directory or hub id, without loading any weights."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    transformer = dict(CogVideoXTransformer3DModel.load_config(model, subfolder="transformer"))
    try:
        vae = dict(AutoencoderKLCogVideoX.load_config(model, subfolder="vae"))
    except OSError:  # a transformer-only directory (a full fine-tune's export of the transformer)
        vae = None
    return transformer, vae


def family_of_model(model: str, name: str | None = None) -> ModelFamily:
    """The family of ``model`` (hub id or diffusers directory), read from its configs."""
    transformer, vae = read_model_configs(model)
    return family_of_configs(transformer, vae, name=name, where=model)


def family_of_hub_id(model: str) -> ModelFamily | None:
    """The family of a released model named by its hub id (THUDM/ or zai-org/), without reading its configs
    (the text length is the released one); None for any other id."""
    repo = model.split("/")[-1].lower()
    for cls in FAMILIES.values():
        if cls.hub_id.split("/")[-1].lower() == repo and model.split("/")[0].lower() in ("thudm", "zai-org"):
            return cls({"max_text_seq_length": cls.released_text_len})
    return None


def family_of_pipeline(pipe) -> ModelFamily:
    """The family of a loaded pipeline (or of CogVideoXComponents)."""
    vae = getattr(pipe, "vae", None)
    return family_of_configs(pipe.transformer.config, vae.config if vae is not None else None)
