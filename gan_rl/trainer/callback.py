"""The TRL/transformers callback that retrains the discriminator between policy updates.

It decides *when* (warm-up before the first policy update, then a round every ``update_every`` policy
updates with fresh samples), logs the round's statistics into the trainer's logs, and saves/restores
the discriminator with every trainer checkpoint. *How* a round trains lives in :mod:`gan_rl.discriminator.trainer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import RecipeError, TrainingError, first_non_finite
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.trl_internals import metric_logger
from gan_rl.types import Pair
from gan_rl.utils.backends import sampling_model, sampling_settings
from gan_rl.utils.distributed import all_gather_objects, gather_to_main, rank, world_size
from gan_rl.utils.generation import sample_completions

logger = logging.getLogger(__name__)

DISCRIMINATOR_DIR = "discriminator"
# Written first, renamed to DISCRIMINATOR_DIR when complete: a checkpoint's discriminator/ is whole or absent.
PARTIAL_SUFFIX = ".partial"
# Logged values that must stay finite; anything else (e.g. TRL's clip ratios) may legitimately be NaN.
WATCHED_LOGS = ("loss", "reward")


def save_discriminator(
    directory: str | Path, trainer: DiscriminatorTrainer, reward: DiscriminatorReward
) -> Path:
    """Weights (safetensors), optimizer state and counters of the discriminator, into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(trainer.discriminator, str(directory / "model.safetensors"))
    torch.save(trainer.optimizer.state_dict(), directory / "optimizer.pt")
    state = {
        "kind": trainer.config.kind,
        "config": asdict(trainer.config),
        "trainer": trainer.state(),
        "reward": reward.state(),
        "fingerprint": trainer.fingerprint(),
    }
    (directory / "state.json").write_text(json.dumps(state, indent=2))
    return directory


def buffer_file(directory: str | Path, process: int | None = None) -> Path:
    """Every process keeps (and checkpoints) its own buffer of its own generations."""
    return Path(directory) / f"buffer.rank{rank() if process is None else process}.json"


def save_buffers(
    directory: str | Path, buffer: SampleBuffer, trainer: DiscriminatorTrainer | None = None
) -> None:
    """Every process's buffer as text, written by the main process (a collective): a resumed run
    replays the same past generations, with the same Bradley-Terry partners (``trainer``'s, per process)."""
    state = buffer.state()
    if trainer is not None:
        state["partners"] = trainer.partners_state()
    states = gather_to_main(state)
    if states is None:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    for process, state in enumerate(states):
        buffer_file(directory, process).write_text(json.dumps(state))


