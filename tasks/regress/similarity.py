"""Offline text similarity: cosine over character trigrams and word tokens, or difflib's ratio."""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter

_SPACES = re.compile(r"\s+")
_WORDS = re.compile(r"\w+")


def _features(text: str) -> Counter[str]:
    norm = _SPACES.sub(" ", text.lower()).strip()
    padded = f" {norm} "
    grams: Counter[str] = Counter(padded[i : i + 3] for i in range(max(len(padded) - 2, 0)))
    grams.update("w:" + word for word in _WORDS.findall(norm))
    return grams


def cosine(a: str, b: str) -> float:
    fa, fb = _features(a), _features(b)
    if not fa or not fb:
        return 1.0 if fa == fb else 0.0
    dot = sum(count * fb[gram] for gram, count in fa.items() if gram in fb)
    norm = math.sqrt(sum(c * c for c in fa.values())) * math.sqrt(sum(c * c for c in fb.values()))
    return dot / norm


def difflib_ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


METHODS = {"cosine": cosine, "difflib": difflib_ratio}


def similarity(a: str, b: str, method: str = "cosine") -> float:
    return METHODS[method](a, b)
