"""The TRL/transformers callback that retrains the discriminator between policy updates.

It decides *when* (warm-up before the first policy update, then a round every ``update_every`` policy
updates with fresh samples), logs the round's statistics into the trainer's logs, and saves/restores
the discriminator with every trainer checkpoint. *How* a round trains lives in :mod:`gan_rl.discriminator.trainer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from transformers import TrainerCallback

from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import InputError, TrainingError, first_non_finite
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.trl_internals import metric_logger
from gan_rl.types import Pair
from gan_rl.utils.backends import sampling_model, sampling_settings
from gan_rl.utils.checkpoints import (
    BUFFER_GLOB,
    DISCRIMINATOR_DIR,
    DISCRIMINATOR_FILES,
    DISCRIMINATOR_OPTIMIZER,
    DISCRIMINATOR_STATE,
    DISCRIMINATOR_WEIGHTS,
    PARTIAL_SUFFIX,
    buffer_file_name,
    checkpoint_dir,
)
from gan_rl.utils.distributed import all_gather_objects, all_reduce_, gather_to_main, rank, world_size
from gan_rl.utils.files import unreadable
from gan_rl.utils.generation import sample_completions

logger = logging.getLogger(__name__)

# Logged values that must stay finite; anything else (e.g. TRL's clip ratios) may legitimately be NaN.
WATCHED_LOGS = ("loss", "reward")
# What reading a truncated or corrupt file raises: safetensors' header errors, torch's zip reader
# ("PytorchStreamReader failed reading zip archive"), a pickle cut short, a JSON file cut short.
UNREADABLE_ERRORS = (
    SafetensorError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    ValueError,
)


def save_discriminator(
    directory: str | Path, trainer: DiscriminatorTrainer, reward: DiscriminatorReward
) -> Path:
    """Weights (safetensors), optimizer state and counters of the discriminator, into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(trainer.discriminator, str(directory / DISCRIMINATOR_WEIGHTS))
    torch.save(trainer.optimizer.state_dict(), directory / DISCRIMINATOR_OPTIMIZER)
    state = {
        "kind": trainer.config.kind,
        "config": asdict(trainer.config),
        "trainer": trainer.state(),
        "reward": reward.state(),
        "fingerprint": trainer.fingerprint(),
    }
    (directory / DISCRIMINATOR_STATE).write_text(json.dumps(state, indent=2))
    return directory


def buffer_file(directory: str | Path, process: int | None = None) -> Path:
    """Every process keeps (and checkpoints) its own buffer of its own generations."""
    return Path(directory) / buffer_file_name(rank() if process is None else process)


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


def discriminator_files(directory: str | Path) -> list[Path]:
    """The files :func:`load_discriminator` reads from ``directory`` (each sample buffer present)."""
    directory = Path(directory)
    return [directory / name for name in DISCRIMINATOR_FILES] + sorted(directory.glob(BUFFER_GLOB))


