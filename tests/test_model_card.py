"""The model card's recipe section (training.release.recipes): figures come from the files, as written."""

from __future__ import annotations

import json

from training.release.recipes import recipe_section


def _decision(p: float, r: float, lf: float) -> dict:
    return {"confident": {"precision": p, "recall": r}, "confident_or_guess": {"precision": p, "recall": r},
            "label_free_confident": lf, "label_free_confident_or_guess": lf, "label_free": 4, "presence_auroc": 0.9}


def test_a_recipe_with_a_report_part_shows_it_per_set(tmp_path):
    evals = tmp_path / "eval"
    (evals / "report").mkdir(parents=True)
    voc = {"images": 12, "mAP": 0.912, "exact_match": 0.5, "masked": ["truck"], "decision": _decision(0.9, 0.8, 0.25)}
    per_set = {"/home/u/shared/data/voc07_train:all": voc,
               "openimages_train:all": {"images": 7, "mAP": 0.871, "exact_match": 0.4, "masked": [],
                                        "decision": _decision(0.7, 0.6, 0.0)}}
    report = {"roles": {"hd": {"tiling_on": {"mAP": 0.9, "per_set": per_set}}}}
    (evals / "report" / "report.json").write_text(json.dumps(report))
    text = "\n".join(recipe_section("lite-x", tmp_path, evals))
    assert "HD on the report part of every photo set" in text and "runs/lite-x/hd/splits.json" in text
    assert "| ../shared/data/voc07_train:all | hd | 12 | 91.2 | 50.0 | 90.0 | 80.0 |" in text  # not this machine's path
    assert "| openimages_train:all | hd | 7 | 87.1 |" in text and "| truck |" in text
    (evals / "report" / "report.json").unlink()  # without a report part, no such section
    assert "report part" not in "\n".join(recipe_section("lite-x", tmp_path, evals))


def test_an_adaptation_without_label_free_photos_says_so(tmp_path):
    (tmp_path / "hd").mkdir()
    cfg = {"adapt": {"freeze_stages": 5, "distill_unlabelled": True, "lr": 1e-4, "negatives": False},
           "known_by_set": {"/d/voc07_train": ["dog"]}, "input_size": [192, 192], "base_run": "/x/runs/a/std"}
    (tmp_path / "hd" / "config.json").write_text(json.dumps(cfg))
    text = "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))
    assert "left out of fitting (`--no-negatives`)" in text and "runs/a/std" in text
    cfg["adapt"]["negatives"] = True
    (tmp_path / "hd" / "config.json").write_text(json.dumps(cfg))
    assert "--no-negatives" not in "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))


def test_a_continued_adaptation_names_the_run_it_continued(tmp_path):
    (tmp_path / "hd").mkdir()
    cfg = {"adapt": {"freeze_stages": 5, "distill_unlabelled": True, "lr": 1e-4, "schedule": "cosine",
                     "init_from": "/x/runs/lite-y/hd"},
           "known_by_set": {"/d/voc07_train": ["dog"]}, "input_size": [224, 224], "base_run": "/x/runs/a/std"}
    (tmp_path / "hd" / "config.json").write_text(json.dumps(cfg))
    text = "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))
    assert "warm-up then cosine decay to 0, continued from the best epoch of the adaptation `runs/lite-y/hd`" in text
    del cfg["adapt"]["init_from"], cfg["adapt"]["schedule"]
    (tmp_path / "hd" / "config.json").write_text(json.dumps(cfg))
    text = "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))
    assert "continued from" not in text and "cosine" not in text


def test_a_resumed_run_whose_early_parts_were_not_timed_says_so(tmp_path):
    (tmp_path / "std").mkdir()
    cfg = {"arch": "efficientnet-lite0", "input_size": [128, 128], "lr": 3e-4, "weights": "imagenet"}
    (tmp_path / "std" / "config.json").write_text(json.dumps(cfg))
    # 3 of 16 epochs timed: 54 images/s x 2500 s = 135,000 images = 3 x 45,000
    std = {"n_train": 45000, "n_val": 5000, "epochs_run": 16, "best_epoch": 15, "wall_time_s": 2600.0,
           "train_time_s": 2500.0, "images_per_s": 54.0}
    (tmp_path / "std" / "metrics.json").write_text(json.dumps(std))
    (tmp_path / "stages.json").write_text(json.dumps({"train_standard": {"command": "sixview train", "wall_s": 2600}}))
    text = "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))
    assert text.count("its last 3 epochs; the earlier parts of the resumed run were not timed") == 2  # text, table
    std.update(train_time_s=13333.0, wall_time_s=14000.0)  # every epoch timed
    (tmp_path / "std" / "metrics.json").write_text(json.dumps(std))
    assert "not timed" not in "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))


def test_the_comparison_shows_the_input_each_model_serves_at(tmp_path, colour_models):
    from training.release.recipes import compare_rows

    for part, size in (("std", [32, 32]), ("hd", [48, 48])):  # what the runs trained at
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps({"input_size": size}))
    assert "| 32x32 / 48x48 |" in compare_rows("lite-x", tmp_path, tmp_path / "eval", {})
    (tmp_path / "calibrated").mkdir()  # exported models: HD at 64 px (above its training size), Standard at 32
    for role in ("standard", "hd"):
        (tmp_path / "calibrated" / f"{role}.onnx").write_bytes((colour_models / f"{role}.onnx").read_bytes())
    assert "| 32x32 / 64x64 |" in compare_rows("lite-x", tmp_path, tmp_path / "eval", {})
    (tmp_path / "std" / "config.json").unlink()  # (a recipe without its own Standard run)
    (tmp_path / "hd" / "config.json").write_text(json.dumps({  # and the recipe's text says so
        "input_size": [48, 48], "adapt": {"lr": 1e-4}, "known_by_set": {"/d/voc07_train": ["dog"]}}))
    assert "Input 48x48 (served at 64x64" in "\n".join(recipe_section("lite-x", tmp_path, tmp_path / "eval"))


def test_the_card_keeps_the_hand_written_page_and_shows_the_open_world_table(tmp_path):
    from click.testing import CliRunner

    from training.release.model_card import CARD_HEADING, main

    models = tmp_path / "models"
    (models / "eval").mkdir(parents=True)
    (models / "README.md").write_text(f"# models/\n\nWritten by hand.\n\n{CARD_HEADING}\n\nold card\n")
    (models / "eval" / "open_world.md").write_text("| source | photos |\n| --- | --- |\n| animals_train | 40 |\n")
    result = CliRunner().invoke(main, ["--runs", str(tmp_path / "runs"), "--models", str(models)])
    assert result.exit_code == 0, result.output
    text = (models / "README.md").read_text()
    assert text.startswith("# models/\n\nWritten by hand.\n\n" + CARD_HEADING) and "old card" not in text
    assert "## Open world" in text and "| animals_train | 40 |" in text
