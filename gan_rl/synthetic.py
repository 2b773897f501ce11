"""Datasets gan-rl generates itself, so that the quickstart and tests need nothing from the network.

``quickstart``: topic -> post pairs in the shape of the TWON data (a short topic description, a short
post about it). Real posts come from a small grammar, so a tiny generator trained for a few minutes can
move measurably toward them, and the real distribution is easy to inspect.
"""

from __future__ import annotations

import random

PLACES = ["berlin", "paris", "texas", "ohio", "london", "rome", "tokyo", "oslo"]
WHEN = ["this morning", "tonight", "last week", "on monday", "all year"]
TOPICS = ["coffee", "rain", "football", "music", "cats", "elections", "trains", "pizza", "taxes", "movies"]
FEELINGS = {"good": ["great", "amazing", "wonderful"], "bad": ["awful", "terrible", "boring"]}
TEMPLATES = [
    "{topic} is {feeling} !",
    "i think {topic} is {feeling} !",
    "wow , {topic} {when} was {feeling} !",
    "so much {topic} {when} . {feeling} !",
]


def quickstart_rows(rows: int, seed: int = 0) -> list[dict[str, str]]:
    """``rows`` examples with columns ``topic`` (the prompt) and ``post`` (the real response)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        topic, place, when = rng.choice(TOPICS), rng.choice(PLACES), rng.choice(WHEN)
        feeling = rng.choice(FEELINGS[rng.choice(["good", "bad"])])
        prompt = f"people in {place} talk about {topic} {when}"
        post = rng.choice(TEMPLATES).format(topic=topic, feeling=feeling, when=when)
        out.append({"topic": prompt, "post": post})
    return out


SYNTHETIC = {"quickstart": quickstart_rows}
