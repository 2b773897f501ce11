"""The frozen encoder the ``head`` discriminator reads: hidden states of a language model (the generator's own
weights with adapters disabled, TRL's reference model, or a checkpoint), its forward stopped after the
layer the head reads, every chunk padded so that a pair's features do not depend on its batch."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.errors import InputError
from gan_rl.utils.backends import zero3_init_disabled
from gan_rl.utils.modeling import learned_position_limit
from gan_rl.utils.padding import ensure_pad_token


class FrozenEncoder:
    """Hidden states of a frozen language model, read by the discriminator head.

    With ``encoder: generator`` the model is bound once the trainer exists (:meth:`bind`): the generator
    with its LoRA adapters disabled, TRL's reference model, or a frozen copy of the initial checkpoint.
    """

    def __init__(
        self,
        tokenizer: Any,
        hidden_size: int,
        layer: int = -1,
        generator_format: bool = False,
        model: nn.Module | None = None,
        disable_adapters: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.hidden_size = hidden_size
        self.layer = layer
        # True when the encoder is the generator: prompts are encoded exactly as the generator saw them.
        self.generator_format = generator_format
        self.model = model
        self.disable_adapters = disable_adapters
        # Sharded weights (ZeRO-3, FSDP): the forward goes through ``runner()`` (the model as prepared,
        # whose hooks gather the shards), whole, and every rank runs as many forwards as the others.
        self.runner: Callable[[], nn.Module] | None = None
        self.sharded = False
        # A learned position table (GPT-2's wpe) cannot be padded past: the chunk padding stops there.
        self.position_limit: int | None = None
        if model is not None:
            check_encoder_layer(layer, model)
            self.position_limit = learned_position_limit(model)

    def bind(
        self,
        model: nn.Module,
        disable_adapters: bool = False,
        runner: Callable[[], nn.Module] | None = None,
        sharded: bool = False,
    ) -> None:
        """Use ``model`` (frozen weights, or a PEFT model whose adapters are switched off) from now on.

        ``runner`` returns the module to call for a forward when it is not ``model`` itself: the policy or
        reference model as TRL prepared it (a callable, because the trainer wraps its model only when
        training starts). ``sharded``: the weights are sharded across ranks (ZeRO-3, FSDP), so a forward is
        a collective: it runs the prepared root module whole (submodules of a sharded model cannot be
        called on their own) and :class:`HeadDiscriminator` keeps every rank's number of forwards equal.
        """
        check_encoder_layer(self.layer, model)
        self.model = model
        self.disable_adapters = disable_adapters
        self.runner = runner
        self.sharded = sharded
        self.position_limit = learned_position_limit(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _backbone(self) -> nn.Module:
        model = self.model
        if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
            # A PeftModel: its LM, whose LoRA layers sit in place (switched off by disable_adapters, else
            # active: SPIN's ranking encodes with the policy as it sampled).
            model = model.get_base_model()
        return getattr(model, "base_model", model)  # skip the LM head: only hidden states are needed

    def _stop_hook(self, backbone: nn.Module) -> Any:
        """A hook that ends the forward as soon as hidden state ``layer`` exists (None: run it all).

        ``hidden_states`` holds the embeddings and then one entry per layer (n + 1 in all), the last one
        after the final norm; so entry k (k in 1..n-1) is the raw output of decoder layer k - 1, and entry
        0 (the embeddings) is the input of decoder layer 0: reading it runs no layer at all.
        """
        if self.layer == -1:
            return None
        n_layers = getattr(backbone.config, "num_hidden_layers", None)
        for module in backbone.modules():
            if isinstance(module, nn.ModuleList) and len(module) == n_layers:
                index = self.layer if self.layer >= 0 else n_layers + 1 + self.layer
                if index == 0:
                    return module[0].register_forward_pre_hook(_stop_before, with_kwargs=True)
                if index < n_layers:
                    return module[index - 1].register_forward_hook(_stop_forward)
        return None

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._run(input_ids=input_ids, attention_mask=attention_mask)

    def forward_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden state ``layer`` for input embeddings, *with* gradients to the embeddings (the weights stay
        frozen): ``gan-rl gumbel`` feeds relaxed tokens (soft one-hot vectors times :meth:`embedding_matrix`)
        and back-propagates the discriminator's verdict through this encoder into the generator."""
        return self._run(inputs_embeds=inputs_embeds, attention_mask=attention_mask)

    def embedding_matrix(self) -> torch.Tensor:
        """The encoder's token-embedding matrix (vocabulary x hidden), as its embedding layer reads it."""
        if self.model is None:
            raise RuntimeError("FrozenEncoder.bind() must be called before the discriminator is used.")
        return self.model.get_input_embeddings().weight

    def _run(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("FrozenEncoder.bind() must be called before the discriminator is used.")
        if self.sharded:
            return self._run_prepared(**inputs)
        was_training = self.model.training
        self.model.eval()
        adapters_off = self.model.disable_adapter() if self.disable_adapters else contextlib.nullcontext()
        backbone = self._backbone()
        # An intermediate layer needs no later layers: stop the forward once it is computed.
        handle = self._stop_hook(backbone)
        try:
            with adapters_off:
                out = backbone(
                    **inputs,
                    output_hidden_states=self.layer != -1,
                    use_cache=False,
                )
        except _StopForward as stop:
            return stop.hidden
        finally:
            if handle is not None:
                handle.remove()
            self.model.train(was_training)
        return out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]

    def _run_prepared(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The forward through the prepared root module (sharded weights), as TRL runs its reference.

        The whole model runs (an exception part-way, as :meth:`_run` uses to stop early, would leave
        ZeRO-3's or FSDP's gathered shards behind); the LM head computes one position only
        (``logits_to_keep``) where the model takes it. Hidden state ``layer`` is the same as the early
        stop's: the layers after it do not change it.
        """
        model = self.model
        runner = self.runner() if self.runner is not None else model
        was_training = model.training
        model.eval()
        adapters_off = model.disable_adapter() if self.disable_adapters else contextlib.nullcontext()
        extra = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
        try:
            with adapters_off:
                out = runner(**inputs, output_hidden_states=True, use_cache=False, **extra)
        finally:
            model.train(was_training)
        return out.hidden_states[self.layer]


def _takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the causal LM (under a PEFT wrapper, if any) takes ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def check_encoder_layer(layer: int, model: nn.Module) -> None:
    """``layer`` must index ``hidden_states`` (n + 1 entries for n layers)."""
    n_layers = model.config.get_text_config().num_hidden_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise InputError(
            "{discriminator}.encoder_layer: {layer} is out of range for a {n}-layer encoder; valid: {low} to "
            "{n} (0: the embeddings, -1: the last layer).",
            layer=layer,
            n=n_layers,
            low=-(n_layers + 1),
        )


class _StopForward(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


def _stop_forward(module: nn.Module, inputs: Any, output: Any) -> None:
    raise _StopForward(output[0] if isinstance(output, tuple) else output)


def _stop_before(module: nn.Module, args: tuple, kwargs: dict) -> None:
    raise _StopForward(args[0] if args else kwargs["hidden_states"])


# The frozen encoder reads every chunk padded to a multiple of this many tokens. A row's hidden states
# then do not depend on the other rows of its chunk, nor on how far the chunk is padded, nor on the
# number of rows: the reductions inside attention and matmuls see whole vector lanes, with exact zeros in
# the padded ones, whatever the padded width. At the row's own odd length the last lanes are summed in
# another order (up to 0.25 apart in bfloat16 on SmolLM2). So a feature cached, replayed or rebuilt from a
# checkpoint's text is the same bits however it was batched, and a resumed run is the uninterrupted one
# (verified on CPU, float32 and bfloat16, SmolLM2-135M and the test models: tests/discriminator/test_discriminator.py
# and tests/cli/test_resume.py). 32 covers a 16-lane AVX-512 float32 vector twice over.
ENCODE_PAD_MULTIPLE = 32


def load_checkpoint_encoder(
    config: DiscriminatorConfig, checkpoint: str, device: torch.device | str
) -> FrozenEncoder:
    """A frozen encoder from any checkpoint (``discriminator.encoder``), with its own tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from gan_rl.utils.modeling import gguf_load_kwargs

    gguf = {"gguf_file": config.gguf_file} if config.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=config.trust_remote_code, **gguf)
    ensure_pad_token(tokenizer)
    with zero3_init_disabled():  # a whole copy per rank (not prepared by DeepSpeed: no gathering hooks)
        model = AutoModel.from_pretrained(
            checkpoint, trust_remote_code=config.trust_remote_code, **gguf_load_kwargs(config.gguf_file)
        ).to(device)
    model.requires_grad_(False).eval()
    hidden = model.config.get_text_config().hidden_size
    return FrozenEncoder(tokenizer, hidden, config.encoder_layer, generator_format=False, model=model)
