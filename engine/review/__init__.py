"""The per-run review page: hear what each filter kept and dropped near its threshold (engine/review/build.py)."""
from engine.review.build import build_review
from engine.review.run_data import ReviewError

__all__ = ["ReviewError", "build_review"]
