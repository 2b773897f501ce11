"""The ``adapter`` discriminator: GAD's critic without a second model, a LoRA adapter of its own on the generator's base."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.encoder import ENCODE_PAD_MULTIPLE
from gan_rl.discriminator.pair_tokenizer import PairTokenizer
from gan_rl.types import Pair
from gan_rl.utils.lora import lora_config
from gan_rl.utils.modeling import learned_position_limit
from gan_rl.utils.padding import right_pad

DISCRIMINATOR_ADAPTER = "discriminator"  # the adapter's name beside the policy's ("default")


class AdapterDiscriminator(Discriminator):
    """GAD's critic without a second model: a LoRA adapter of its own on the generator's base weights and
    a linear score head on the final hidden state of the pair's last token.

    The generator is a PEFT model (``model.lora``); :meth:`bind` adds the adapter ``discriminator`` beside
    the policy's. Every forward runs with that adapter alone active (:meth:`engaged`), from the forward
    through its backward, so its gradient reaches its own weights and never the policy's; the policy's
    adapter is active again after it, TRL's reference (all adapters off) is untouched, and TRL's optimizer,
    created while the policy's adapter is the trainable one, never holds this adapter's weights.
    Its weights are this module's: :meth:`state_dict` holds them under ``adapter.`` beside the head, so
    checkpoints, the rank broadcast and the fingerprint cover them.

    The cost is the generator's: a full forward per scored pair, and a backward through the base for each
    update (a ``head`` reads cached frozen features instead).
    """

    def __init__(self, config: DiscriminatorConfig, tokenizer: Any, hidden_size: int) -> None:
        super().__init__(config)
        self.tokens = PairTokenizer(config, tokenizer, generator_format=True)
        self.score_head = nn.Linear(hidden_size, 1)
        self._peft: list[nn.Module] = []  # the generator (a list: not a submodule, not in the head's state)
        self._depth = 0
        self.position_limit: int | None = None

    # -- the adapter on the generator -----------------------------------------------------------------

    @property
    def peft_model(self) -> nn.Module:
        if not self._peft:
            raise RuntimeError("AdapterDiscriminator.bind() must be called before the discriminator is used.")
        return self._peft[0]

    def bind(self, peft_model: nn.Module) -> None:
        """Add the adapter to the generator (``model.lora``'s PEFT model, unwrapped), seeded by the config's
        seed; the policy's adapter stays the active and trainable one."""
        from gan_rl.utils.lora import ClassifierLoraSettings

        if DISCRIMINATOR_ADAPTER not in peft_model.peft_config:
            active = peft_model.active_adapter
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)
                settings = self.config.lora or ClassifierLoraSettings()
                peft_model.add_adapter(DISCRIMINATOR_ADAPTER, lora_config(settings, "CAUSAL_LM"))
            peft_model.set_adapter(active)  # PEFT marks the active adapter (alone) trainable
        self._peft = [peft_model]
        self.position_limit = learned_position_limit(peft_model)

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The adapter's weights by name, in a fixed order (none before :meth:`bind`)."""
        if not self._peft:
            return []
        tag = f".{DISCRIMINATOR_ADAPTER}."
        return sorted((n, p) for n, p in self.peft_model.named_parameters() if tag in n)

    def trainable_parameters(self) -> list[nn.Parameter]:
        # The adapter's weights whether or not it is active now (requires_grad follows the active one).
        return [*self.score_head.parameters(), *(p for _, p in self.adapter_parameters())]

    @contextlib.contextmanager
    def engaged(self):
        if self._depth:  # nested (score -> forward): already active
            yield
            return
        model = self.peft_model
        active, was_training = model.active_adapter, model.training
        model.set_adapter(DISCRIMINATOR_ADAPTER)
        model.train(self.training)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            model.set_adapter(active)
            model.train(was_training)

    # -- weights: the head's and the adapter's ----------------------------------------------------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for name, param in self.adapter_parameters():
            out[f"{prefix}adapter.{name}"] = param if kwargs.get("keep_vars") else param.detach()
        return out

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        adapter = {k[len("adapter.") :]: v for k, v in state_dict.items() if k.startswith("adapter.")}
        result = super().load_state_dict(
            {k: v for k, v in state_dict.items() if not k.startswith("adapter.")}, strict=False, assign=assign
        )
        own = dict(self.adapter_parameters())
        missing = [*result.missing_keys, *(f"adapter.{n}" for n in own if n not in adapter)]
        unexpected = [*result.unexpected_keys, *(f"adapter.{n}" for n in adapter if n not in own)]
        with torch.no_grad():
            for name, value in adapter.items():
                if name in own:
                    own[name].copy_(value)
        if strict and (missing or unexpected):
            raise RuntimeError(f"AdapterDiscriminator: missing keys {missing}, unexpected keys {unexpected}")
        return type(result)(missing, unexpected)

    # -- pairs --------------------------------------------------------------------------------------

    def _featurize(self, pairs: list[Pair]) -> list[torch.Tensor]:
        return [torch.tensor(self.tokens(p)[0], dtype=torch.long) for p in pairs]

    def collate(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pad = self.tokens.tokenizer.pad_token_id or 0
        multiple = ENCODE_PAD_MULTIPLE  # as the head's encoder reads chunks: see its comment
        longest = max(len(f) for f in features)
        if self.position_limit is not None and -(-longest // multiple) * multiple > self.position_limit:
            multiple = 1
        input_ids, attention = right_pad(features, pad, multiple)
        device = self.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.engaged():
            model = self.peft_model.get_base_model()  # the generator with the adapters in its layers
            body = model.get_decoder() if hasattr(model, "get_decoder") else model
            hidden = body(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).last_hidden_state
        last = batch["attention_mask"].sum(dim=1) - 1  # right-padded: each pair's last token
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.score_head(pooled.float()).squeeze(-1)
