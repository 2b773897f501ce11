"""Hostile files and runs, as a user would meet them: each row one command, one line, the right exit code,
nothing presented as finished (issue 26; the harness is :mod:`tests.cli.hostile`).

Rows: a truncated checkpoint file on ``--resume`` (the discriminator's weights and optimizer, the
generator's weights, a LoRA adapter's, the trainer's optimizer), a truncated ``--model`` for ``generate``
and ``evaluate``, training data that is not UTF-8, a generator that diverges (``ppo``, ``reinforce``,
``gumbel``, ``sft``), ``evaluate`` on generations that are null or not text, an output path under a file,
and the library lines that once came before every error. The checkpoint rows copy the checkpoints of two
tiny runs made once for the module (seconds). Below the table: what the rows cannot say (an unreadable
discriminator with ``--fresh-discriminator`` goes on; the checks one by one).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from tests.cli.hostile import Case, run_case
from tests.conftest import base_recipe, quickstart_texts, write_recipe

QUICKSTART = str(Path(__file__).resolve().parents[2] / "tests" / "recipes" / "random-init.yaml")
# The module's tiny runs: checkpoints at steps 1 and 2.
CHECKPOINTED = {"max_steps": 2, "save_strategy": "steps", "save_steps": 1}
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
DIVERGING = ["--set", "trainer.learning_rate=1e30", "--set", "trainer.max_steps=20"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Two tiny checkpointed runs: ``ppo`` (the discriminator's files too) and ``sft`` with LoRA (the
    adapter's weights); {name: output directory}."""
    from gan_rl.cli.recipe import parse_recipe
    from gan_rl.cli.sft import run_sft
    from gan_rl.cli.train import run

    root = tmp_path_factory.mktemp("hostile-files")
    ppo_out, sft_out = root / "ppo", root / "sft"
    run(
        "ppo",
        parse_recipe(base_recipe(tiny_model_dir, ppo_out, trainer=CHECKPOINTED)),
        num_samples=0,
        progress=False,
    )
    sft = base_recipe(
        tiny_model_dir,
        root / "unused",
        model={"lora": LORA},
        sft={**CHECKPOINTED, "output_dir": str(sft_out)},
    )
    run_sft(parse_recipe(sft))
    for out in (ppo_out, sft_out):
        assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (sft_out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    return {"ppo": ppo_out, "sft": sft_out}


@pytest.fixture()
def fixtures(tiny_model_dir, request) -> dict:
    """The session fixtures a row's ``setup`` may use (the module's runs only for the rows that need them)."""
    found = {"tiny_model_dir": tiny_model_dir}
    if "resume" in request.node.name:
        found["runs"] = request.getfixturevalue("runs")
    return found


def recipe(**sections):
    """A ``setup`` writing the base recipe (``sections`` updated) as ``recipe.yaml``, output dir ``out``."""

    def setup(tmp: Path, fixtures: dict) -> None:
        write_recipe(tmp / "recipe.yaml", base_recipe(fixtures["tiny_model_dir"], tmp / "out", **sections))

    return setup


def truncated_checkpoint(run: str, file: str, **sections):
    """A ``setup``: the module's ``run`` copied to ``run/`` with ``checkpoint-2/FILE`` cut to 100 bytes, and
    the recipe."""

    def setup(tmp: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures["runs"][run], tmp / "run")
        (tmp / "run" / "run_summary.json").unlink()  # an unfinished run (for --resume of the latest)
        with (tmp / "run" / "checkpoint-2" / file).open("r+b") as f:
            f.truncate(100)
        recipe(**sections)(tmp, fixtures)

    return setup


def truncated_model(tmp: Path, fixtures: dict) -> None:
    """A copy of the tiny model in ``model/`` with its weights cut to 100 bytes, and the recipe (whose
    evaluation encoder is the intact tiny model)."""
    shutil.copytree(fixtures["tiny_model_dir"], tmp / "model")
    with (tmp / "model" / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    recipe(evaluate={"encoder": str(fixtures["tiny_model_dir"]), "mauve": False})(tmp, fixtures)


def latin1_data(suffix: str):
    """A ``setup``: the training data as ``data.SUFFIX`` with one Latin-1 byte (``é`` as 0xe9) in the
    third row (line 3 of a JSONL file, line 4 of a CSV file under its header)."""

    def setup(tmp: Path, fixtures: dict) -> None:
        rows = quickstart_texts(16)
        rows[2]["post"] = "caf\udce9 " + rows[2]["post"]  # a lone surrogate: written as the raw byte 0xe9
        if suffix == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        elif suffix == "json":
            text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
        else:
            text = "topic,post\n" + "".join(f'"{r["topic"]}","{r["post"]}"\n' for r in rows)
        (tmp / f"data.{suffix}").write_bytes(text.encode("utf-8", "surrogateescape"))
        recipe(data={"train": {"path": str(tmp / f"data.{suffix}")}})(tmp, fixtures)

    return setup


def generations(value):
    """A ``setup``: ``gen.jsonl`` as ``gan-rl generate`` writes it, with ``generated`` = ``value`` in its
    second row, and the recipe."""

    def setup(tmp: Path, fixtures: dict) -> None:
        rows = [{"prompt": "p", "real": "r", "generated": "a text", "temperature": 1.0}] * 3
        rows = [rows[0], {**rows[1], "generated": value}, rows[2]]
        (tmp / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe(evaluate={"encoder": str(fixtures["tiny_model_dir"]), "mauve": False})(tmp, fixtures)

    return setup


def a_file(tmp: Path, fixtures: dict) -> None:
    (tmp / "somefile").write_text("not a directory")
    recipe(evaluate={"encoder": str(fixtures["tiny_model_dir"]), "mauve": False})(tmp, fixtures)


RESUME = ["ppo", "{recipe}", "--samples", "0", "--resume", "{tmp}/run/checkpoint-2"]
EARLIER = ["truncated", "--resume", "run/checkpoint-1"]

CASES = [
    # -- 1. a truncated checkpoint file on --resume: named with what to do, before any model loads -----
    Case(
        "resume-truncated-discriminator-weights",
        RESUME,
        2,
        ["checkpoint-2/discriminator/model.safetensors", *EARLIER, "--fresh-discriminator"],
        truncated_checkpoint("ppo", "discriminator/model.safetensors", trainer={"max_steps": 3}),
        output_absent=True,
    ),
    Case(
        "resume-truncated-discriminator-optimizer",
        RESUME,
        2,
        ["checkpoint-2/discriminator/optimizer.pt", *EARLIER, "--fresh-discriminator"],
        truncated_checkpoint("ppo", "discriminator/optimizer.pt", trainer={"max_steps": 3}),
        output_absent=True,
    ),
    Case(
        "resume-truncated-generator-weights",
        RESUME,
        2,
        ["checkpoint-2/model.safetensors", *EARLIER],
        truncated_checkpoint("ppo", "model.safetensors", trainer={"max_steps": 3}),
        output_absent=True,
    ),
    Case(
        "resume-truncated-optimizer",
        RESUME,
        2,
        ["checkpoint-2/optimizer.pt", "torch zip archive", *EARLIER],
        truncated_checkpoint("ppo", "optimizer.pt", trainer={"max_steps": 3}),
        output_absent=True,
    ),
    Case(
        # --resume (the latest): the same line, naming the earlier checkpoint beside it.
        "resume-latest-truncated-generator-weights",
        ["ppo", "{recipe}", "--samples", "0", "--resume", "--output-dir", "{tmp}/run"],
        2,
        ["checkpoint-2/model.safetensors", *EARLIER],
        truncated_checkpoint("ppo", "model.safetensors", trainer={"max_steps": 3}),
        output_dir="run",
    ),
    Case(
        "resume-sft-truncated-lora-adapter",
        ["sft", "{recipe}", "--resume", "{tmp}/run/checkpoint-2", "--output-dir", "{tmp}/out"],
        2,
        ["checkpoint-2/adapter_model.safetensors", *EARLIER],
        truncated_checkpoint("sft", "adapter_model.safetensors", model={"lora": LORA}, sft={"max_steps": 3}),
        output_absent=True,
    ),
    # -- 2. a truncated --model for generate and evaluate ----------------------------------------------
    Case(
        "generate-truncated-model",
        ["generate", "{recipe}", "--model", "{tmp}/model", "--output", "{tmp}/out/gen.jsonl"],
        2,
        ["--model", "model/model.safetensors", "truncated"],
        truncated_model,
        output_absent=True,
    ),
    Case(
        "evaluate-truncated-model",
        ["evaluate", "{recipe}", "--model", "{tmp}/model", "--output-dir", "{tmp}/out"],
        2,
        ["--model", "model/model.safetensors", "truncated"],
        truncated_model,
        output_absent=True,
    ),
    # -- 3. training data that is not UTF-8: the file and its line ------------------------------------
    Case(
        "check-jsonl-not-utf8",
        ["check", "{recipe}"],
        2,
        ["data.train.path", "data.jsonl:3", "not UTF-8", "0xe9"],
        latin1_data("jsonl"),
        output_absent=True,
    ),
    Case(
        "ppo-jsonl-not-utf8",
        ["ppo", "{recipe}", "--samples", "0"],
        2,
        ["data.train.path", "data.jsonl:3", "not UTF-8"],
        latin1_data("jsonl"),
        output_absent=True,
    ),
    Case(
        "check-json-not-utf8",
        ["check", "{recipe}"],
        2,
        ["data.train.path", "data.json:4", "not UTF-8"],
        latin1_data("json"),
        output_absent=True,
    ),
    Case(
        "check-csv-not-utf8",
        ["check", "{recipe}"],
        2,
        ["data.train.path", "data.csv:4", "not UTF-8"],
        latin1_data("csv"),
        output_absent=True,
    ),
    # -- 4. a generator that diverges: the run's own error, naming the step ----------------------------
    *(
        Case(
            f"{command}-diverges",
            [command, "{recipe}", "--samples", "0", *DIVERGING],
            1,
            ["the generator diverged at step", "not finite", "trainer.learning_rate 1e+30"],
            recipe(),
        )
        for command in ("ppo", "reinforce", "gumbel")
    ),
    Case(
        "sft-diverges",
        ["sft", "{recipe}", "--output-dir", "{tmp}/out", "--set", "sft.learning_rate=1e30"],
        1,
        ["the generator diverged at step", "not finite", "sft.learning_rate 1e+30"],
        recipe(sft={"max_steps": 20}),
    ),
    # -- 5. evaluate on generations that are not text --------------------------------------------------
    Case(
        "evaluate-null-generation",
        ["evaluate", "{recipe}", "--model", "{tmp}/gen.jsonl", "--output-dir", "{tmp}/out"],
        2,
        ["gen.jsonl", "line 2", "column 'generated'", "null"],
        generations(None),
        output_absent=True,
    ),
    Case(
        "evaluate-number-generation",
        ["evaluate", "{recipe}", "--model", "{tmp}/gen.jsonl", "--output-dir", "{tmp}/out"],
        2,
        ["gen.jsonl", "line 2", "column 'generated'", "a number (5)"],
        generations(5),
        output_absent=True,
    ),
    # -- 6. no library line before the error: the error is the only line ------------------------------
    Case(
        "check-quickstart-bad-max-steps-alone",
        ["check", QUICKSTART, "--set", "trainer.max_steps=abc", "--set", "trainer.output_dir={tmp}/out"],
        2,
        ["trainer.max_steps", "'abc'"],
        output_absent=True,
    ),
    Case(
        "ppo-quickstart-bad-max-steps-alone",  # ppo imports transformers (and so peft, bitsandbytes) first
        ["ppo", QUICKSTART, "--set", "trainer.max_steps=abc", "--output-dir", "{tmp}/out"],
        2,
        ["trainer.max_steps", "'abc'"],
        output_absent=True,
    ),
    # -- 7. an output path under a file: said as such, not "permission denied" --------------------------
    Case(
        "ppo-output-dir-under-a-file",
        ["ppo", "{recipe}", "--output-dir", "{tmp}/somefile/out"],
        2,
        ["trainer.output_dir", "somefile is a file", "cannot be a directory under it"],
        a_file,
        output_dir="somefile/out",
    ),
    Case(
        "sft-output-dir-under-a-file",
        ["sft", "{recipe}", "--output-dir", "{tmp}/somefile/out"],
        2,
        ["sft.output_dir", "somefile is a file"],
        a_file,
        output_dir="somefile/out",
    ),
    Case(
        "evaluate-output-dir-under-a-file",
        ["evaluate", "{recipe}", "--model", "{tmp}/gen.jsonl", "--output-dir", "{tmp}/somefile/out"],
        2,
        ["--output-dir", "somefile is a file"],
        a_file,
        output_dir="somefile/out",
    ),
    Case(
        "generate-output-under-a-file",
        ["generate", "{recipe}", "--model", "{tmp}/model", "--output", "{tmp}/somefile/gen.jsonl"],
        2,
        ["--output", "somefile is a file", "cannot be written under it"],
        a_file,
        output_dir="somefile/out",
    ),
]


def _id(case: Case) -> str:
    return case.id


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_hostile_file(case: Case, tmp_path: Path, fixtures: dict) -> None:
    run_case(case, tmp_path, fixtures)


# -- what the table cannot say ------------------------------------------------------------------------------


def test_fresh_discriminator_goes_on_past_an_unreadable_one(tmp_path, runs, tiny_model_dir):
    """``--fresh-discriminator``: a checkpoint whose discriminator cannot be read resumes with a new one
    (warmed up), as one without a discriminator does; the generator comes from the checkpoint."""
    from gan_rl.cli.recipe import parse_recipe
    from gan_rl.cli.train import run

    shutil.copytree(runs["ppo"], tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint-2"
    with (checkpoint / "discriminator" / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    recipe = parse_recipe(base_recipe(tiny_model_dir, tmp_path / "out", trainer={"max_steps": 3}))
    summary = run(
        "ppo", recipe, resume=str(checkpoint), num_samples=0, progress=False, fresh_discriminator=True
    )
    assert summary.steps == 3 and summary.restored == {} and summary.warmup_stats


def test_a_loader_error_while_resuming_names_the_file(tmp_path):
    """The backstop (should a file change after the check): safetensors' own error, the file taken from
    the traceback."""
    from safetensors.torch import load_file, save_file

    from gan_rl.cli.outputs import unreadable_file_error

    weights = tmp_path / "checkpoint-2" / "model.safetensors"
    weights.parent.mkdir()
    save_file({"w": torch.zeros(4)}, str(weights))
    with weights.open("r+b") as f:
        f.truncate(100)
    try:
        load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - the loader's own error, whatever its type
        error = unreadable_file_error(exc)
    assert error is not None and str(weights) in str(error) and "--resume" in str(error)
    assert unreadable_file_error(ValueError("something else")) is None


def test_policy_guard_names_a_non_finite_weight_and_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from gan_rl.errors import TrainingError
    from gan_rl.trainer.callback import PolicyGuard

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    guard = PolicyGuard()
    guard.check_weights(model, 1)  # finite: nothing
    assert guard.largest_weight is not None and guard.largest_weight > 0
    guard.attach(model)
    ids = torch.tensor([[1, 5, 6]])
    model(input_ids=ids)  # finite logits: nothing
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("inf")
    with pytest.raises(TrainingError, match="starting generator's logits are not finite"):
        model(input_ids=ids)
    with pytest.raises(TrainingError, match=r"step 7: its weight lm_head.weight is inf \(not finite\)"):
        guard.check_weights(model, 7)
    guard.detach()
    model(input_ids=ids)  # detached: no check


def test_policy_guard_check_is_one_pass_over_trainable_weights_only(tiny_model_dir):
    """Frozen weights (a LoRA base) are not read: a NaN there is not the run's doing."""
    from transformers import AutoModelForCausalLM

    from gan_rl.trainer.callback import PolicyGuard

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.model.embed_tokens.weight.requires_grad_(False)
    with torch.no_grad():
        model.model.embed_tokens.weight[0, 0] = float("nan")
    PolicyGuard().check_weights(model, 1)


def test_read_jsonl_refuses_a_prompt_that_is_not_text(tmp_path):
    from gan_rl.cli.evaluate import read_jsonl
    from gan_rl.errors import RecipeError

    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"prompt": ["a"], "generated": "x"}) + "\n")
    with pytest.raises(RecipeError, match=r"line 1, column 'prompt' is a list \(\[\"a\"\]\), not text"):
        read_jsonl(path, ["a"], [1.0])


def test_utf8_problem_finds_the_line_across_chunk_boundaries(tmp_path, monkeypatch):
    import gan_rl.cli.data as data

    monkeypatch.setattr(data, "UTF8_CHUNK", 3)  # every multi-byte character split between two reads
    path = tmp_path / "data.jsonl"
    path.write_bytes("é\nü\n€ ok\n".encode() + b"bad \xff\n")
    assert data.utf8_problem(path) == f"{path}:4: not UTF-8 text (byte 17, 0xff)"
    path.write_bytes("é\nü\n€ ok\n".encode())
    assert data.utf8_problem(path) is None
    path.write_bytes(b"ok\n" + "é".encode()[:1])  # cut inside a character at the end
    assert data.utf8_problem(path) == f"{path}:2: not UTF-8 text (byte 3, 0xc3)"


def test_a_torch_archive_cut_short_is_named(tmp_path):
    from gan_rl.utils.files import file_problem

    path = tmp_path / "optimizer.pt"
    torch.save({"state": torch.zeros(64)}, path)
    assert file_problem(path) is None
    assert zipfile.is_zipfile(path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    assert "truncated or corrupt" in file_problem(path)
