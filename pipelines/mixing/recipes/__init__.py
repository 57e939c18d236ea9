"""Tuple recipes. Each turns a unit RNG and a source pool into one or more draft tuples; `RECIPES` maps names."""
from __future__ import annotations

from pipelines.mixing.recipes.base import Draft, Recipe
from pipelines.mixing.recipes.noisy import NoisyRecipe
from pipelines.mixing.recipes.opensep import OpenSepRecipe
from pipelines.mixing.recipes.promptsep import PromptSepRecipe
from pipelines.mixing.recipes.triplets import TripletRecipe

RECIPES: dict[str, type[Recipe]] = {
    "triplets": TripletRecipe,
    "noisy_music": NoisyRecipe,
    "noisy_speech": NoisyRecipe,
    "noisy_sound": NoisyRecipe,
    "promptsep": PromptSepRecipe,
    "opensep": OpenSepRecipe,
}


def make_recipe(name: str, cfg, pool, wild=None) -> Recipe:
    """`wild` is an optional in-the-wild scene pool (only noisy_sound uses it)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}")
    recipe = RECIPES[name](name, cfg, pool)
    recipe.wild = wild
    return recipe


__all__ = ["Draft", "Recipe", "RECIPES", "make_recipe"]
