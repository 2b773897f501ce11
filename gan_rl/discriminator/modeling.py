"""The discriminator: tells real (prompt, response) pairs from the generator's own.

Every discriminator splits into a frozen part and a trainable part:

* ``featurize(pairs)`` runs the frozen part once per pair, without gradients, and returns one feature
  per pair (hidden states for ``head``, token ids for ``classifier``). Features of real pairs are cached.
* ``forward(batch)`` runs the trainable part on collated features and returns one logit per pair
  (positive: "real").

The reward scores fresh generations from their features and hands the same features to the sample
buffer, so a discriminator update never runs the frozen encoder again.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.errors import RecipeError
from gan_rl.types import Pair
from gan_rl.utils.backends import zero3_init_disabled
from gan_rl.utils.distributed import max_across_ranks
from gan_rl.utils.lora import lora_config
from gan_rl.utils.modeling import learned_position_limit
from gan_rl.utils.padding import ensure_pad_token, right_pad

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Frozen encoder (for the head)
# --------------------------------------------------------------------------------------------------


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
        if self.disable_adapters:
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
        raise RecipeError(
            f"discriminator.encoder_layer: {layer} is out of range for a {n_layers}-layer encoder; "
            f"valid: {-(n_layers + 1)} to {n_layers} (0: the embeddings, -1: the last layer)."
        )


class _StopForward(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


def _stop_forward(module: nn.Module, inputs: Any, output: Any) -> None:
    raise _StopForward(output[0] if isinstance(output, tuple) else output)


def _stop_before(module: nn.Module, args: tuple, kwargs: dict) -> None:
    raise _StopForward(args[0] if args else kwargs["hidden_states"])


# --------------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------------


class Discriminator(nn.Module):
    """Common interface; subclasses define ``_featurize``, ``collate`` and ``forward``."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self._real_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def collective_featurize(self) -> bool:
        """Whether :meth:`_featurize` is a collective (an encoder with sharded weights): then every rank
        calls it at the same points, even with nothing to encode, and it keeps the ranks in step."""
        return False

    def engaged(self) -> contextlib.AbstractContextManager:
        """A context for forwards and their backward: what must hold from the forward to the gradient
        (kind ``adapter``: its adapter active on the generator's base). Nothing for the other kinds."""
        return contextlib.nullcontext()

    def featurize(self, pairs: list[Pair], cache: bool = False) -> list[Any]:
        """Frozen features, one per pair (on CPU). ``cache=True`` for real pairs: they never change."""
        if not cache or self.config.cache_size == 0:
            return self._featurize(pairs) if pairs or self.collective_featurize else []
        missing = list({p.key: p for p in pairs if p.key not in self._real_cache}.values())
        computed = self._featurize(missing) if missing or self.collective_featurize else []
        for pair, feature in zip(missing, computed, strict=True):
            self._real_cache[pair.key] = feature
        out = []
        for pair in pairs:
            self._real_cache.move_to_end(pair.key)
            out.append(self._real_cache[pair.key])
        while len(self._real_cache) > self.config.cache_size:
            self._real_cache.popitem(last=False)
        return out

    def featurize_round(self, generated: list[Pair], real: list[Pair]) -> tuple[list[Any], list[Any]]:
        """Features of fresh generations and of their real counterparts, in one pass of the frozen part."""
        if self.config.cache_size == 0:
            features = self.featurize(generated + real)
            return features[: len(generated)], features[len(generated) :]
        missing = list({p.key: p for p in real if p.key not in self._real_cache}.values())
        features = self.featurize(generated + missing)
        for pair, feature in zip(missing, features[len(generated) :], strict=True):
            self._real_cache[pair.key] = feature
        return features[: len(generated)], self.featurize(real, cache=True)

    def _featurize(self, pairs: list[Pair]) -> list[Any]:
        raise NotImplementedError

    def collate(self, features: list[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, features: list[Any], batch_size: int = 64) -> torch.Tensor:
        """Logits (float32, CPU) for features, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with self.engaged():
                chunks = [
                    self(self.collate(features[i : i + batch_size])).float().cpu()
                    for i in range(0, len(features), batch_size)
                ]
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0)


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
                prompt = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
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


# The frozen encoder reads every chunk padded to a multiple of this many tokens. A row's hidden states
# then do not depend on the other rows of its chunk, nor on how far the chunk is padded, nor on the
# number of rows: the reductions inside attention and matmuls see whole vector lanes, with exact zeros in
# the padded ones, whatever the padded width. At the row's own odd length the last lanes are summed in
# another order (up to 0.25 apart in bfloat16 on SmolLM2). So a feature cached, replayed or rebuilt from a
# checkpoint's text is the same bits however it was batched, and a resumed run is the uninterrupted one
# (verified on CPU, float32 and bfloat16, SmolLM2-135M and the test models: tests/discriminator/test_discriminator.py
# and tests/cli/test_resume.py). 32 covers a 16-lane AVX-512 float32 vector twice over.
ENCODE_PAD_MULTIPLE = 32


class HeadDiscriminator(Discriminator):
    """The original design: frozen encoder states -> Transformer encoder (-> LSTM) -> linear -> logit.

    The head attends over prompt and response but pools over response tokens only (when conditional), so
    the shared prompt cannot dilute the evidence.
    """

    def __init__(
        self, config: DiscriminatorConfig, encoder: FrozenEncoder, encode_batch_size: int = 32
    ) -> None:
        super().__init__(config)
        self.encoder = encoder  # a plain object: not a submodule, not in state_dict
        self.encode_batch_size = encode_batch_size
        self.proj = nn.Linear(encoder.hidden_size, config.d_model)
        self.input_norm = nn.LayerNorm(config.d_model)
        if config.num_layers > 0:
            layer = nn.TransformerEncoderLayer(
                config.d_model,
                config.num_heads,
                dim_feedforward=4 * config.d_model,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        else:
            self.transformer = None
        self.lstm = (
            nn.LSTM(config.d_model, config.lstm_hidden, batch_first=True, bidirectional=True)
            if config.lstm
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.lstm_hidden if config.lstm else config.d_model, 1)
        self._tokens: PairTokenizer | None = None

    # -- tokenisation -------------------------------------------------------------------------------

    @property
    def tokens(self) -> PairTokenizer:
        """The pair tokenizer of the encoder (built on first use: ``encoder: generator`` binds late)."""
        if self._tokens is None or self._tokens.tokenizer is not self.encoder.tokenizer:
            self._tokens = PairTokenizer(self.config, self.encoder.tokenizer, self.encoder.generator_format)
        return self._tokens

    def _prompt_token_ids(self, pair: Pair) -> list[int]:
        return self.tokens.prompt_ids(pair)

    def _tokenize(self, pair: Pair) -> tuple[list[int], int]:
        return self.tokens(pair)

    @property
    def collective_featurize(self) -> bool:
        return self.encoder.sharded

    def _featurize(self, pairs: list[Pair]) -> list[dict[str, torch.Tensor]]:
        tokenized = [self._tokenize(p) for p in pairs]
        pad_id = self.encoder.tokenizer.pad_token_id or 0
        device = self.encoder.device
        # Encode in chunks of similar length (little padding), then restore the original order. Each
        # chunk is padded to a multiple of ENCODE_PAD_MULTIPLE tokens: see its comment.
        order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i][0]))
        out: list[dict[str, torch.Tensor]] = [None] * len(tokenized)  # type: ignore[list-item]
        if self.encoder.sharded:
            # Lockstep by construction: each forward is a collective (ZeRO-3, FSDP), and how many chunks a
            # rank has depends on its own data (e.g. its misses in the real-feature cache). Every rank runs
            # as many forwards as the busiest one; the extra ones encode a one-token dummy and are dropped.
            # A real chunk is encoded exactly as without them, so features keep their bits.
            mine = -(-len(order) // self.encode_batch_size)
            for _ in range(max_across_ranks(mine) - mine):
                self._encode_dummy(pad_id, device)
        for start in range(0, len(order), self.encode_batch_size):
            index = order[start : start + self.encode_batch_size]
            chunk = [tokenized[i] for i in index]
            multiple = ENCODE_PAD_MULTIPLE
            limit = self.encoder.position_limit
            if limit is not None and -(-len(chunk[-1][0]) // multiple) * multiple > limit:
                multiple = 1  # the table ends first: as wide as the longest pair (sorted: the last)
            input_ids, attention = right_pad([ids for ids, _ in chunk], pad_id, multiple)
            hidden = self.encoder(input_ids.to(device), attention.to(device)).cpu()
            for i, (ids, n_prompt) in enumerate(chunk):
                response_mask = torch.zeros(len(ids), dtype=torch.bool)
                response_mask[n_prompt:] = True
                out[index[i]] = {"hidden": hidden[i, : len(ids)].clone(), "response_mask": response_mask}
        return out

    def _encode_dummy(self, pad_id: int, device: torch.device) -> None:
        """One encoder forward whose result is dropped: a rank's share of a collective it has no data for."""
        tok = self.encoder.tokenizer
        start = next((t for t in (tok.bos_token_id, tok.eos_token_id, pad_id) if t is not None), 0)
        limit = self.encoder.position_limit
        multiple = min(ENCODE_PAD_MULTIPLE, limit) if limit is not None else ENCODE_PAD_MULTIPLE
        input_ids, attention = right_pad([[start]], pad_id, multiple)
        self.encoder(input_ids.to(device), attention.to(device))

    # -- trainable part -----------------------------------------------------------------------------

    def collate(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(f["hidden"].shape[0] for f in features)
        batch = len(features)
        hidden = torch.zeros(batch, length, self.encoder.hidden_size)
        valid = torch.zeros(batch, length, dtype=torch.bool)
        pool = torch.zeros(batch, length, dtype=torch.bool)
        for i, f in enumerate(features):
            n = f["hidden"].shape[0]
            hidden[i, :n] = f["hidden"].float()
            valid[i, :n] = True
            # An empty response has nothing to pool over: fall back to the whole sequence.
            pool[i, :n] = f["response_mask"] if f["response_mask"].any() else True
        device = self.device
        return {"hidden": hidden.to(device), "valid": valid.to(device), "pool": pool.to(device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.input_norm(self.proj(batch["hidden"]))
        valid = batch["valid"]
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=~valid)
        if self.lstm is not None:
            lengths = valid.sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=valid.shape[1])
        pool = batch["pool"].unsqueeze(-1).to(x.dtype)
        pooled = (x * pool).sum(dim=1) / pool.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled)).squeeze(-1)


