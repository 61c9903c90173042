"""`make models`: the whole pipeline on ../shared/data, one resumable stage at a time.

Each recipe (a backbone) is built in `runs/<recipe>/`; each stage is a `sixview`
command (the same ones a user runs); a stage whose output exists is skipped, an
interrupted training or adaptation is resumed. Every command and its wall time
is appended to `runs/<recipe>/stages.json`, which the model card quotes.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from training.release.recipe_book import ADAPT_SETS, DEFAULT_SHIP, OPEN_SETS, RECIPES
from training.release.ship_rule import misses


def _shown(cmd: list[str]) -> str:
    """The command as a user types it (`sixview ...`, not the venv's path)."""
    return shlex.join([Path(cmd[0]).name, *cmd[1:]])


def _run_wall(run: Path) -> float | None:
    """A finished training or adaptation run's own wall time, every resumed part of it included."""
    metrics = run / "metrics.json"
    return json.loads(metrics.read_text()).get("wall_time_s") if metrics.exists() else None


def _recorded(stages: Path) -> dict:
    """The stages recorded so far (stage -> command, wall_s, finished)."""
    return json.loads(stages.read_text()) if stages.exists() else {}


def _record(stages: Path, name: str, cmd: list[str], wall_s: float, finished: str) -> None:
    done = _recorded(stages)
    done[name] = {"command": _shown(cmd), "wall_s": round(wall_s, 1), "finished": finished}
    stages.write_text(json.dumps(done, indent=2))


def _run(cmd: list[str], log: Path, stages: Path, name: str, run: Path | None = None) -> None:
    """Runs one stage and records it; with `run` (a training or adaptation folder), the wall time recorded is
    the run's own, so a run resumed across interruptions counts every part."""
    click.echo(f"[make models] {name}: {_shown(cmd)}", err=True)
    t0 = time.time()
    with log.open("a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        raise click.ClickException(f"stage {name} failed (exit {rc}); see {log}; rerun `make models` to resume")
    wall = (_run_wall(run) if run else None) or time.time() - t0
    _record(stages, name, cmd, wall, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _resumable(out: Path, cmd: list[str], stages: Path, name: str) -> list[str] | None:
    """The command, with --resume if a run was interrupted; None if it finished
    (then recorded in `stages` from the run's own metrics if it is not there yet)."""
    if (out / "metrics.json").exists():
        if name not in _recorded(stages):
            _record(stages, name, cmd, _run_wall(out) or 0.0, "before this make models")
        return None
    return [*cmd, "--resume"] if (out / "last.keras").exists() else cmd


def _reuse(root: Path, part: str, other: str) -> Path:
    """`root/part` as a link to another recipe's run of that part (`../<other>/<part>`)."""
    path = root / part
    if not path.exists():
        path.symlink_to(Path("..") / other / part, target_is_directory=True)
    return path


def build_standard(name: str, sv: list[str], data: Path, runs: Path, log: Path) -> Path:
    """A recipe's Standard run in `runs/<name>/std/` (trained, or another recipe's, built first); its folder."""
    recipe, root = RECIPES[name], runs / name
    root.mkdir(parents=True, exist_ok=True)
    if "std_from" in recipe:  # another recipe's Standard run
        build_standard(recipe["std_from"][0], sv, data, runs, log)
        return _reuse(root, "std", recipe["std_from"][0])
    std, init = root / "std", []
    if "init_from" in recipe:  # start from another recipe's Standard checkpoint
        build_standard(recipe["init_from"][0], sv, data, runs, log)
        init = ["--weights", str(runs / recipe["init_from"][0] / "std" / "best.keras")]
    stages = root / "stages.json"
    cmd = _resumable(std, [*sv, "train", "--data", str(data / "cifar10-jpg.tar.gz"), *recipe["train"], *init,
                           "--out", str(std)], stages, "train_standard")
    if cmd:
        _run(cmd, log, stages, "train_standard", std)
    return std


def build_hd(name: str, sv: list[str], data: Path, runs: Path, log: Path) -> Path:
    """A recipe's HD run in `runs/<name>/hd/` (adapted from its Standard run, or another recipe's HD run, built
    first); its folder."""
    recipe, root = RECIPES[name], runs / name
    if "hd_from" in recipe:  # another recipe's HD run
        build_hd(recipe["hd_from"][0], sv, data, runs, log)
        return _reuse(root, "hd", recipe["hd_from"][0])
    std, hd, init = build_standard(name, sv, data, runs, log), root / "hd", []
    if "hd_init_from" in recipe:  # continue another recipe's adaptation (same sets, same splits)
        init = ["--init-from", str(build_hd(recipe["hd_init_from"][0], sv, data, runs, log))]
    sets = [a for s in ADAPT_SETS if (data / s).is_dir() for a in ("--data", str(data / s))]
    stages = root / "stages.json"
    cmd = _resumable(hd, [*sv, "adapt", "--base", str(std), *sets, "--holdout", "0.2", *recipe["adapt"], *init,
                          "--out", str(hd)], stages, "adapt_hd")
    if cmd:
        _run(cmd, log, stages, "adapt_hd", hd)
    return hd


def build_open(name: str, sv: list[str], data: Path, runs: Path, log: Path) -> tuple[Path, Path, Path]:
    """A recipe built on another's calibrated models (`open_from`): its HD with an open-world head fitted
    (`sixview openworld`, in `runs/<name>/open/`), its Standard as it was; returns (the raw models' folder,
    the run that split the photos, the calibrated folder, holding the Standard already)."""
    root, recipe = runs / name, RECIPES[name]
    src, stages = build_recipe(recipe["open_from"][0], sv, data, runs, log), root / "stages.json"
    run, cal = root / "open", root / "calibrated"
    root.mkdir(parents=True, exist_ok=True)
    if not (run / "onnx" / "hd.onnx").exists():
        sets = [a for s in (*ADAPT_SETS, *OPEN_SETS) if (data / s).is_dir() for a in ("--data", str(data / s))]
        _run([*sv, "openworld", "--hd", str(src / "hd.onnx"), *sets, *recipe.get("openworld", []),
              "--out", str(run)], log, stages, "openworld")
    cal.mkdir(exist_ok=True)
    for f in src.glob("standard*.onnx"):
        if not (cal / f.name).exists():
            shutil.copy2(f, cal / f.name)
    return run / "onnx", run, cal


def open_world_table(name: str, sv: list[str], runs: Path, log: Path) -> None:
    """The base recipe's models on the open-world run's report parts, then the before/after table of both
    (report parts and voc07_val) in `runs/<name>/eval/open_world.md`."""
    root, base = runs / name, runs / RECIPES[name]["open_from"][0]
    before, stages = root / "eval" / "report_before", root / "stages.json"
    if not (before / "report.json").exists():
        _run([*sv, "eval", str(base / "calibrated"), "--report-of", str(root / "open"), "--engines", "hd",
              "--out", str(before)], log, stages, "eval_report_before")
    if not (root / "eval" / "open_world.md").exists():
        _run([sys.executable, "-m", "training.openworld.table", "--pair", str(before), str(root / "eval" / "report"),
              "--pair", str(base / "eval" / "voc07_val"), str(root / "eval" / "voc07_val"),
              "--out", str(root / "eval" / "open_world.md")], log, stages, "open_world_table")


def build_recipe(name: str, sv: list[str], data: Path, runs: Path, log: Path) -> Path:
    """Train, adapt, convert, calibrate and evaluate one recipe under `runs/<name>/`;
    return its folder of calibrated ONNX models (evaluations in `runs/<name>/eval/`)."""
    root, stages = runs / name, runs / name / "stages.json"
    if "open_from" in RECIPES[name]:
        raw, hd, cal = build_open(name, sv, data, runs, log)
        std = None
    else:
        std, hd = build_standard(name, sv, data, runs, log), build_hd(name, sv, data, runs, log)
        raw, cal = root / "onnx", root / "calibrated"
    cifar, voc_val = data / "cifar10-jpg.tar.gz", data / "voc07_val"
    for role, run in (("standard", std), ("hd", hd)) if std else ():
        if not (raw / f"{role}.onnx").exists():
            _run([*sv, "convert", str(run), "--role", role, *RECIPES[name].get(f"convert_{role}", []),
                  "--out", str(raw)], log, stages, f"convert_{role}")
    # thresholds: each model on the photos its run held out (Standard: CIFAR-10 training images; HD: a fifth
    # of every photo set, listed in its splits.json), never on a set its figures are reported on; HD's
    # view merge (a small logistic merge of the six views, benchmarks/merges.py) is fitted there too
    if not (cal / "standard.onnx").exists():
        _run([*sv, "eval", str(raw), "--heldout-of", str(std), "--engines", "standard", "--calibrate",
              "--calibrated-out", str(cal), "--out", str(root / "eval_calibrate_standard")], log, stages,
             "calibrate_standard")
    if not (cal / "hd.onnx").exists():
        _run([*sv, "eval", str(raw), "--heldout-of", str(hd), "--engines", "hd", "--calibrate", "--fit-merge",
              "--calibrated-out", str(cal), "--out", str(root / "eval_calibrate_hd")], log, stages, "calibrate_hd")
    evals = [("voc07_val", ["--data", str(voc_val)]), ("cifar10_test", ["--data", str(cifar)])]
    hd_config = hd / "config.json"  # an adaptation with a report part (its own or a reused run's): figures on
    if std is None or hd_config.is_file() and json.loads(hd_config.read_text()).get("n_report"):  # photos that
        # chose nothing (an open-world run sets a part of every set aside)
        evals.append(("report", ["--report-of", str(hd), "--engines", "hd"]))
    for ev, extra in evals:
        if not (root / "eval" / ev / "report.json").exists():
            _run([*sv, "eval", str(cal), *extra, "--out", str(root / "eval" / ev)], log, stages, f"eval_{ev}")
    if std is None:
        open_world_table(name, sv, runs, log)
    return cal


def faster_ship(ship: str, built: dict[str, Path], runs: Path, log: Path) -> str:
    """The recipe to ship: a built recipe `faster_than` `ship` whose comparison with it on photos that chose
    nothing (`runs/<recipe>/eval/vs_shipped.md`) misses nothing (`ship_rule.misses`), else `ship`."""
    for name in built:
        if RECIPES[name].get("faster_than") != [ship]:
            continue
        ours, theirs, table = runs / name / "eval", runs / ship / "eval", runs / name / "eval" / "vs_shipped.md"
        if not table.exists():
            _run([sys.executable, "-m", "training.openworld.table", "--pair", str(theirs / "report"),
                  str(ours / "report"), "--pair", str(theirs / "voc07_val"), str(ours / "voc07_val"),
                  "--out", str(table)], log, runs / name / "stages.json", "vs_shipped")
        missed = misses(json.loads(table.with_suffix(".json").read_text()))
        if not missed:
            click.echo(f"[make models] {name} is as accurate as {ship} on photos that chose nothing: shipping it",
                       err=True)
            return name
        click.echo(f"[make models] {name} not shipped, against {ship}: {'; '.join(missed)}", err=True)
    return ship


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/data"))
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"))
@click.option("--recipes", default=",".join(RECIPES), show_default=True,
              help="Comma-separated recipes to build (each in runs/<name>/).")
@click.option("--ship", type=click.Choice(list(RECIPES)), default=DEFAULT_SHIP, show_default=True,
              help="Whose models go into MODELS (each model chosen on the images its run held out, within the "
                   "six-view frame budget; the model card compares them); a built recipe faster than it replaces it "
                   "only if it is as accurate on photos that chose nothing (training/release/ship_rule.py).")
def main(data: Path, runs: Path, models: Path, recipes: str, ship: str) -> None:
    """Per recipe (a backbone and how its models are made): train Standard on CIFAR-10, adapt HD on the
    real-photo sets, convert, calibrate on held-out photos, evaluate on voc07_val and CIFAR-10 test; then
    ship one recipe's models (and evaluations) into MODELS."""
    sv = [str(Path(sys.executable).with_name("sixview"))]
    names = [r.strip() for r in recipes.split(",") if r.strip()]
    unknown = [r for r in names if r not in RECIPES]
    if unknown:
        raise click.BadParameter(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}",
                                 param_hint="--recipes")
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "make_models.log"
    built = {name: build_recipe(name, sv, data, runs, log) for name in dict.fromkeys([*names, ship])}
    ship = faster_ship(ship, built, runs, log)
    models.mkdir(parents=True, exist_ok=True)
    # the IRs quantized from the old files and the gates measured on them go too (`make quantize`, `make gate`)
    for old in [*models.glob("*.onnx"), *models.glob("*.int8-ov.*"), *models.glob("*.gates.json")]:
        old.unlink()
    for f in sorted(built[ship].glob("*.onnx")):
        shutil.copy2(f, models / f.name)
    for name in built:  # every backbone's evaluations, for the model card's comparison
        shutil.copytree(runs / name / "eval", models / "eval" / name, dirs_exist_ok=True)
    shutil.copytree(runs / ship / "eval", models / "eval", dirs_exist_ok=True)
    click.echo(f"[make models] done: {models} holds the {ship} models; stages and wall times in "
               f"{runs}/<recipe>/stages.json", err=True)


if __name__ == "__main__":
    main()
