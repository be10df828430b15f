#!/usr/bin/env bash
# Each mutation applied to a copy of the code; the hooked-input test must fail on every one.
set -u

src="$(cd "$(dirname "$0")/../.." && pwd)"
declare -A M
M[image_latent_multiplied_not_divided]="workbench/model/families/image_to_video.py|            return latents / self.scaling_factor|            return latents * self.scaling_factor"
M[image_latent_always_divided]="workbench/model/families/image_to_video.py|        return latents * self.scaling_factor|        return latents / self.scaling_factor"
M[video_latents_divided]="workbench/train/module.py|        latents = self.sample_moments(moments, generators) * self.family.scaling_factor|        latents = self.sample_moments(moments, generators) / self.family.scaling_factor"
M[image_in_last_frame]="workbench/model/families/image_to_video.py|        return torch.cat([first, pad], dim=1)|        return torch.cat([pad, first], dim=1)"
M[padding_at_the_back]="workbench/model/families/cogvideox15_5b.py|        return torch.cat([latents[:, :1].expand(-1, n, -1, -1, -1), latents], dim=1)|        return torch.cat([latents, latents[:, -1:].expand(-1, n, -1, -1, -1)], dim=1)"
M[training_image_stretched]="workbench/data/dataset.py|    return image_tensor(prepare_image(picture, height, width)).contiguous()|    return image_tensor(picture.resize((width, height))).contiguous()"
M[framing_stretches]="workbench/model/framing.py|    framed = resize_crop(pixels, height, width)[0].round().clamp(0, 255).to(torch.uint8)|    framed = torch.nn.functional.interpolate(pixels, size=(height, width), mode='bilinear', antialias=True)[0].round().clamp(0, 255).to(torch.uint8)"
for name in "${!M[@]}"; do
  IFS='|' read -r file old new <<< "${M[$name]}"
  dst=$(mktemp -d)/repo; mkdir -p "$dst"
  (cd "$src" && tar cf - workbench tests pyproject.toml) | (cd "$dst" && tar xf -)
  python - "$dst/$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
assert s.count(old) == 1, f"mutation site not found once in {p}: {old!r}"
open(p, "w").write(s.replace(old, new))
PY
  out=$(cd "$dst" && PYTHONPATH="$dst" python -m pytest -q -p no:cacheprovider tests/unit/test_training_matches_sampling.py 2>&1 | tail -1)
  echo "$name: $out"
done
