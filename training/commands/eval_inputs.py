"""`sixview eval`'s checks of its inputs: missing files, label names that are not classes, failed images."""

from __future__ import annotations

import sys

import click

from edge.engine import Engine
from training.data.datasets import DataSource, norm_class
from training.eval.sets import LabelledSet

EXAMPLES = 5  # ids (or names) shown per problem on stderr and in the report


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _examples(pairs: list, more: int) -> str:
    return ", ".join(f"{i} ({why})" for i, why in pairs[:EXAMPLES]) + (f", and {more - EXAMPLES} more"
                                                                        if more > EXAMPLES else "")


def check_inputs(sources: list[DataSource], sets: dict[str, LabelledSet], engine: Engine, allow_missing: bool,
                 ignore: tuple[str, ...], ignore_unknown: bool) -> dict:
    """Say on stderr which listed files are missing and which label names are not classes of their
    set; exit 1 (before scoring) unless allowed or ignored. Returns the report's `inputs` section."""
    first = next(iter(sets.values()))
    model_classes = {c for role in sets for c in engine.model(role).meta.classes}
    vocabularies = [set(src.classes) if src.declared else model_classes for src in sources]
    names = {norm_class(x) for v in ignore for x in v.split(",") if x.strip()}
    declared = [src.declared for src in sources]
    if names & set.intersection(*vocabularies):  # a class of every set: nowhere a label name to ignore
        name = sorted(names & set.intersection(*vocabularies))[0]
        of = ("this set" if len(sources) == 1 else "every set") if all(declared) else \
            "the models (this set has no classes.txt)" if len(sources) == 1 else "every set (or the models)"
        raise click.UsageError(f"--ignore-class {name}: {name} is a class of {of}; --ignore-class is for label "
                               "names that are not (--unlabelled-classes leaves a class out of scoring)")
    unknown: dict[str, list[str]] = {}
    for ds in sets.values():
        for c, ids in ds.unknown.items():
            unknown.setdefault(c, ids)
    for name in sorted(names - set(unknown)):
        click.echo(f"note: --ignore-class {name}: no label of this set uses it", err=True)
    ignored = {c: ids for c, ids in unknown.items() if ignore_unknown or c in names}
    left = {c: ids for c, ids in unknown.items() if c not in ignored}
    stop = False
    if first.missing:
        verdict = "left out (--allow-missing)" if allow_missing else "nothing scored"
        level = "warning" if allow_missing else "error"
        click.echo(f"{level}: {len(first.missing)} of {_n(first.listed, 'listed image')} missing or unreadable, "
                   f"{verdict}: {_examples(first.missing, len(first.missing))}", err=True)
        stop = not allow_missing
    the = "the" if len(sources) == 1 else "its"
    what = (f"not in {the} set's classes.txt" if all(declared) else
            f"not a class of the models, and {the} set has no classes.txt" if not any(declared) else
            "not in its set's classes.txt (or, for a set without one, not a class of the models)")
    if ignored:
        click.echo(f"warning: ignored {_n(len(ignored), 'label name')} ({what}): "
                   + ", ".join(f"{c} ({_n(len(ids), 'image')})" for c, ids in ignored.items()), err=True)
    if left:
        pairs = [(c, f"{_n(len(ids), 'image')}, e.g. {ids[0]}") for c, ids in left.items()]
        click.echo(f"error: {_n(len(left), 'label name')} {what}, nothing scored: {_examples(pairs, len(pairs))}",
                   err=True)
        stop = True
    if stop:
        hints = (["--allow-missing scores the rest"] if first.missing and not allow_missing else []) + (
            ["--ignore-class NAME (or --ignore-unknown-classes) drops such labels"
             + (", or add the names to classes.txt" if any(declared) else "")] if left else [])
        click.echo("; ".join(hints), err=True)
        sys.exit(1)
    unscored = list(dict.fromkeys(c for src in sources if src.declared for c in src.classes if c not in model_classes))
    return {"listed": first.listed, "missing": len(first.missing), "missing_examples": first.missing[:EXAMPLES],
            "allow_missing": allow_missing, "failed": 0, "failed_examples": [],
            "ignored_labels": {c: len(ids) for c, ids in ignored.items()},
            "unscored_classes": unscored}


def report_failed(inputs: dict, allow_missing: bool) -> bool:
    """Say on stderr which images failed to read or decode; True when that makes eval exit 1."""
    if not inputs["failed"]:
        return False
    verdict = "left out of the metrics (--allow-missing)" if allow_missing else \
        "counted as failed; the report is written, exit 1 (--allow-missing accepts them)"
    level = "warning" if allow_missing else "error"
    click.echo(f"{level}: {inputs['failed']} of {_n(inputs['listed'], 'listed image')} could not be read or "
               f"decoded, {verdict}: {_examples(inputs['failed_examples'], inputs['failed'])}", err=True)
    return not allow_missing
