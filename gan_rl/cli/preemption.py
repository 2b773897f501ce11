"""Preemption-safe stops: SIGTERM (or a first Ctrl-C) ends a run with a checkpoint that ``--resume`` takes.

A cluster scheduler sends SIGTERM some time before it kills a job, and a user presses Ctrl-C. Killed
outright, a run loses everything since its last scheduled checkpoint (with ``save_strategy: no``, all of
it). Instead, while the trainer trains, the signal only sets a flag (:class:`StopRequest`); the trainer
finishes the optimizer step it is in, and :class:`PreemptionCallback` then asks it for a checkpoint and
for the end of training. The checkpoint is written by the trainer's own path (``control.should_save``),
whatever ``save_strategy`` says: TRL's files (generator, optimizer, scheduler, RNG, trainer state), then
:meth:`gan_rl.trainer.callback.DiscriminatorCallback.on_save` (discriminator and every process's buffer), so it
holds exactly what a scheduled checkpoint holds. The run then raises :class:`Preempted` instead of saving
the final model and ``run_summary.json``: a stopped run never looks finished, and ``--resume`` continues
it from that checkpoint. The command line turns :class:`Preempted` into one line (the checkpoint, the
command that resumes) and exit code 143 (SIGTERM, 128 + 15) or 130 (SIGINT, 128 + 2).

A second Ctrl-C aborts at once (``KeyboardInterrupt``), for a user who will not wait for the step; a
repeated SIGTERM changes nothing (the stop is under way). Signals are handled while the trainer trains
only: before it (loading) and after it (the summary) they act as usual. A signal in the last step lets
the run finish (training is complete; its final model and summary come sooner than a checkpoint would).

Under ``accelerate launch`` the signal may reach one process only (a scheduler that signals one task, a
user's ``kill``). Every process must still take the same decision at the same step, or the others would
wait forever in the next collective (or save a checkpoint alone): the callback all-reduces the flag (the
maximum of the signal numbers, 0 for none) at the end of every step, one scalar, only with several
processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import TrainerCallback

from gan_rl.trainer.trl_internals import at_generation_boundary
from gan_rl.utils.checkpoints import checkpoint_dir
from gan_rl.utils.distributed import all_reduce_, world_size

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGINT``, ... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Preempted(Exception):
    """A run stopped by a signal after writing a checkpoint to resume from (not a failure: the command
    line prints one line and exits with ``128 + signum``, as a process killed by the signal would).

    ``warm_start``: the stop came during the SFT part of a ``model.warm_start: sft`` run (the checkpoint is
    the SFT run's; resuming the adversarial command resumes it). ``iteration``: (k, iterations) of a SPIN
    run, whose steps count within iteration k; without a checkpoint the stop came between iterations, and
    the iterations done (saved) are where ``--resume`` goes on.
    """

    def __init__(
        self,
        signum: int,
        step: int,
        max_steps: int,
        checkpoint: Path | None,
        warm_start: bool = False,
        iteration: tuple[int, int] | None = None,
    ) -> None:
        self.signum = signum
        self.step = step
        self.max_steps = max_steps
        self.checkpoint = checkpoint
        self.warm_start = warm_start
        self.iteration = iteration
        super().__init__(signum, step, max_steps, checkpoint)

    def __str__(self) -> str:
        return self.describe()

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 143 for SIGTERM, 130 for SIGINT (the shells' convention)."""
        return 128 + self.signum

    def describe(self) -> str:
        """``stopped by SIGTERM after step 3 of 10: checkpoint outputs/x/checkpoint-3`` (no resume hint:
        the command line knows the command)."""
        during = " during the SFT warm start," if self.warm_start else ""
        if self.iteration is not None and not self.warm_start:
            k, iterations = self.iteration
            if self.checkpoint is None and k == 0:
                return (
                    f"stopped by {self.signal_name} before SPIN iteration 1 of {iterations}: nothing trained"
                )
            if self.checkpoint is None:  # between two SPIN iterations: the done ones are saved
                return (
                    f"stopped by {self.signal_name} after SPIN iteration {k} of {iterations}: the iterations "
                    "done are saved"
                )
            during = f" in SPIN iteration {k} of {iterations},"
        saved = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint was written"
        return f"stopped by {self.signal_name}{during} after step {self.step} of {self.max_steps}: {saved}"


class StopRequest:
    """The flag a signal sets, read at the end of every optimizer step (:class:`PreemptionCallback`).

    The handler only records the signal: Python runs it between two bytecodes of the main thread, maybe
    inside a forward pass or a file write, where nothing else is safe to do. ``signum``: the first stop
    signal received (0: none).
    """

    def __init__(self) -> None:
        self.signum = 0

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler: the first SIGTERM or SIGINT asks for a stop; a SIGINT after that aborts."""
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # a repeated SIGTERM: the stop is under way
        self.signum = signum
        # os.write, not print or logging: a handler that interrupts a write to the same stream would make
        # a buffered writer raise ("reentrant call"), and logging's lock is held by the interrupted code.
        again = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
        message = (
            f"gan-rl: {signal_name(signum)} received: stopping after the current step with a "
            f"checkpoint{again}\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, message.encode())

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """:meth:`handle` as the handler of SIGTERM and SIGINT inside the block, the previous handlers
        restored after it. Python lets only the main thread set handlers: elsewhere (a run started from a
        worker thread) the block runs with the handlers as they are, and a signal acts as usual."""
        if threading.current_thread() is not threading.main_thread():
            logger.debug("Not in the main thread: SIGTERM/SIGINT keep their handlers (no graceful stop).")
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                # None: a handler not installed from Python; the default is the closest we can restore.
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class PreemptionCallback(TrainerCallback):
    """At the end of an optimizer step after a stop signal: a checkpoint, then the end of training.

    ``control.should_save`` makes the trainer save through its own path right after this step's
    ``on_step_end`` callbacks (transformers' ``_maybe_log_save_evaluate`` saves whenever it is set, also
    with ``save_strategy: no``), then the ``on_save`` callbacks run (the discriminator's among them);
    ``should_training_stop`` then ends the loop. Use it as::

        stop = PreemptionCallback()
        trainer = Trainer(..., callbacks=[..., stop])
        with stop.signals():
            trainer.train()
        stop.raise_if_stopped(trainer)  # Preempted, after every process is done with the checkpoint
    """

    def __init__(self) -> None:
        self.request = StopRequest()
        self.signum = 0  # the stop every process agreed on (0: none yet)
        self.checkpoint: Path | None = None  # the checkpoint written for it
        self.deferred = False  # the stop waits for the end of TRL's generation cycle

    def signals(self) -> contextlib.AbstractContextManager[StopRequest]:
        """The signal handlers, installed for the duration of training (:meth:`StopRequest.installed`)."""
        return self.request.installed()

    def on_step_end(self, args, state, control, **kwargs):
        signum = self.request.signum
        if world_size() > 1:  # one process may have the signal: all of them stop at this same step
            signum = int(all_reduce_(torch.tensor([signum], dtype=torch.long), "max").item())
        if signum and state.global_step >= state.max_steps:
            # Training ends with this step anyway: the final model and summary are quicker than a
            # checkpoint and a resume, and transformers would train one step too many resuming from a
            # checkpoint of the last step. raise_if_stopped says so.
            return control
        if signum and not at_generation_boundary(args, state.global_step):
            # TRL's GRPO/RLOO sample once per steps_per_generation x num_iterations micro-steps and keep
            # the samples in memory, not in checkpoints: a checkpoint inside that cycle would resume with
            # fresh samples, another run. Stop at the cycle's end (at most num_iterations - 1 more steps;
            # every process computes the same answer).
            if not self.deferred:
                logger.warning(
                    "%s: finishing TRL's generation cycle (num_iterations / steps_per_generation) first, "
                    "so that the checkpoint resumes the same run.",
                    signal_name(signum),
                )
                self.deferred = True
            return control
        if signum:
            self.signum = signum
            # A rank that had no signal of its own exits as the signalled one does (same exit code).
            self.request.signum = self.request.signum or signum
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.signum:
            self.checkpoint = checkpoint_dir(args.output_dir, state.global_step)
        return control

    def raise_if_stopped(self, trainer: Any) -> None:
        """:class:`Preempted` when training ended for a stop signal; call it right after ``train()``.

        Every process waits for the others first: the main process writes the checkpoint's last files
        (the discriminator), and a launcher that sees one process exit stops the rest. A signal in the
        last training step (or after it) changes nothing: training is complete, and the run goes on to
        its final model and summary.
        """
        if not self.signum:
            if self.request.requested:
                logger.warning(
                    "%s came in the last training step: finishing the run (final model and summary).",
                    signal_name(self.request.signum),
                )
            return
        PartialState().wait_for_everyone()
        state = trainer.state
        raise Preempted(self.signum, state.global_step, state.max_steps, self.checkpoint)
