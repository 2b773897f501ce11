"""Resume past the first epoch (issue 26, item 1): a run resumed in its second or third pass over the
prompts, from a saved checkpoint or after SIGTERM, ends bit-identical to the run that was never stopped,
for every training command.

The data is a few rows so that an epoch is two steps: the checkpoints lie inside the second epoch (step
3), on the boundary (step 4: the next step opens the third epoch), and the runs go on to step 6. TRL's
own prompt sampler re-seeded its generator when a run resumed, so from the second epoch on a resumed run
trained on another prompt order (gan_rl.trainer.epoch_sampler).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gan_rl.cli.main import main
from tests.cli.test_preemption import same_weights, signal_during_step

pytestmark = pytest.mark.slow

STEPS = 6
# (command, recipe sections, the generator's weights file): two steps per epoch in each.
COMMANDS = {
    # 4 prompts, 8 completions per step = 2 prompts x 4 generations.
    "ppo": ({"data": {"train": {"synthetic": "quickstart", "rows": 4, "seed": 0}}}, "model.safetensors"),
    "reinforce": (
        {"data": {"train": {"synthetic": "quickstart", "rows": 4, "seed": 0}}},
        "model.safetensors",
    ),
    # 16 pairs in batches of 8.
    "gumbel": ({"data": {"train": {"synthetic": "quickstart", "rows": 16, "seed": 0}}}, "model.safetensors"),
    "sft": (
        {
            "data": {"train": {"synthetic": "quickstart", "rows": 16, "seed": 0}},
            "sft": {"per_device_train_batch_size": 8, "learning_rate": 3e-3, "report_to": "none"},
        },
        "model.safetensors",
    ),
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def train(command: str, recipe, out, *args: str):
    flag = "--output-dir"
    extra = [] if command == "sft" else ["--samples", "0"]
    return invoke(command, str(recipe), flag, str(out), *extra, *args)


def make_recipe(recipe_factory, command: str, save_steps: int | None):
    sections, _ = COMMANDS[command]
    saving = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {"save_strategy": "no"}
    section = "sft" if command == "sft" else "trainer"
    trainer = {"max_steps": STEPS, "logging_steps": 1, **saving}
    merged = {**sections, section: {**sections.get(section, {}), **trainer}}
    if command == "sft":
        merged["trainer"] = {"save_strategy": "no"}
    return recipe_factory(f"{command}.yaml", **merged)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("checkpoint", [3, 4], ids=["inside-epoch-2", "epoch-boundary"])
def test_resume_from_a_later_epoch_is_bit_identical(tmp_path, recipe_factory, command, checkpoint):
    recipe = make_recipe(recipe_factory, command, save_steps=checkpoint)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    result = train(command, recipe, whole)
    assert result.exit_code == 0, result.output
    result = train(command, recipe, resumed, "--resume", str(whole / f"checkpoint-{checkpoint}"))
    assert result.exit_code == 0, result.output
    weights = COMMANDS[command][1]
    same_weights(whole / weights, resumed / weights)
    if command != "sft":
        same_weights(whole / "discriminator/model.safetensors", resumed / "discriminator/model.safetensors")


@pytest.mark.parametrize("command", ["ppo", "sft"])
def test_sigterm_in_a_later_epoch_resumes_to_the_uninterrupted_run(tmp_path, recipe_factory, command):
    """A stop in step 5 (the third epoch) checkpoints step 5; ``--resume`` ends where the whole run ends."""
    recipe = make_recipe(recipe_factory, command, save_steps=None)
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    with signal_during_step(5):
        result = train(command, recipe, stopped)
    assert result.exit_code == 143, result.output
    assert (stopped / "checkpoint-5").is_dir()
    result = train(command, recipe, stopped, "--resume")
    assert result.exit_code == 0, result.output
    result = train(command, recipe, whole)
    assert result.exit_code == 0, result.output
    same_weights(stopped / "model.safetensors", whole / "model.safetensors")
