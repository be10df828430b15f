"""Finding the bundled recipes (recipes/*.yaml) from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
SEARCH = (Path.cwd() / "recipes", _HERE.parent / "recipes", _HERE / "_recipes")


def recipe_path(name: str) -> Path:
    """``name`` as a path if it exists, else ``recipes/<name>.yaml`` from the checkout or wheel."""
    direct = Path(name)
    if direct.is_file():
        return direct
    for folder in SEARCH:
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for f in SEARCH if f.is_dir() for p in f.glob("*.yaml")})
    raise FileNotFoundError(f"recipe {name!r} not found; bundled recipes: {', '.join(known) or 'none'}")