def _unreadable_error(path: Path, exc: BaseException) -> InputError:
    """A checkpoint file of the discriminator that its loader could not read, as one line saying what to do
    (the readability check of :func:`gan_rl.cli.outputs.resolve_resume` normally catches it first)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(
        "{resume}: {path} cannot be read ({reason}); resume from an earlier checkpoint ({resume_earlier}), "
        "or pass {fresh_discriminator} to go on with a new discriminator.",
        path=path,
        reason=reason,
    )


def load_discriminator(
    directory: str | Path,
    trainer: DiscriminatorTrainer,
    reward: DiscriminatorReward,
    buffer: SampleBuffer | None = None,
) -> None:
    """Restore what :func:`save_discriminator` wrote (tensor files are read with weights_only=True). A file
    that cannot be read (truncated, corrupt) is an :class:`InputError` naming it."""
    directory = Path(directory)
    state_file = directory / DISCRIMINATOR_STATE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        raise _unreadable_error(state_file, exc) from None
    if state["kind"] != trainer.config.kind:
        raise InputError(
            "{resume}: {directory} holds a '{held}' discriminator, {discriminator_config} asks for '{kind}'.",
            directory=directory,
            held=state["kind"],
            kind=trainer.config.kind,
        )
    weights = directory / DISCRIMINATOR_WEIGHTS
    try:
        missing, unexpected = load_model(trainer.discriminator, str(weights), strict=False)
    except (SafetensorError, OSError) as exc:
        raise _unreadable_error(weights, exc) from None
    except RuntimeError as exc:  # a size mismatch: d_model, num_layers, ... changed since the checkpoint
        raise InputError(
            "{resume}: the discriminator in {directory} does not fit {discriminator_config} (was it changed "
            "since?): {reason}",
            directory=directory,
            reason=str(exc).splitlines()[0],
        ) from None
    if missing or unexpected:
        raise InputError(
            "{resume}: the discriminator in {directory} does not fit {discriminator_config} (missing "
            "{missing}, unexpected {unexpected}); was it changed since?",
            directory=directory,
            missing=missing,
            unexpected=unexpected,
        )
    optimizer_file = directory / DISCRIMINATOR_OPTIMIZER
    try:
        optim_state = torch.load(optimizer_file, weights_only=True, map_location=trainer.discriminator.device)
    except (OSError, *UNREADABLE_ERRORS) as exc:
        raise _unreadable_error(optimizer_file, exc) from None
    trainer.optimizer.load_state_dict(optim_state)
    trainer.load_state(state["trainer"])
    reward.load_state(state["reward"])
    if buffer is not None:
        # Absent: more processes than were saved, and this one starts with an empty buffer. It still
        # "loads" one (its own empty state): rebuilding features runs the frozen encoder, a collective
        # under ZeRO-3 / FSDP, and every rank must take part in each of those forwards.
        path = buffer_file(directory)
        try:
            state = json.loads(path.read_text()) if path.is_file() else buffer.state()
        except (OSError, ValueError) as exc:
            raise _unreadable_error(path, exc) from None
        buffer.load_state(state, trainer.discriminator.featurize)
        # Absent (a checkpoint from before partners were saved, or another loss): none, as before.
        trainer.load_partners(state.get("partners") or [], trainer.discriminator.featurize)


class PolicyGuard(TrainerCallback):
    """Stop a run whose policy went non-finite with the run's own :class:`TrainingError`, naming the step,
    before it samples from the broken policy (where torch's ``multinomial`` would fail inside ``generate``
    with "probability tensor contains either inf, nan or element < 0", or a run without sampling would
    save NaN weights and call itself completed).

    Two checks, both needed: a learning rate far too high (``1e30``) leaves *finite* weights after the
    step (Adam moves each by about the learning rate: 1e30), whose activations then overflow (RMSNorm's
    mean of squares is inf), so only the logits show it; a NaN gradient leaves NaN weights, which the
    weight check names at the step that made them.

    * After every optimizer step (``on_step_end``): every trainable weight is finite. One read of the
      trainable parameters (``aminmax`` per tensor: no tensor-sized temporary), one host sync and, with
      several processes, one all-reduce of a flag (each checks its own shards under ZeRO-3 / FSDP, and all
      reach the same verdict). Measured on a 2-core AMD EPYC (AVX512-BF16): 0.4 ms for the quickstart's policy (a ~1.5 s
      step), 135 ms for a 163M-parameter float32 one (SmolLM2-135M's shape; its steps take tens of seconds
      there); with LoRA only the adapters are read.
    * Whenever the policy runs (a forward hook on its output layer): its logits are finite. One
      ``aminmax`` over the logits and one host sync per forward (generation syncs per token already): 5 ms
      per sampled token for 64 sequences over a 49k vocabulary on the same CPU, against the hundreds of
      milliseconds the forward that made them takes.
    """

    def __init__(self, learning_rate_field: str = "trainer.learning_rate") -> None:
        # The recipe field that sets the learning rate, for the message (``sft.learning_rate`` for SFT).
        self.learning_rate_field = learning_rate_field
        self.state: Any = None  # the trainer's state (its global_step), once training began
        self.learning_rate: float | None = None
        self.largest_weight: float | None = None  # of the last weight check, for the message
        self._hook: Any = None

    # -- TrainerCallback hooks ----------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.state = state
        self.learning_rate = getattr(args, "learning_rate", None)
        if model is not None:
            self.attach(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.check_weights(model, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.detach()

    # -- the checks ---------------------------------------------------------------------------------

    def attach(self, model: torch.nn.Module) -> None:
        """Check the logits of every forward of ``model`` (a transformers model, PEFT-wrapped or not)."""
        self.detach()
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if isinstance(output, torch.nn.Module):
            self._hook = output.register_forward_hook(self._check_logits)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _global_step(self) -> int:
        return self.state.global_step if self.state is not None else 0

    def _cause(self) -> str:
        rate = f" {self.learning_rate:g}" if self.learning_rate is not None else ""
        return (
            f"likely cause: {self.learning_rate_field}{rate} too high (or float16 overflow); earlier "
            "checkpoints are untouched."
        )

    def _check_logits(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor) or logits.numel() == 0:
            return
        with torch.no_grad():
            if math.isfinite(_magnitude(logits).item()):  # the one host sync
                return
        step = self._global_step()
        if step == 0:
            raise TrainingError(
                "the starting generator's logits are not finite (before step 1); likely cause: weights that "
                "overflow in model.dtype (float16?) or a corrupt model.name_or_path checkpoint."
            )
        largest = f", its largest weight {self.largest_weight:.3g}" if self.largest_weight is not None else ""
        raise TrainingError(
            f"the generator diverged at step {step}: its logits are not finite after that step's update"
            f"{largest}; {self._cause()}"
        )

    def check_weights(self, model: torch.nn.Module, step: int) -> None:
        """Raise :class:`TrainingError` when a trainable weight of ``model`` is not finite (every process
        reaches the same verdict: a collective when there are several)."""
        named = [(name, _local(p)) for name, p in model.named_parameters() if p.requires_grad]
        named = [(name, t) for name, t in named if t.numel() > 0]  # a ZeRO-3 rank may hold none of one
        largest: list[float] = []
        if named:
            device = named[0][1].device  # (a model split over devices: the scalars gathered on one)
            with torch.no_grad():  # each tensor's largest magnitude: inf or NaN when any element is
                largest = torch.stack([_magnitude(t).to(device) for _, t in named]).tolist()  # one host sync
        bad = next(
            ((name, v) for (name, _), v in zip(named, largest, strict=True) if not math.isfinite(v)), None
        )
        failed = bad is not None
        if world_size() > 1:  # every process reaches the same verdict (each checked its own shards)
            failed = all_reduce_(torch.tensor([float(failed)]), "max").item() > 0
        if not failed:
            if largest:
                self.largest_weight = max(largest)
            return
        which = f"its weight {bad[0]} is {bad[1]}" if bad is not None else "a weight on another process is"
        raise TrainingError(f"the generator diverged at step {step}: {which} (not finite); {self._cause()}")


def _magnitude(tensor: torch.Tensor) -> torch.Tensor:
    """The largest absolute value in ``tensor`` as a float32 scalar: NaN or inf when any element is. One
    pass (``aminmax``; no tensor-sized temporary, several times faster than ``abs().amax()`` on a CPU)."""
    low, high = torch.aminmax(tensor.detach())
    return torch.stack([low, high]).float().abs().amax()


def _local(param: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter: a ZeRO-3 shard (``ds_tensor``), an FSDP2 DTensor's local shard,
    or the tensor itself."""
    shard = getattr(param, "ds_tensor", None)
    if isinstance(shard, torch.Tensor):
        return shard
    to_local = getattr(param, "to_local", None)
    return to_local() if callable(to_local) else param


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
        # Stops the run, naming the step, when the policy's weights or logits go non-finite (ppo,
        # reinforce, gumbel: every command with a discriminator), before the next generation.
        self.policy_guard = PolicyGuard()

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
        self.policy_guard.on_train_begin(args, state, control, model=model)  # before anything samples
        if self.before_training is not None:
            self.before_training()
        resume = self.resume_dir
        if resume is None and state.global_step > 0:
            resume = checkpoint_dir(args.output_dir, state.global_step)
        if resume is not None and state.global_step > 0:
            directory = Path(resume) / DISCRIMINATOR_DIR
            # fresh_discriminator: one that cannot be read (a truncated file) is left, as a missing one is.
            broken = unreadable(discriminator_files(directory)) if self.fresh_discriminator else []
            if (directory / DISCRIMINATOR_STATE).is_file() and not broken:
                load_discriminator(directory, self.disc_trainer, self.reward, self.buffer)
                self.restored = {"path": str(directory), "fingerprint": self.disc_trainer.fingerprint()}
                logger.info(
                    "Restored the discriminator from %s (round %d).", directory, self.disc_trainer.rounds
                )
                return
            if not self.fresh_discriminator:
                raise InputError(
                    "{resume}: {checkpoint} has no complete {folder}/; pass {fresh_discriminator} to continue it "
                    "with a new discriminator trained from a warm-up.",
                    checkpoint=resume,
                    folder=DISCRIMINATOR_DIR,
                )
            if broken and directory.is_dir():
                logger.warning(
                    "%s %s; training a fresh discriminator from a warm-up (fresh_discriminator).",
                    *broken[0],
                )
            else:
                logger.warning("%s has no discriminator; training a fresh one from a warm-up.", resume)
        self.warmup_stats = self.warmup(model, processing_class)
        self._record(self.warmup_stats)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # The policy first: a non-finite one stops the run before its next samples (and this round).
        self.policy_guard.on_step_end(args, state, control, model=model)
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

    def on_train_end(self, args, state, control, **kwargs):
        self.policy_guard.on_train_end(args, state, control)

    def on_save(self, args, state, control, **kwargs):
        """After TRL's own files: the discriminator, written aside and renamed into place when whole, so
        a kill part-way leaves a checkpoint without ``discriminator/`` (incomplete), never a partial one."""
        checkpoint = checkpoint_dir(args.output_dir, state.global_step)
        staging = checkpoint / f"{DISCRIMINATOR_DIR}{PARTIAL_SUFFIX}"
        save_buffers(staging, self.buffer, self.disc_trainer)
        if state.is_world_process_zero:
            save_discriminator(staging, self.disc_trainer, self.reward)
            final = checkpoint / DISCRIMINATOR_DIR
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
