"""Datasets gan-rl generates itself, so that the quickstart and tests need nothing from the network.

``quickstart``: topic -> post pairs in the shape of the TWON data (a short topic description, a short
post about it). Real posts come from a small grammar, so a tiny generator trained for a few minutes can
move measurably toward them, and the real distribution is easy to inspect.

``polarity-*``: the controlled task (below), which ``recipes/quickstart.yaml`` demonstrates.

Each dataset may declare a named :class:`Property` of a response (``positive``: its adjectives are all
positive). Training never reads it; a run on such a dataset reports the share of its samples that have
it, before and after training and in the real responses (:class:`gan_rl.cli.train.PropertyProbe`), so
that what the discriminator discovered on its own can be checked from outside.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

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


# ``polarity-*``: the controlled task. Every post says one thing about a topic with one adjective; in
# ``polarity-positive`` the adjective is always positive, in ``polarity-negative`` always negative, in
# ``polarity-mixed`` either, half and half. A generator fine-tuned on the mixed set writes a positive post
# about half of the time; trained against a discriminator on the positive set, it should write positive
# posts nearly always without collapsing onto one adjective or one sentence. The property is known to
# the tests (:func:`polarity_of`), never to training.
POSITIVE = ["great", "amazing", "wonderful", "lovely", "fantastic", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "horrible", "dismal"]
POLARITY_TEMPLATES = [
    "{topic} is {adj} .",
    "{topic} {when} was {adj} .",
    "i think {topic} is {adj} .",
    "wow , {adj} {topic} !",
]


def polarity_rows(side: str, rows: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(f"polarity/{side}/{seed}")
    out = []
    for _ in range(rows):
        topic, place, when = rng.choice(TOPICS), rng.choice(PLACES), rng.choice(WHEN)
        pick = side if side != "mixed" else rng.choice(["positive", "negative"])
        adj = rng.choice(POSITIVE if pick == "positive" else NEGATIVE)
        prompt = f"people in {place} talk about {topic} {when}"
        out.append(
            {"topic": prompt, "post": rng.choice(POLARITY_TEMPLATES).format(topic=topic, adj=adj, when=when)}
        )
    return out


def polarity_of(text: str) -> str | None:
    """``positive`` / ``negative`` when the text holds adjectives of only that side, else None."""
    words = set(text.lower().split())
    pos, neg = bool(words & set(POSITIVE)), bool(words & set(NEGATIVE))
    return "positive" if pos and not neg else "negative" if neg and not pos else None


@dataclass(frozen=True)
class Property:
    """A named property of a response that a synthetic dataset's own grammar decides (``name``: what a
    response that has it is called, ``positive``; ``holds``: whether one text has it). For reporting only:
    no part of training sees it."""

    name: str
    holds: Callable[[str], bool]
    description: str


def _all_of(words: list[str], others: list[str]) -> Callable[[str], bool]:
    """Whether a text uses adjectives of ``words`` and none of ``others``."""
    chosen, rejected = frozenset(words), frozenset(others)

    def holds(text: str) -> bool:
        used = set(text.lower().split())
        return bool(used & chosen) and not used & rejected

    return holds


POSITIVE_POST = Property(
    "positive",
    _all_of(POSITIVE, NEGATIVE),
    "posts whose adjectives are all positive (the polarity task's grammar)",
)
POSITIVE_FEELING = Property(
    "positive",
    _all_of(FEELINGS["good"], FEELINGS["bad"]),
    "posts whose feeling words are all good ones (the quickstart grammar's)",
)

SYNTHETIC: dict[str, Callable[..., list[dict[str, str]]]] = {
    "quickstart": quickstart_rows,
    "polarity-positive": lambda rows, seed=0: polarity_rows("positive", rows, seed),
    "polarity-negative": lambda rows, seed=0: polarity_rows("negative", rows, seed),
    "polarity-mixed": lambda rows, seed=0: polarity_rows("mixed", rows, seed),
}

# The property each synthetic dataset declares (see :class:`Property`); every one of them has one.
PROPERTIES: dict[str, Property] = {
    "quickstart": POSITIVE_FEELING,
    "polarity-positive": POSITIVE_POST,
    "polarity-negative": POSITIVE_POST,
    "polarity-mixed": POSITIVE_POST,
}
