"""`make models`: the stage plans of recipes that reuse another recipe's Standard or HD run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from training.release import make_models as mm


def _making_files(ran: list[tuple[str, list[str]]]):
    """A stand-in for `_run`: every stage "succeeds" by making the file the next one looks for."""

    def fake_run(cmd, log, stages, name, run=None):
        ran.append((name, cmd))
        out = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else None
        if name in ("train_standard", "adapt_hd"):
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"wall_time_s": 1.0}))
            (out / "config.json").write_text(json.dumps({"n_report": 3 if "--report" in cmd else 0}))
        elif name.startswith("convert_"):
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name.removeprefix('convert_')}.onnx").write_text("")
        elif name == "openworld":
            (out / "onnx").mkdir(parents=True, exist_ok=True)
            (out / "onnx" / "hd.onnx").write_text("")
        elif name.startswith("calibrate_"):
            cal = Path(cmd[cmd.index("--calibrated-out") + 1])
            cal.mkdir(parents=True, exist_ok=True)
            (cal / f"{name.removeprefix('calibrate_')}.onnx").write_text("")
        elif name == "open_world_table":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text("{}")

    return fake_run


def test_a_recipe_reuses_another_recipes_standard_run(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", _making_files(ran))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": ["--epochs", "1"]})
    monkeypatch.setitem(mm.RECIPES, "base-big", {"std_from": ["base"], "adapt": ["--input-size", "192"]})
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "voc07_train").mkdir(parents=True)
    mm.build_recipe("base-big", ["sixview"], data, runs, runs / "log")
    names = [n for n, _ in ran]
    assert names.count("train_standard") == 1  # only the base recipe trains Standard
    assert (runs / "base-big" / "std").resolve() == (runs / "base" / "std").resolve()
    adapt = [c for n, c in ran if n == "adapt_hd"][-1]
    assert adapt[adapt.index("--base") + 1] == str(runs / "base-big" / "std") and "192" in adapt
    assert (runs / "base-big" / "calibrated" / "hd.onnx").exists()
    ran.clear()
    mm.build_recipe("base-big", ["sixview"], data, runs, runs / "log")  # everything exists: nothing runs again
    assert ran == []


def test_a_recipe_starts_from_another_recipes_checkpoint(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", lambda cmd, log, stages, name, run=None: ran.append((name, cmd)))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": []})
    monkeypatch.setitem(mm.RECIPES, "base-ft", {"init_from": ["base"], "train": ["--arch", "x"], "adapt": []})
    runs = tmp_path / "runs"
    mm.build_recipe("base-ft", ["sixview"], tmp_path, runs, runs / "log")  # (the fake stages make no files)
    trains = [c for n, c in ran if n == "train_standard"]
    assert "--weights" not in trains[0]  # the base recipe first, from its own weights
    assert trains[1][trains[1].index("--weights") + 1] == str(runs / "base" / "std" / "best.keras")


def test_a_recipe_reuses_another_recipes_hd_run(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", _making_files(ran))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": ["--epochs", "1"]})
    monkeypatch.setitem(mm.RECIPES, "base-ft", {"init_from": ["base"], "train": ["--arch", "x"],
                                                "hd_from": ["base"], "convert_hd": ["--input-size", "224"]})
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "voc07_train").mkdir(parents=True)
    mm.build_recipe("base-ft", ["sixview"], data, runs, runs / "log")
    names = [n for n, _ in ran]
    assert names.count("adapt_hd") == 1  # only the base recipe adapts
    # the base recipe's HD run is reused, not its conversions and evaluations
    assert names.count("convert_hd") == 1 and names.count("eval_voc07_val") == 1
    assert names.count("train_standard") == 2  # base, then base-ft from its checkpoint
    assert (runs / "base-ft" / "hd").resolve() == (runs / "base" / "hd").resolve()
    converts = {n: c for n, c in ran if n.startswith("convert_") and str(runs / "base-ft") in " ".join(c)}
    assert converts["convert_standard"][2] == str(runs / "base-ft" / "std")
    assert converts["convert_hd"][2] == str(runs / "base-ft" / "hd")
    # the recipe's own export options reach its HD conversion only, not the Standard's or the base recipe's
    assert converts["convert_hd"][converts["convert_hd"].index("--input-size") + 1] == "224"
    assert "--input-size" not in converts["convert_standard"]
    assert [c for n, c in ran if n == "convert_hd" and "--input-size" in c] == [converts["convert_hd"]]


def test_a_recipe_with_a_report_part_is_evaluated_on_it(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", _making_files(ran))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": ["--report", "0.1"]})
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "voc07_train").mkdir(parents=True)
    mm.build_recipe("base", ["sixview"], data, runs, runs / "log")
    cmd = dict(ran)["eval_report"]
    assert cmd[cmd.index("--report-of") + 1] == str(runs / "base" / "hd")
    assert "--calibrate" not in cmd and cmd[cmd.index("--out") + 1] == str(runs / "base" / "eval" / "report")
    monkeypatch.setitem(mm.RECIPES, "base-reused", {"std_from": ["base"], "hd_from": ["base"]})
    ran.clear()
    mm.build_recipe("base-reused", ["sixview"], data, runs, runs / "log")  # the reused HD run has the report part
    cmd = dict(ran)["eval_report"]
    assert cmd[cmd.index("--report-of") + 1] == str(runs / "base-reused" / "hd")
    monkeypatch.setitem(mm.RECIPES, "plain", {"std_from": ["base"], "adapt": ["--epochs", "1"]})
    ran.clear()
    mm.build_recipe("plain", ["sixview"], data, runs, runs / "log")
    assert "eval_report" not in dict(ran) and "adapt_hd" in dict(ran)


def test_a_recipe_continues_another_recipes_adaptation(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", _making_files(ran))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": ["--epochs", "1"]})
    monkeypatch.setitem(mm.RECIPES, "base-more", {"std_from": ["base"], "hd_init_from": ["base"],
                                                  "adapt": ["--epochs", "2", "--input-size", "224"]})
    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "voc07_train").mkdir(parents=True)
    mm.build_recipe("base-more", ["sixview"], data, runs, runs / "log")
    adapts = [c for n, c in ran if n == "adapt_hd"]
    assert len(adapts) == 2 and "--init-from" not in adapts[0]  # the base recipe's adaptation first
    more = adapts[1]
    assert more[more.index("--init-from") + 1] == str(runs / "base" / "hd")
    assert more[more.index("--out") + 1] == str(runs / "base-more" / "hd")  # a run of its own, not a link
    assert not (runs / "base-more" / "hd").is_symlink()


@pytest.mark.parametrize("name", list(mm.RECIPES))
def test_every_shipped_recipe_names_an_existing_standard(name):
    recipe = mm.RECIPES[name]
    if "open_from" in recipe:  # built on another recipe's models, which must be a recipe of its own
        assert recipe["open_from"][0] in mm.RECIPES and not {"train", "adapt", "std_from", "hd_from"} & set(recipe)
        return
    assert ("train" in recipe) != ("std_from" in recipe)
    assert ("adapt" in recipe) != ("hd_from" in recipe)
    for key in ("std_from", "init_from"):
        assert key not in recipe or "train" in mm.RECIPES[recipe[key][0]]
    for key in ("hd_from", "hd_init_from"):
        assert key not in recipe or "adapt" in mm.RECIPES[recipe[key][0]]
    assert "hd_init_from" not in recipe or "adapt" in recipe


def test_a_resumed_runs_stage_records_the_runs_own_wall_time(tmp_path):
    run, stages = tmp_path / "std", tmp_path / "stages.json"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"wall_time_s": 7200.0}))  # every part, interruptions aside
    mm._run([sys.executable, "-c", "pass"], tmp_path / "log", stages, "train_standard", run)
    mm._run([sys.executable, "-c", "pass"], tmp_path / "log", stages, "convert_standard")
    done = json.loads(stages.read_text())
    assert done["train_standard"]["wall_s"] == 7200.0  # not the seconds of the last part
    assert 0 <= done["convert_standard"]["wall_s"] < 60  # its own command's seconds


def test_an_open_world_recipe_fits_its_head_on_another_recipes_models(tmp_path, monkeypatch):
    ran: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(mm, "_run", _making_files(ran))
    monkeypatch.setitem(mm.RECIPES, "base", {"train": ["--arch", "x"], "adapt": ["--report", "0.1"]})
    monkeypatch.setitem(mm.RECIPES, "base-open", {"open_from": ["base"], "openworld": ["--fit-share", "x=0.5"]})
    data, runs = tmp_path / "data", tmp_path / "runs"
    for name in ("voc07_train", "animals_train"):
        (data / name).mkdir(parents=True)
    cal = mm.build_recipe("base-open", ["sixview"], data, runs, runs / "log")
    stages = dict(ran)
    fit = stages["openworld"]
    assert fit[fit.index("--hd") + 1] == str(runs / "base" / "calibrated" / "hd.onnx")
    assert [fit[i + 1] for i, a in enumerate(fit) if a == "--data"] == [str(data / "voc07_train"),
                                                                          str(data / "animals_train")]
    assert "--fit-share" in fit
    calibrate = stages["calibrate_hd"]  # the grafted HD calibrated on the photos its own splits hold out
    assert calibrate[2] == str(runs / "base-open" / "open" / "onnx")
    assert calibrate[calibrate.index("--heldout-of") + 1] == str(runs / "base-open" / "open")
    assert (cal / "standard.onnx").exists()  # the Standard model as the base recipe calibrated it
    report = stages["eval_report"]
    assert report[report.index("--report-of") + 1] == str(runs / "base-open" / "open")
    before = stages["eval_report_before"]  # the base models on the same report parts, for the table
    assert before[2] == str(runs / "base" / "calibrated")
    assert before[before.index("--report-of") + 1] == str(runs / "base-open" / "open")
    table = stages["open_world_table"]
    assert table[table.index("--out") + 1] == str(runs / "base-open" / "eval" / "open_world.md")
    ran.clear()
    mm.build_recipe("base-open", ["sixview"], data, runs, runs / "log")  # everything exists: nothing runs
    assert [n for n, _ in ran if n not in ("eval_voc07_val", "eval_cifar10_test", "eval_report")] == []


def _table(**after) -> dict:
    """A `training.openworld.table` comparison of one source: the shipped recipe's figures, then `after`'s."""
    before = {"mAP": 0.965, "label_free_labelled": 0.067, "precision": 0.936, "recall": 0.832}
    return {"sources": {"voc07_val": {"before": before, "after": {**before, **after}}}, "groups": {}}


def test_ship_rule_lets_through_only_what_is_as_accurate():
    from training.release.ship_rule import misses

    assert misses(_table()) == [] and misses(_table(mAP=0.961, precision=0.95)) == []  # within 0.5 point
    assert misses(_table(mAP=0.957)) == ["voc07_val: mAP 96.5 -> 95.7 (0.3 point past the 0.5 allowed)"]
    assert misses(_table(recall=0.816, label_free_labelled=0.08)) == [
        "voc07_val: label-free photos labelled 6.7 -> 8.0", "voc07_val: recall 83.2 -> 81.6"]
    assert misses(_table(label_free_labelled=None)) == []  # a set without label-free photos: not judged


@pytest.mark.parametrize(("after", "shipped"), [({}, "fast"), ({"recall": 0.80}, "base")])
def test_make_models_ships_a_faster_recipe_only_when_it_is_as_accurate(tmp_path, monkeypatch, after, shipped):
    ran: list[tuple[str, list[str]]] = []

    def fake_run(cmd, log, stages, name, run=None):
        ran.append((name, cmd))
        out = Path(cmd[cmd.index("--out") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(_table(**after)))

    monkeypatch.setattr(mm, "_run", fake_run)
    monkeypatch.setitem(mm.RECIPES, "base", {})
    monkeypatch.setitem(mm.RECIPES, "fast", {"faster_than": ["base"]})
    runs = tmp_path / "runs"
    built = {"base": runs / "base" / "calibrated", "fast": runs / "fast" / "calibrated"}
    assert mm.faster_ship("base", built, runs, runs / "log") == shipped
    (name, cmd), = ran
    assert name == "vs_shipped" and cmd[cmd.index("--pair") + 1] == str(runs / "base" / "eval" / "report")
    assert mm.faster_ship("fast", built, runs, runs / "log") == "fast"  # nothing is faster than it
