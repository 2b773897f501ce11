"""``gan-rl gumbel``: RLGAF's differentiable path, back-propagating the discriminator through relaxed tokens.

The policy-gradient commands (``ppo``, ``reinforce``) treat the discriminator as a black-box reward. Here
the generator's sampled tokens are replaced by Gumbel-softmax vectors
``y_t = softmax((logits_t / temperature + g_t) / tau)`` (``g_t`` Gumbel noise), fed back into the
generator as ``inputs_embeds = y_t @ E`` for ``max_completion_length`` steps, and read by the
discriminator the same way (its encoder's embedding matrix times ``y_t``), so the discriminator's logit is
a differentiable function of the generator's weights. The generator minimises the non-saturating loss
``-log D(G(x))`` (or the negative of the recipe's reward form), optionally with a KL to the reference
model, an entropy bonus and the SFT term.

The argmax of ``logits_t / temperature + g_t`` is an exact sample of the generator's distribution: these
*hard* samples, decoded to text, are what the discriminator trains on, through the same
:class:`~gan_rl.trainer.reward.DiscriminatorReward`, sample buffer and :class:`~gan_rl.trainer.callback.DiscriminatorCallback`
as ``ppo``; there is no second discriminator trainer. With ``straight_through`` the generator and the
discriminator see the hard one-hot vectors in the forward pass and the soft ones' gradient.

Built on transformers' :class:`~transformers.Trainer` (a ``compute_loss``), so checkpoints, resume,
accelerate, LoRA, logging and plots are those of the other commands. Memory grows with
``max_completion_length``: every step's activations are kept for the backward pass.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.classifier import ClassifierDiscriminator
from gan_rl.discriminator.head import HeadDiscriminator
from gan_rl.errors import InputError, TrainingError
from gan_rl.gumbel.config import GumbelConfig
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.sft_term import RealResponseLoss, RealResponseLossMixin
from gan_rl.trainer.trl_internals import TRLMetricsMixin, metric_logger, set_prompts_per_batch
from gan_rl.types import PROMPT_TEXT, REAL_RESPONSE, Pair
from gan_rl.utils.generation import end_token_ids, tokenize_prompts

# --------------------------------------------------------------------------------------------------
# Relaxed generation
# --------------------------------------------------------------------------------------------------


@dataclass
class RelaxedSamples:
    """T steps of relaxed generation for a batch of B prompts (V: the vocabulary)."""

    soft: torch.Tensor  # (B, T, V): what the generator and the discriminator read (soft or straight-through)
    hard: torch.Tensor  # (B, T): the Gumbel-max samples, exact samples of softmax(logits / temperature)
    log_probs: torch.Tensor  # (B, T, V): the generator's log-probabilities (logits / temperature)
    valid: torch.Tensor  # (B, T) bool: up to and including the first end token
    ended: torch.Tensor  # (B,) bool: an end token came before max_completion_length


def soft_embed(embedding: nn.Module, weights: torch.Tensor) -> torch.Tensor:
    """``weights @ E``: the embedding layer applied to distributions over the vocabulary (a one-hot vector
    gives the token's own embedding, scaled as the layer scales it, e.g. Gemma's ``embed_scale``)."""
    matrix = embedding.weight
    out = weights.to(matrix.dtype) @ matrix
    scale = getattr(embedding, "embed_scale", None)
    return out * scale.to(out.dtype) if isinstance(scale, torch.Tensor) else out * (scale or 1.0)


def gumbel_softmax(
    logits: torch.Tensor, tau: float, straight_through: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(relaxed vector, hard sample) for logits (B, V): softmax((logits + g) / tau) and argmax(logits + g)."""
    gumbel = -torch.empty_like(logits).exponential_().log()
    scores = logits + gumbel
    soft = torch.softmax(scores / tau, dim=-1)
    hard = scores.argmax(dim=-1)
    if straight_through:
        one_hot = F.one_hot(hard, soft.shape[-1]).to(soft.dtype)
        soft = one_hot - soft.detach() + soft
    return soft, hard