def load_discriminator(
    directory: str | Path,
    trainer: DiscriminatorTrainer,
    reward: DiscriminatorReward,
    buffer: SampleBuffer | None = None,
) -> None:
    """Restore what :func:`save_discriminator` wrote (tensor files are read with weights_only=True)."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    if state["kind"] != trainer.config.kind:
        raise RecipeError(
            f"--resume: {directory} holds a '{state['kind']}' discriminator, the recipe asks for "
            f"'{trainer.config.kind}'."
        )
    try:
        missing, unexpected = load_model(
            trainer.discriminator, str(directory / "model.safetensors"), strict=False
        )
    except RuntimeError as exc:  # a size mismatch: d_model, num_layers, ... changed since the checkpoint
        raise RecipeError(
            f"--resume: the discriminator in {directory} does not fit the recipe's 'discriminator' "
            f"section (was it changed since?): {str(exc).splitlines()[0]}"
        ) from None
    if missing or unexpected:
        raise RecipeError(
            f"--resume: the discriminator in {directory} does not fit the recipe's 'discriminator' section "
            f"(missing {missing}, unexpected {unexpected}); was it changed since?"
        )
    optim_state = torch.load(
        directory / "optimizer.pt", weights_only=True, map_location=trainer.discriminator.device
    )
    trainer.optimizer.load_state_dict(optim_state)
    trainer.load_state(state["trainer"])
    reward.load_state(state["reward"])
    if buffer is not None:
        # Absent: more processes than were saved, and this one starts with an empty buffer. It still
        # "loads" one (its own empty state): rebuilding features runs the frozen encoder, a collective
        # under ZeRO-3 / FSDP, and every rank must take part in each of those forwards.
        path = buffer_file(directory)
        state = json.loads(path.read_text()) if path.is_file() else buffer.state()
        buffer.load_state(state, trainer.discriminator.featurize)
        # Absent (a checkpoint from before partners were saved, or another loss): none, as before.
        trainer.load_partners(state.get("partners") or [], trainer.discriminator.featurize)


class DiscriminatorCallback(TrainerCallback):
    """Warm-up, discriminator rounds between policy updates, logging and checkpointing."""

    def __init__(
        self,
        disc_trainer: DiscriminatorTrainer,
        buffer: SampleBuffer,
        reward: DiscriminatorReward,
        warmup_prompts: list[Pair] | None = None,
        generation_kwargs: dict[str, Any] | None = None,
        resume_dir: str | Path | None = None,
        fresh_discriminator: bool = False,
    ) -> None:
        self.disc_trainer = disc_trainer
        self.buffer = buffer
        self.reward = reward
        self.config = disc_trainer.config
        self.warmup_prompts = warmup_prompts or []
        self.generation_kwargs = generation_kwargs or {}
        self.chat_template_kwargs: dict[str, Any] = {}
        self.resume_dir = Path(resume_dir) if resume_dir else None
        # Resuming from a checkpoint without a discriminator is an error unless the user asked for this.
        self.fresh_discriminator = fresh_discriminator
        self.log_metric: Callable[[str, float], None] | None = None
        # The TRL trainer (attach()): the policy is sampled as it prepared it (DeepSpeed, FSDP).
        self.trainer: Any = None
        # Run first thing in on_train_begin, when the trainer has wrapped its model (run(): the summary's
        # "before" samples under FSDP, whose weights are only sharded, and may only be loaded, then).
        self.before_training: Callable[[], None] | None = None
        self.warmup_stats: dict[str, float] = {}
        # Set when a checkpoint's discriminator was restored: where from, and its weights' fingerprint.
        self.restored: dict[str, str] = {}
        self._pending_logs: dict[str, float] = {}
        # Set by Adversary.build until Adversary.attach: raises the "not attached" error at train begin.
        self.require_attached: Callable[[], Any] | None = None

    def attach(self, trainer: Any) -> None:
        """Log into a TRL trainer's own metrics (so they reach every ``report_to`` backend) and sample
        warm-up responses exactly as the trainer samples completions."""
        self.trainer = trainer
        self.log_metric = metric_logger(trainer)
        # TRL's own sampling settings; with vLLM (where TRL has none for generate) the same ones rebuilt
        # from the trainer's temperature, top_p, top_k, ... and generation_kwargs.
        self.generation_kwargs = sampling_settings(trainer, trainer.processing_class)
        self.chat_template_kwargs = dict(getattr(trainer, "chat_template_kwargs", None) or {})

    def _record(self, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            if self.log_metric is not None:
                self.log_metric(name, value)
            else:
                self._pending_logs[name] = value

    # -- warm-up ------------------------------------------------------------------------------------

    def generate(self, model: Any, tokenizer: Any, pairs: list[Pair], batch_size: int = 16) -> list[str]:
        """Sample one response per prompt from the current policy (as TRL would, with its settings)."""
        return [pair.response for pair in self.sample(model, tokenizer, pairs, batch_size)]

    def sample(self, model: Any, tokenizer: Any, pairs: list[Pair], batch_size: int = 16) -> list[Pair]:
        """:meth:`generate` as pairs: each prompt with its sampled response, and whether it ended (an end
        token before ``max_new_tokens``)."""
        settings = {"do_sample": True, "pad_token_id": tokenizer.pad_token_id, **self.generation_kwargs}
        completions = sample_completions(
            model, tokenizer, [p.prompt for p in pairs], batch_size, settings, self.chat_template_kwargs
        )
        return [
            Pair(p.prompt, p.prompt_text, text, ended)
            for p, (text, ended) in zip(pairs, completions, strict=True)
        ]

    @contextlib.contextmanager
    def policy(self, model: Any = None) -> Iterator[Any]:
        """The policy to sample from on this rank: through the attached trainer as TRL's own generation
        gets it (:func:`gan_rl.utils.backends.sampling_model`: ZeRO-3 shards gathered, FSDP v1 summoned), else
        ``model`` as given. Every rank enters it together."""
        if self.trainer is None:
            yield model
            return
        with sampling_model(self.trainer) as unwrapped:
            yield unwrapped

    def generate_across_ranks(self, tokenizer: Any, pairs: list[Pair], model: Any = None) -> list[str]:
        """One response per prompt, sampled by every rank together, the texts on every rank in order.

        Rank r samples prompts r, r + W, ... (W ranks), its share topped up with repeats of the first
        prompt to the largest share: every rank then calls ``generate`` equally often (a generate step is a
        collective under ZeRO-3 and FSDP); the repeats' texts are dropped. A collective.
        """
        world, me = world_size(), rank()
        share = pairs[me::world]
        padded = share + pairs[:1] * (-(-len(pairs) // world) - len(share))
        with self.policy(model) as policy:
            texts = self.generate(policy, tokenizer, padded)[: len(share)] if padded else []
        out: list[str] = [""] * len(pairs)
        for process, theirs in enumerate(all_gather_objects(texts)):
            out[process::world] = theirs
        return out

    def warmup(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """Train the discriminator on the initial policy's samples before the first policy update."""
        cfg = self.config
        if cfg.warmup_samples == 0 or cfg.warmup_updates == 0 or not self.warmup_prompts:
            return {}
        rng = random.Random(f"warmup/{cfg.seed}/{rank()}")
        prompts = [rng.choice(self.warmup_prompts) for _ in range(cfg.warmup_samples)]
        with self.policy(model) as policy:  # every rank samples warmup_samples: as many generate calls
            generated_pairs = self.sample(policy, tokenizer, prompts)
        disc = self.disc_trainer.discriminator
        real_pairs = list({p.key: p for p in prompts}.values())
        generated, real = disc.featurize_round(generated_pairs, real_pairs)
        self.buffer.add(generated, real, generated_pairs, real_pairs)
        stats = self.disc_trainer.train_round(self.buffer, cfg.warmup_updates)
        return stats.as_logs("disc/warmup_") if stats else {}

    # -- TrainerCallback hooks ----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.require_attached is not None:
            self.require_attached()
        if self.before_training is not None:
            self.before_training()
        resume = self.resume_dir
        if resume is None and state.global_step > 0:
            resume = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if resume is not None and state.global_step > 0:
            directory = Path(resume) / DISCRIMINATOR_DIR
            if (directory / "state.json").is_file():
                load_discriminator(directory, self.disc_trainer, self.reward, self.buffer)
                self.restored = {"path": str(directory), "fingerprint": self.disc_trainer.fingerprint()}
                logger.info(
                    "Restored the discriminator from %s (round %d).", directory, self.disc_trainer.rounds
                )
                return
            if not self.fresh_discriminator:
                raise RecipeError(
                    f"--resume: {resume} has no complete {DISCRIMINATOR_DIR}/; pass --fresh-discriminator to "
                    "continue it with a new discriminator trained from a warm-up."
                )
            logger.warning("%s has no discriminator; training a fresh one from a warm-up.", resume)
        self.warmup_stats = self.warmup(model, processing_class)
        self._record(self.warmup_stats)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.config.update_every != 0:
            return
        stats = self.disc_trainer.train_round(self.buffer, self.config.updates_per_round)
        if stats is None:
            return
        # Every rank must hold the same discriminator after every round.
        if world_size() > 1 and not self.disc_trainer.in_sync():
            raise RuntimeError(
                f"discriminator weights diverged across processes after round {self.disc_trainer.rounds}: "
                f"{self.disc_trainer.gather_fingerprints()}"
            )
        self._record({**stats.as_logs(), "disc/rounds": float(self.disc_trainer.rounds)})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:  # the policy's loss and reward (means over every process: all ranks agree)
            watched = [(k, float(v)) for k, v in logs.items() if k in WATCHED_LOGS or k.startswith("disc/")]
            bad = first_non_finite(watched)
            if bad is not None:
                raise TrainingError(
                    f"step {state.global_step}: logged {bad[0]} is {bad[1]} (not finite); likely cause: "
                    "trainer.learning_rate too high or a non-finite reward; earlier checkpoints are untouched."
                )
        if logs is not None and self._pending_logs:  # only without a TRL trainer to log through
            logs.update(self._pending_logs)
            self._pending_logs = {}

    def on_save(self, args, state, control, **kwargs):
        """After TRL's own files: the discriminator, written aside and renamed into place when whole, so
        a kill part-way leaves a checkpoint without ``discriminator/`` (incomplete), never a partial one."""
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        staging = checkpoint / f"{DISCRIMINATOR_DIR}{PARTIAL_SUFFIX}"
        save_buffers(staging, self.buffer, self.disc_trainer)
        if state.is_world_process_zero:
            save_discriminator(staging, self.disc_trainer, self.reward)
            final = checkpoint / DISCRIMINATOR_DIR
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
