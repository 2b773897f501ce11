"""The types every layer passes around: a (prompt, response) :class:`Pair` and the dataset columns a
reward function receives.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_TEXT, REAL_RESPONSE = "prompt_text", "real_response"


Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Pair:
    """One (prompt, response): ``prompt`` as the generator saw it, ``prompt_text`` as written.

    The unit that the discriminator, its buffer, the reward and the SFT term pass around; it lives with
    the data because a real pair is one row of a TRL dataset (:func:`real_pairs`).
    """

    prompt: Prompt
    prompt_text: str
    response: str
    # Whether the response ended on its own (a real one always; a generation unless it was cut at
    # max_completion_length). Read by the discriminator with ``mark_end``.
    ended: bool = True

    @property
    def key(self) -> tuple[str, str]:
        """What makes two pairs the same text (the caches and the real pool hold each once)."""
        return (self.prompt_text, self.response)