def cache_keyword(model: nn.Module) -> str:
    """The keyword under which the model takes its key/value cache (``cache`` since transformers 5.2x,
    ``past_key_values`` before), read once per generation, not per token."""
    import inspect

    # The transformers model itself: DDP's and PEFT's wrappers take **kwargs.
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    forward = getattr(inner, "forward", inner)
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The key/value cache a forward returned, under either name."""
    value = getattr(out, "cache", None)
    return value if value is not None else out.past_key_values


def relaxed_generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    steps: int,
    tau: float,
    temperature: float,
    straight_through: bool,
    end_ids: set[int],
    use_cache: bool = True,
) -> RelaxedSamples:
    """Generate ``steps`` relaxed tokens after left-padded prompts, differentiably.

    Each step feeds the previous relaxed vector back as ``inputs_embeds = y @ E``. With ``use_cache`` the
    keys and values of earlier steps are reused (they keep their autograd history); without it (gradient
    checkpointing) every step runs the whole sequence again.
    """
    embedding = model.get_input_embeddings()
    embeds = embedding(prompt_ids)
    mask = prompt_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    inputs: dict[str, Any] = {"inputs_embeds": embeds, "position_ids": positions}
    cache_name = cache_keyword(model) if use_cache else ""
    soft_steps, hard_steps, logp_steps = [], [], []
    for t in range(steps):
        out = model(**inputs, attention_mask=mask, use_cache=use_cache, logits_to_keep=1)
        logits = out.logits[:, -1, :].float() / temperature
        logp_steps.append(torch.log_softmax(logits, dim=-1))
        soft, hard = gumbel_softmax(logits, tau, straight_through)
        soft_steps.append(soft)
        hard_steps.append(hard)
        if t == steps - 1:
            break
        step_embed = soft_embed(embedding, soft).unsqueeze(1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = positions[:, -1:] + 1
        if use_cache:  # the new token only, after the cached keys and values
            inputs = {"inputs_embeds": step_embed, "position_ids": positions, cache_name: output_cache(out)}
        else:  # the whole sequence again
            embeds = torch.cat([embeds, step_embed], dim=1)
            inputs = {"inputs_embeds": embeds, "position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}
    hard = torch.stack(hard_steps, dim=1)
    is_end = torch.zeros_like(hard, dtype=torch.bool)
    for end in end_ids:
        is_end |= hard == end
    # Valid: no end token strictly before the position (the end token itself is the policy's choice).
    before = torch.cumsum(is_end.long(), dim=1) - is_end.long()
    return RelaxedSamples(
        soft=torch.stack(soft_steps, dim=1),
        hard=hard,
        log_probs=torch.stack(logp_steps, dim=1),
        valid=before == 0,
        ended=is_end.any(dim=1),
    )


# --------------------------------------------------------------------------------------------------
# The discriminator on relaxed tokens
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode with no parameter requiring gradients, restored afterwards: the generator's
    loss flows *through* the discriminator but never trains it (that is the callback's job)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    was_training = module.training
    module.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        module.train(was_training)


def same_vocabulary(tokenizer_a: Any, tokenizer_b: Any) -> bool:
    """Whether two tokenizers map the same strings to the same ids (a relaxed token is a distribution over
    ids, so the discriminator must read ids as the generator writes them)."""
    return tokenizer_a is tokenizer_b or tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


class RelaxedDiscriminator:
    """The discriminator's logit for relaxed responses, differentiable in them.

    ``head``: the prompt's tokens and the relaxed response go through the head's frozen encoder as
    ``inputs_embeds`` (the encoder's own embedding matrix times each vector), then through the head as in
    :meth:`HeadDiscriminator.forward`. ``classifier``: the same through the classifier's input embeddings.
    Prompts are encoded and truncated as the discriminator encodes hard samples.
    """

    def __init__(self, discriminator: Discriminator, generator_tokenizer: Any, vocab_size: int) -> None:
        self.discriminator = discriminator
        if isinstance(discriminator, HeadDiscriminator):
            encoder = discriminator.encoder
            # encoder: generator is bound later, to the generator itself: the same vocabulary by construction.
            matrix = encoder.embedding_matrix() if encoder.model is not None else None
            self._check(encoder.tokenizer, matrix, "encoder", generator_tokenizer, vocab_size)
        elif isinstance(discriminator, ClassifierDiscriminator):
            matrix = discriminator.model.get_input_embeddings().weight
            self._check(discriminator.tokenizer, matrix, "model", generator_tokenizer, vocab_size)
        elif discriminator.config.kind == "adapter":
            raise InputError(
                "{discriminator}.kind: 'adapter' is not supported by {gumbel} (its relaxed tokens would "
                "back-propagate through the generator's own weights twice); use kind 'head' or 'classifier'."
            )
        else:
            raise TypeError(f"gan-rl gumbel cannot read relaxed tokens with {type(discriminator).__name__}")

    @staticmethod
    def _check(
        tokenizer: Any, matrix: torch.Tensor | None, field_: str, generator_tokenizer: Any, vocab_size: int
    ) -> None:
        if not same_vocabulary(tokenizer, generator_tokenizer):
            raise InputError(
                "{discriminator}.{field}: {gumbel} feeds the generator's relaxed tokens (distributions over "
                "its {ids} token ids) to the discriminator, whose tokenizer has another vocabulary ({theirs} "
                "tokens); use a discriminator that shares the generator's tokenizer (for kind 'head': "
                "encoder: generator).",
                field=field_,
                ids=len(generator_tokenizer),
                theirs=len(tokenizer),
            )
        if matrix is not None and matrix.shape[0] != vocab_size:
            raise InputError(
                "{discriminator}.{field}: its embedding matrix has {rows} rows, the generator's vocabulary "
                "{vocab}; {gumbel} needs the same token ids on both sides.",
                field=field_,
                rows=matrix.shape[0],
                vocab=vocab_size,
            )

    def _frame(self, pair: Pair) -> tuple[list[int], list[int]]:
        """The token ids the discriminator reads before and after the response, from its own tokenization:
        the head's pair tokenizer (the prompt as the generator saw it), the classifier's text-pair frame."""
        disc = self.discriminator
        if isinstance(disc, HeadDiscriminator):
            return disc.tokens.prompt_ids(pair), []
        return disc.response_frame(pair)

    def _embedding(self) -> nn.Module:
        disc = self.discriminator
        if isinstance(disc, HeadDiscriminator):
            return disc.encoder.model.get_input_embeddings()
        return disc.model.get_input_embeddings()

    def __call__(self, pairs: list[Pair], samples: RelaxedSamples) -> torch.Tensor:
        """One logit per pair (positive: real) for its relaxed response, with gradients to ``samples.soft``."""
        disc = self.discriminator
        embedding = self._embedding()
        device = embedding.weight.device
        max_len = disc.config.max_length
        rows, response_starts = [], []
        for i, pair in enumerate(pairs):
            prompt_ids, after = self._frame(pair)
            prompt_ids = prompt_ids[-(max_len // 2) :] if len(prompt_ids) > max_len // 2 else prompt_ids
            n = int(samples.valid[i].sum())
            if not (disc.config.mark_end and bool(samples.ended[i])):
                n -= int(bool(samples.ended[i]))  # the end token, unless the discriminator reads it
            n = max(min(n, max_len - len(prompt_ids) - len(after)), 0)
            parts = []
            if prompt_ids:
                parts.append(embedding(torch.tensor(prompt_ids, device=device)))
            if n:
                parts.append(soft_embed(embedding, samples.soft[i, :n].to(device)))
            if after:
                parts.append(embedding(torch.tensor(after, device=device)))
            if not parts:  # nothing to read: one end token, as the hard path does
                parts.append(embedding(torch.tensor([pair_start_token(disc)], device=device)))
            rows.append(torch.cat(parts))
            response_starts.append(len(prompt_ids))
        length = max(r.shape[0] for r in rows)
        hidden_size = rows[0].shape[-1]
        batch = len(rows)
        embeds = rows[0].new_zeros(batch, length, hidden_size)
        valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
        if isinstance(disc, ClassifierDiscriminator):  # left padding: the classifier reads the last position
            for i, r in enumerate(rows):
                embeds[i, length - r.shape[0] :] = r
                valid[i, length - r.shape[0] :] = True
            positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
            with frozen(disc):
                out = disc.model(inputs_embeds=embeds, attention_mask=valid.long(), position_ids=positions)
            return out.logits[:, 0].float()
        pool = torch.zeros_like(valid)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]] = r
            valid[i, : r.shape[0]] = True
            start = response_starts[i] if response_starts[i] < r.shape[0] else 0  # empty: pool over all
            pool[i, start : r.shape[0]] = True
        hidden = disc.encoder.forward_embeds(embeds, valid.long())
        with frozen(disc):
            return disc({"hidden": hidden.float().to(disc.device), "valid": valid, "pool": pool}).float()


def pair_start_token(disc: Discriminator) -> int:
    """The token a sequence with nothing to read is given (as :meth:`HeadDiscriminator._tokenize` does)."""
    tok = disc.encoder.tokenizer if isinstance(disc, HeadDiscriminator) else disc.tokenizer
    for candidate in (tok.eos_token_id, tok.pad_token_id):
        if candidate is not None:
            return candidate
    return 0


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


def keep_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The data collator: the dataset's rows as they are (text columns; the loss tokenizes them)."""
    return {"rows": rows}


class RelaxedTokensTrainer(TRLMetricsMixin, Trainer):
    """transformers' Trainer whose loss is the discriminator's verdict on relaxed generations.

    The constructor takes the arguments of TRL's GRPOTrainer/RLOOTrainer that :func:`gan_rl.cli.train.run`
    passes (``reward_funcs`` holds the one :class:`DiscriminatorReward`; ``peft_config`` wraps the model in
    LoRA), so the run builds it like any registered trainer. Like TRL's trainers it keeps their metric store
    (:class:`gan_rl.trainer.trl_internals.TRLMetricsMixin`), averaged and cleared at every log.
    """

    def __init__(
        self,
        model: nn.Module,
        reward_funcs: list[DiscriminatorReward],
        args: GumbelConfig,
        train_dataset: Any,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        if len(reward_funcs) != 1 or not isinstance(reward_funcs[0], DiscriminatorReward):
            raise TypeError("GumbelTrainer needs exactly one DiscriminatorReward in reward_funcs.")
        if reward_funcs[0].config.length_coef > 0:
            raise ValueError(
                "GumbelTrainer: reward length_coef must be 0 (a count of words has no gradient to follow)."
            )
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        # The KL reference: the generator with its adapters switched off (LoRA), else a frozen copy.
        ref_model = None
        if args.beta > 0 and not is_peft:
            ref_model = copy.deepcopy(model).requires_grad_(False).eval()
        super().__init__(
            model=model,
            args=args,
            data_collator=keep_rows,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.ref_model = ref_model.to(self.args.device) if ref_model is not None else None
        self.reward = reward_funcs[0]
        self.reward_funcs = list(reward_funcs)
        self.relaxed_discriminator = RelaxedDiscriminator(
            self.reward.discriminator, processing_class, model.get_output_embeddings().weight.shape[0]
        )
        self.init_trl_metrics()
        # The data loader yields prompts; each is sampled num_generations times.
        set_prompts_per_batch(self, args.per_device_train_batch_size // args.num_generations)
        tok = processing_class
        self.end_ids = end_token_ids(tok)
        self.chat_template_kwargs = dict(args.chat_template_kwargs or {})
        # The warm-up and the summary's samples (DiscriminatorCallback.attach) sample as the policy does.
        self.generation_kwargs = {
            "max_new_tokens": args.max_completion_length,
            "temperature": args.temperature,
            "top_k": 0,
            "top_p": 1.0,
            "eos_token_id": sorted(self.end_ids) or None,
        }

    # -- the loss -----------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        args: GumbelConfig = self.args
        rows = [row for row in inputs["rows"] for _ in range(args.num_generations)]
        enc = tokenize_prompts(self.processing_class, [r["prompt"] for r in rows], self.chat_template_kwargs)
        device = next(model.parameters()).device
        tau = args.tau(self.state.global_step)
        checkpointing = bool(
            getattr(self.accelerator.unwrap_model(model), "is_gradient_checkpointing", False)
        )
        samples = relaxed_generate(
            model,
            enc["input_ids"].to(device),
            enc["attention_mask"].to(device),
            args.max_completion_length,
            tau,
            args.temperature,
            args.straight_through,
            self.end_ids,
            use_cache=not (checkpointing and model.training),
        )
        pairs = [Pair(r["prompt"], r[PROMPT_TEXT], r[REAL_RESPONSE]) for r in rows]
        logits = self.relaxed_discriminator(pairs, samples)
        if args.loss == "non_saturating":
            adversarial = F.softplus(-logits).mean()  # -log D(G(x))
        else:
            adversarial = -self.reward.shape(logits).mean()
        valid = samples.valid.float()
        n_valid = valid.sum().clamp(min=1.0)
        probs = samples.log_probs.exp()
        entropy = (-(probs * samples.log_probs).sum(-1) * valid).sum() / n_valid
        loss = adversarial - args.entropy_coef * entropy
        mode = "train" if model.training else "eval"
        log = metric_logger(self, mode)
        if args.beta > 0:
            kl = (self._token_kl(model, enc, samples, device) * valid).sum() / n_valid
            loss = loss + args.beta * kl
            log("kl", self.accelerator.gather(kl.detach().reshape(1)).mean().item())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"step {self.state.global_step}: the gumbel generator loss is {loss.item()} (not finite; "
                f"adversarial {adversarial.item()}, entropy {entropy.item()}); likely cause: "
                "trainer.learning_rate too high or tau too low; earlier checkpoints are untouched."
            )
        # The hard samples, as text: scored and recorded for the discriminator's next round as in ppo.
        rewards = self._score_hard(rows, samples)
        for name, value in (
            ("reward", float(sum(rewards) / len(rewards))),
            ("gumbel/adversarial_loss", adversarial.item()),
            ("gumbel/prob_real_relaxed", torch.sigmoid(logits).mean().item()),
            ("gumbel/tau", tau),
            ("entropy", entropy.item()),
            ("completions/mean_length", samples.valid.sum(1).float().mean().item()),
        ):
            log(name, value)
        return (loss, {"logits": logits.detach()}) if return_outputs else loss

    def _token_kl(
        self, model: nn.Module, enc: Any, samples: RelaxedSamples, device: torch.device
    ) -> torch.Tensor:
        """KL(policy || reference) at each generated position (B, T), the reference reading the same
        prompt and relaxed tokens (without gradients)."""
        unwrapped = self.accelerator.unwrap_model(model)
        ref = self.ref_model if self.ref_model is not None else unwrapped
        adapters_off = ref.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        steps = samples.soft.shape[1]
        with torch.no_grad(), adapters_off:
            embedding = ref.get_input_embeddings()
            prompt = embedding(enc["input_ids"].to(device))
            embeds = torch.cat([prompt, soft_embed(embedding, samples.soft[:, :-1].detach())], dim=1)
            mask = torch.cat(
                [
                    enc["attention_mask"].to(device),
                    enc["attention_mask"].new_ones(prompt.shape[0], steps - 1).to(device),
                ],
                dim=1,
            )
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            out = ref(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
            ref_logp = torch.log_softmax(out.logits[:, -steps:].float() / self.args.temperature, dim=-1)
        logp = samples.log_probs
        return (logp.exp() * (logp - ref_logp)).sum(-1)

    def _score_hard(self, rows: list[dict[str, Any]], samples: RelaxedSamples) -> list[float]:
        """The discriminator's reward for the hard samples (decoded text), which also hands them (with their
        real counterparts) to the sample buffer while training: the discriminator trains on real tokens."""
        tok = self.processing_class
        ids = [
            [int(t) for t, v in zip(row, valid, strict=True) if v]
            for row, valid in zip(samples.hard.tolist(), samples.valid.tolist(), strict=True)
        ]
        texts = tok.batch_decode(ids, skip_special_tokens=True)
        return self.reward(
            prompts=[r["prompt"] for r in rows],
            completions=texts,
            completion_ids=ids,
            log_metric=metric_logger(self),
            **{PROMPT_TEXT: [r[PROMPT_TEXT] for r in rows], REAL_RESPONSE: [r[REAL_RESPONSE] for r in rows]},
        )

    # -- evaluation and logging ---------------------------------------------------------------------

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, None, None]:
        """The evaluation loss: the same relaxed generation and verdict, without gradients (the reward does
        not record evaluation samples: the policy is in eval mode)."""
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


class GumbelTrainer(RealResponseLossMixin, RelaxedTokensTrainer):
    """``gan-rl gumbel``: :class:`RelaxedTokensTrainer` plus ``real_response_loss`` x its coefficient (the
    SFT term wraps the relaxed-token loss, as it wraps GRPO's and RLOO's)."""

    def __init__(self, *args: Any, real_response_loss: RealResponseLoss | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.real_response_loss = real_response_loss
