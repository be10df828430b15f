"""The model card (README.md with Hugging Face Hub front matter) of an export."""

from __future__ import annotations

import re

from workbench.common import is_hub_id
from workbench.export.directory import MARKER
from workbench.export.weights import LORA_WEIGHT_NAME

# Licenses of known base models (hub metadata ids). Anything else is reported as `other`.
BASE_LICENSES = {
    "thudm/cogvideox-2b": {"license": "apache-2.0"},
    "zai-org/cogvideox-2b": {"license": "apache-2.0"},
    "thudm/cogvideox-5b": {"license": "other", "license_name": "cogvideox-license",
                           "license_link": "https://huggingface.co/THUDM/CogVideoX-5b/blob/main/LICENSE"},
    "zai-org/cogvideox-5b": {"license": "other", "license_name": "cogvideox-license",
                             "license_link": "https://huggingface.co/zai-org/CogVideoX-5b/blob/main/LICENSE"},
    "thudm/cogvideox1.5-5b": {"license": "other", "license_name": "cogvideox-license",
                              "license_link": "https://huggingface.co/THUDM/CogVideoX1.5-5B/blob/main/LICENSE"},
    "zai-org/cogvideox1.5-5b": {"license": "other", "license_name": "cogvideox-license",
                                "license_link": "https://huggingface.co/zai-org/CogVideoX1.5-5B/blob/main/LICENSE"},
}


def strip_front_matter(text: str) -> str:
    match = re.match(r"^---\s*\n.*?\n---\s*\n", text, flags=re.S)
    return text[match.end():] if match else text


def model_card(*, mode: str, merged: bool, base_model: str, base_model_id: str | None, title: str,
               load_from: str, lora: dict | None, recipe: str | None, dataset_card: str | None,
               metrics: dict[str, float], lineage: list[str], family) -> tuple[str, bool]:
    """README.md with hub front matter. Returns (text, license_known). ``family``: the base model's
    (workbench.model.families), which names the pipeline class, the native clip and the text length."""
    import yaml

    hub_base = base_model_id or (base_model if is_hub_id(base_model) else None)
    license_meta = BASE_LICENSES.get((hub_base or "").lower())
    meta: dict = {}
    if hub_base:
        meta["base_model"] = hub_base
    meta["library_name"] = "diffusers"
    meta.update(license_meta or {"license": "other"})
    usage = family.card_usage()  # the family's task, image argument and image preparation
    meta["pipeline_tag"] = usage["task"]
    meta["tags"] = [usage["task"], "cogvideox", family.name, mode, "diffusers-training"]
    # A local base directory means nothing to someone who downloads the card: name a placeholder and say
    # what it stands for (pass --base-model-id to name the hub model it is a copy of).
    base_ref = hub_base or "PATH/TO/BASE_MODEL"
    base_link = f"[{hub_base}](https://huggingface.co/{hub_base})" if hub_base else f"`{base_model}` (local)"

    kind = "LoRA adapter" if mode == "lora" else "Full fine-tune"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {title}", "",
             f"{kind} of {base_link} for {usage['task']}, "
             "trained with cogvideox-workbench.", ""]
    if license_meta is None:
        lines += ["License: `other`: the base model's license is not known to the exporter; state it "
                  "here before publishing.", ""]

    lines += ["## Base model", ""]
    lines += [f"- {key}: {value}" for key, value in family.card_facts().items()]
    lines += ["", "## Files", ""]
    if lora:
        lines.append(f"- `{LORA_WEIGHT_NAME}`: the LoRA adapter of the transformer (rank {lora['rank']}, "
                     f"alpha {lora['alpha']}, targets {', '.join(lora['targets'])}) in diffusers format.")
    if merged:
        what = "with the adapter merged into the transformer" if mode == "lora" else "with the fine-tuned transformer"
        lines.append(f"- `model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`: "
                     f"the complete pipeline {what}.")
    lines.append(f"- `{MARKER}`: file list with sha256 checksums and the training lineage.")
    lines.append("")

    clip = family.native
    pipeline = family.pipeline_class
    prepare = (f'image = prepare_image(load_image("first_frame.png"), {clip.height}, {clip.width})\n'
               if usage["prepare"] else "")
    call = (prepare + f'video = pipe({usage["image_arg"]}prompt="a red circle moving from left to right", '
            f'num_frames={clip.num_frames}, '
            f'height={clip.height}, width={clip.width},\n'
            f'             num_inference_steps=50, guidance_scale=6.0, max_sequence_length={family.text_len}).frames[0]\n'
            f'export_to_video(video, "video.mp4", fps={clip.fps:g})')
    head = f"import torch\nfrom diffusers import {pipeline}\nfrom diffusers.utils import {usage['utils']}\n\n"
    lines += ["## Usage", ""]
    if usage["prepare"]:
        lines += ["The model was trained on images framed as its clips were: scaled to cover the clip keeping their "
                  "aspect ratio, then centre-cropped. The pipeline's own preprocessing stretches an image to the "
                  "clip instead, so frame yours first:", "", "```python", usage["prepare"].strip(), "```", ""]
    if merged:
        lines += ["```python", head + f'pipe = {pipeline}.from_pretrained("{load_from}", '
                  f"torch_dtype=torch.bfloat16).to(\"cuda\")\n" + call, "```", ""]
    if lora:
        if merged:
            lines += ["Or load the adapter on top of the base model:", ""]
        lines += ["```python", head + f'pipe = {pipeline}.from_pretrained("{base_ref}", '
                  f'torch_dtype=torch.bfloat16).to("cuda")\npipe.load_lora_weights("{load_from}")\n' + call,
                  "```", ""]
        if not hub_base:
            lines += [f"`PATH/TO/BASE_MODEL`: the base model was the local directory `{base_model}`; replace the "
                      "placeholder with your copy of it, or with its hub id.", ""]
    model_args = load_from if merged else f"{base_ref} --lora {load_from}"
    lines += [f'With the workbench: `workbench generate --model {model_args}{usage["generate_option"]} --prompt "..." '
              '--out video.mp4` (it frames the image the same way).',
              ""]

    lines += ["## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| `{k}` | {v:.6g} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("No `eval/` metrics were logged for the training run (run `workbench eval`).")
    lines.append("")
    lines += ["## Training recipe", ""]
    lines += ["```yaml", recipe.strip(), "```"] if recipe else ["The run's config.yaml was not found."]
    lines.append("")
    lines += ["## Training data", ""]
    lines.append(strip_front_matter(dataset_card).strip() if dataset_card else "The dataset has no README.md card.")
    lines += ["", "## Lineage", ""] + [f"- {item}" for item in lineage] + [""]
    return "\n".join(lines), license_meta is not None
