"""Where a SPIN run keeps each iteration, and where a resumed run starts.

``output_dir/iteration-k/`` holds everything iteration k needs and leaves:

* ``pairs.jsonl``: its preference pairs (written before training, read back by every run);
* with ``rejected_by: discriminator``, ``samples.jsonl``: every own sample as a pair, before the
  explicit discriminator kept one per prompt, and ``rejection.json``: how it ranked them;
* ``reference_logps.safetensors``: the reference log-probabilities of those pairs, scored by the policy
  at the start of the iteration (the reference is needed once, so a resume never needs it again);
* ``checkpoint-N/``: TRL's checkpoints within the iteration (``save_steps``);
* ``model/``: the policy at its end (with LoRA, the adapter merged), with the tokenizer: the start and
  the reference of iteration k + 1, and an ordinary checkpoint for ``generate`` / ``evaluate``;
* ``trainer_state.json``: the iteration's DPO log history;
* ``iteration.json``: its summary, written last: the iteration is done when it exists.

A resumed run skips the done iterations, and continues the first other one from its latest checkpoint
with its saved pairs and reference log-probabilities; an iteration with no checkpoint yet starts over
(from its saved pairs, when sampling had finished).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

ITERATION_PREFIX = "iteration-"
PAIRS_FILE = "pairs.jsonl"
SAMPLES_FILE = "samples.jsonl"
REJECTION_FILE = "rejection.json"
REFERENCE_FILE = "reference_logps.safetensors"
MODEL_DIR = "model"
SUMMARY_FILE = "iteration.json"
STATE_FILE = "trainer_state.json"


@dataclass
class IterationSummary:
    """What one iteration did (``iteration.json``); its wall time split into sampling, training (TRL's
    construction, the reference scoring and the DPO steps) and saving the model."""

    iteration: int
    rows: int
    pairs: int
    steps: int
    # Whether the rejected side was reused from iteration 1 (snapshot) rather than sampled now.
    reused_samples: bool
    train_loss: float | None = None
    # The last logged DPO metrics (rewards/accuracies, rewards/margins, logps/chosen, ...).
    metrics: dict[str, float] = field(default_factory=dict)
    sampling_seconds: float = 0.0
    training_seconds: float = 0.0
    saving_seconds: float = 0.0
    # The checkpoint this run resumed the iteration from (None: trained from its start in one go).
    resumed_from: str | None = None
    # spin.rejected_by: discriminator: how the explicit discriminator ranked the samples
    # (gan_rl.trainer.spin.rejection.RejectionStats); None otherwise.
    rejection: dict[str, Any] | None = None


class RunLayout:
    """The paths of a SPIN run under ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)

    def iteration_dir(self, k: int) -> Path:
        return self.root / f"{ITERATION_PREFIX}{k}"

    def pairs_file(self, k: int) -> Path:
        return self.iteration_dir(k) / PAIRS_FILE

    def samples_file(self, k: int) -> Path:
        return self.iteration_dir(k) / SAMPLES_FILE

    def rejection_file(self, k: int) -> Path:
        return self.iteration_dir(k) / REJECTION_FILE

    def reference_file(self, k: int) -> Path:
        return self.iteration_dir(k) / REFERENCE_FILE

    def model_dir(self, k: int) -> Path:
        return self.iteration_dir(k) / MODEL_DIR

    def summary_file(self, k: int) -> Path:
        return self.iteration_dir(k) / SUMMARY_FILE

    def is_done(self, k: int) -> bool:
        return self.summary_file(k).is_file() and self.model_dir(k).is_dir()

    def iterations_on_disk(self) -> list[int]:
        """The k of every ``iteration-k/`` folder, sorted."""
        if not self.root.is_dir():
            return []
        found = (re.fullmatch(rf"{ITERATION_PREFIX}(\d+)", p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def last_done(self) -> int:
        """The last iteration k such that iterations 1..k are all done (0: none)."""
        k = 0
        while self.is_done(k + 1):
            k += 1
        return k

    def read_summary(self, k: int) -> IterationSummary:
        return IterationSummary(**json.loads(self.summary_file(k).read_text()))

    def write_summary(self, summary: IterationSummary) -> None:
        """``iteration.json``, written aside and renamed: the iteration is done once it is there."""
        path = self.summary_file(summary.iteration)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary.__dict__, indent=2))
        tmp.replace(path)

    def log_history(self, k: int) -> list[dict[str, Any]]:
        """Iteration k's DPO log history (its ``trainer_state.json``), or [] when there is none."""
        path = self.iteration_dir(k) / STATE_FILE
        if not path.is_file():
            return []
        return list(json.loads(path.read_text()).get("log_history", []))

    def resume_point(self, resume: bool | str | None) -> tuple[int, str | None]:
        """(the first iteration to train, the checkpoint to resume it from or None).

        ``resume`` falsy: a fresh run, refused where an earlier one left iterations (resuming or another
        ``output_dir`` are the choices; nothing is deleted). True: the run on disk continued (nothing on
        disk: a fresh start). A path: that checkpoint, which must lie in the first iteration not done.
        """
        done = self.last_done()
        if not resume:
            if self.iterations_on_disk():
                raise ValueError(
                    f"SpinTrainer: {self.root} already holds a SPIN run ({ITERATION_PREFIX}* folders); pass "
                    "resume_from_checkpoint=True to continue it, or use another output_dir."
                )
            return 1, None
        if isinstance(resume, (str, Path)):
            checkpoint = Path(resume)
            match = re.fullmatch(rf"{ITERATION_PREFIX}(\d+)", checkpoint.parent.name)
            if (
                not checkpoint.is_dir()
                or match is None
                or checkpoint.parent.parent.resolve() != self.root.resolve()
            ):
                raise ValueError(
                    f"SpinTrainer: resume_from_checkpoint={str(resume)!r} is not a checkpoint folder inside "
                    f"{self.root}/{ITERATION_PREFIX}k/; pass True to resume from the latest one."
                )
            k = int(match.group(1))
            if k != done + 1:
                raise ValueError(
                    f"SpinTrainer: resume_from_checkpoint={str(resume)!r} is in iteration {k}, but the first "
                    f"iteration not done in {self.root} is {done + 1}."
                )
            return k, str(checkpoint)
        k = done + 1
        folder = self.iteration_dir(k)
        return k, (get_last_checkpoint(str(folder)) if folder.is_dir() else None)