class ClassifierDiscriminator(Discriminator):
    """A separate sequence-classification model (num_labels=1) with its own tokenizer, optionally LoRA."""

    def __init__(
        self, config: DiscriminatorConfig, checkpoint: str, dtype: torch.dtype = torch.float32
    ) -> None:
        # float32 by default: it is trained with AdamW from a fresh score head, and bf16 weights would
        # round most updates away.
        super().__init__(config)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from gan_rl.utils.modeling import gguf_load_kwargs

        gguf = {"gguf_file": config.gguf_file} if config.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(
            checkpoint, trust_remote_code=config.trust_remote_code, **gguf
        )
        ensure_pad_token(self.tokenizer)
        self.tokenizer.padding_side = "right"
        # Whole on every rank, also under ZeRO-3: the discriminator is trained by DiscriminatorTrainer
        # (gradients all-reduced), not by DeepSpeed, so its weights must not be partitioned by zero.Init.
        with zero3_init_disabled():
            model = AutoModelForSequenceClassification.from_pretrained(
                checkpoint,
                num_labels=1,
                dtype=dtype,
                trust_remote_code=config.trust_remote_code,
                **gguf_load_kwargs(config.gguf_file),
            )
        model.config.pad_token_id = self.tokenizer.pad_token_id
        if config.lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(config.lora, "SEQ_CLS"))
        self.model = model

    def _featurize(self, pairs: list[Pair]) -> list[torch.Tensor]:
        prompts = [p.prompt_text for p in pairs] if self.config.conditional else None
        end = self.tokenizer.eos_token if self.config.mark_end else None
        responses = [p.response + end if end and p.ended else p.response for p in pairs]
        enc = self.tokenizer(
            prompts if prompts is not None else responses,
            responses if prompts is not None else None,
            truncation=True,  # longest_first: a long response cannot push the pair past max_length
            max_length=self.config.max_length,
        )
        return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def collate(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, attention = right_pad(features, self.tokenizer.pad_token_id)
        device = self.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).logits[:, 0].float()


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


def build_discriminator(
    config: DiscriminatorConfig,
    *,
    encoder: FrozenEncoder | None = None,
    checkpoint: str | None = None,
    tokenizer: Any = None,
    hidden_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Discriminator:
    """The discriminator a config describes, on ``device``, seeded by ``config.seed``.

    ``encoder`` for kind ``head``; ``checkpoint`` (resolved: a local path or hub id) for ``classifier``;
    the generator's ``tokenizer`` and ``hidden_size`` for ``adapter`` (bound to the generator later).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.kind == "head":
            if encoder is None:
                raise ValueError("kind 'head' needs a FrozenEncoder.")
            disc: Discriminator = HeadDiscriminator(config, encoder, config.encode_batch_size)
        elif config.kind == "adapter":
            if tokenizer is None or hidden_size is None:
                raise ValueError("kind 'adapter' needs the generator's tokenizer and hidden size.")
            disc = AdapterDiscriminator(config, tokenizer, hidden_size)
        else:
            disc = ClassifierDiscriminator(config, checkpoint or str(config.model))
    return disc.to(device)


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
