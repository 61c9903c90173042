"""ImageNet-1k synsets (standard index order) mapped onto the ten classes, and what counts as "other".

The vehicle policy is the one detectors follow (COCO): cars, taxis, jeeps, station wagons,
minivans, limousines and sports cars are `automobile`; pickups, vans and lorries (moving,
police and tow trucks, fire engines, garbage and trailer trucks) are `truck`; buses,
trams, trains, tractors, forklifts, motorbikes and go-karts are neither.

`other` is every synset that is none of the ten classes and not `AMBIGUOUS`: antelopes,
which the teacher calls what photos of deer look like (ImageNet has no deer), and the
vehicles that some photo sets label as a car or a truck and others as neither.
"""

from __future__ import annotations

import numpy as np

N_SYNSETS = 1000


def _spans(*parts: int | tuple[int, int]) -> list[int]:
    out: list[int] = []
    for p in parts:
        out.extend(range(p[0], p[1] + 1) if isinstance(p, tuple) else [p])
    return out


CLASS_SYNSETS: dict[str, list[int]] = {
    "airplane": _spans(404, 895),  # airliner, warplane
    "automobile": _spans(436, 468, 511, 609, 627, 656, 661, 751, 817),
    "bird": _spans((7, 24), (80, 100), (127, 146)),
    "cat": _spans((281, 285)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "deer": [],  # ImageNet has no deer synset
    "dog": _spans((151, 268)),
    "frog": _spans((30, 32)),
    "horse": _spans(339),  # sorrel
    "ship": _spans(403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914),
    "truck": _spans(555, 569, 675, 717, 734, 864, 867),
}
AMBIGUOUS: list[int] = _spans((348, 353), 405, 407, 603, 654, 757, 908)  # antelopes; airship, ambulance, horse cart,
# minibus, recreational vehicle, wing


def other_mask(classes: list[str]) -> np.ndarray:
    """(1000,) bool: the synsets that are none of `classes` and not ambiguous."""
    mask = np.ones(N_SYNSETS, bool)
    for c in classes:
        mask[CLASS_SYNSETS.get(c, [])] = False
    mask[AMBIGUOUS] = False
    return mask


def other_mass(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """(...,) the probability mass on `other_mask` synsets of (..., 1000) ImageNet probabilities."""
    return np.asarray(probs, np.float64)[..., other_mask(classes)].sum(axis=-1)
