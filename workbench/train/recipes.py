"""Finding the bundled recipes (recipes/*.yaml) from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

from workbench.common import UserError

_PACKAGE = Path(__file__).resolve().parents[1]  # workbench/


def recipe_folders() -> tuple[Path, ...]:
    """Where bundled recipes are looked up: ./recipes, the checkout's recipes/, the wheel's _recipes/."""
    return (Path.cwd() / "recipes", _PACKAGE.parent / "recipes", _PACKAGE / "_recipes")


def bundled_recipes() -> list[str]:
    """Names of the bundled recipes (file stems)."""
    return sorted({p.stem for f in recipe_folders() if f.is_dir() for p in f.glob("*.yaml")})


def recipe_path(name: str) -> Path:
    """``name`` as a path if it exists, else ``recipes/<name>.yaml`` from the checkout or wheel."""
    direct = Path(name)
    if direct.is_file():
        return direct
    for folder in recipe_folders():
        for candidate in (folder / name, folder / f"{name}.yaml", folder / Path(name).name):
            if candidate.is_file():
                return candidate
    raise UserError(f"recipe {name!r} not found; bundled recipes: {', '.join(bundled_recipes()) or 'none'}")
