"""A (prompt, response) pair as one token sequence: the input of the ``head``'s encoder and of the ``adapter`` kind."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.types import Pair
from gan_rl.utils.generation import chat_prompt


class PairTokenizer:
    """A (prompt, response) pair as the token ids of one sequence, and where its response starts.

    With ``generator_format`` the prompt is tokenized exactly as the generator saw it (its chat template);
    otherwise as the raw prompt text and a newline. Unconditional: the BOS token alone stands for the
    prompt. ``mark_end`` appends the EOS token to a response that ended on its own. A long prompt keeps
    its last ``max_length // 2`` tokens; the response fills the rest.
    """

    def __init__(self, config: DiscriminatorConfig, tokenizer: Any, generator_format: bool) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.generator_format = generator_format
        self._prompt_ids: OrderedDict[str, list[int]] = OrderedDict()

    def prompt_ids(self, pair: Pair) -> list[int]:
        tok = self.tokenizer
        if not self.config.conditional:
            return [tok.bos_token_id] if tok.bos_token_id is not None else []
        if self.generator_format:
            prompt = pair.prompt
            if isinstance(prompt, list):
                prompt = chat_prompt(tok, prompt)
            return tok(prompt, add_special_tokens=False)["input_ids"]
        return tok(pair.prompt_text + "\n", add_special_tokens=True)["input_ids"]

    def __call__(self, pair: Pair) -> tuple[list[int], int]:
        key = str(pair.prompt) if self.config.conditional else ""
        prompt_ids = self._prompt_ids.get(key)
        if prompt_ids is None:
            prompt_ids = self._prompt_ids[key] = self.prompt_ids(pair)
            if len(self._prompt_ids) > 4096:
                self._prompt_ids.popitem(last=False)
        response_ids = self.tokenizer(pair.response, add_special_tokens=False)["input_ids"]
        end = self.tokenizer.eos_token_id
        if self.config.mark_end and pair.ended and end is not None:
            response_ids = [*response_ids, end]
        max_len = self.config.max_length
        prompt_ids = prompt_ids[-(max_len // 2) :] if len(prompt_ids) > max_len // 2 else prompt_ids
        response_ids = response_ids[: max_len - len(prompt_ids)]
        if not prompt_ids and not response_ids:  # an empty response, no prompt, a tokenizer without BOS
            tok = self.tokenizer
            start = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
            return [start if start is not None else 0], 1
        return prompt_ids + response_ids, len(prompt_ids)
