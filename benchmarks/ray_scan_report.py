"""The Markdown report and chart of `benchmarks.ray_scan`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._charts import save_figure, subplots
from benchmarks._common import machine_md, md_table

GOAL = 0.8
HEADLINE = (100_000_000, 100)  # images, workers: the figure docs/ray.md quotes


def hours(s: float) -> str:
    """Seconds as hours, minutes or seconds, whichever reads best."""
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def markdown(r: dict[str, Any]) -> str:
    """The report: the measured rates, then the cost model's curve and headline."""
    loc, ray_, m = r["local"], r["ray"], r["model"]
    rows = [["local scan", loc["images_per_s"], None, None, ", ".join(f"{x:.1f}" for x in loc["rounds"])],
            ["--ray (wall, actors starting)", ray_["images_per_s"], None, ray_["driver_cpu_ms_per_image"],
             ", ".join(f"{x:.1f}" for x in ray_["rounds"])],
            ["--ray (steady)", ray_["steady_images_per_s"], None, None,
             ", ".join(f"{x:.1f}" for x in ray_["steady_rounds"])]]
    rows[1][2], rows[2][2] = r["ratio_wall"], r["ratio_steady"]
    steady_met, wall_met = r["ratio_steady"] >= GOAL, r["ratio_wall"] >= GOAL
    met = "" if r["quick"] else (f" Goal {GOAL}x: steady rate {'met' if steady_met else 'NOT met'} "
                                 f"({r['ratio_steady']:.2f}x); the whole call {'met' if wall_met else 'not'} "
                                 f"({r['ratio_wall']:.2f}x: the actors' start counts in it).")
    curve = [[c["workers"], c["images_per_s"], hours(c["seconds"]), c["bound"], s3["images_per_s"],
              hours(s3["seconds"]), s3["bound"]] for c, s3 in zip(m["curve_local"], m["curve_s3"], strict=True)]
    head, h3 = m["headline_local"], m["headline_s3"]
    return (f"# `sixview scan --ray` against the local scan\n\n{machine_md(r['machine'])}\n"
            f"The machine was shared with other work during the run (load average {r['load_average']}): "
            "absolute rates are indicative; the ratios are measured in alternating rounds.\n\n"
            f"{r['images']} images from `{r['folder']}`, model `{r['settings']['models']}` on "
            f"{r['settings']['device']}, batch {r['settings']['batch']}; Ray {r['ray_version']} with "
            f"{r['settings']['actors']} actors, block size {r['settings']['block_size']}; median of "
            f"{r['settings']['rounds']} rounds.{met}\n\n"
            + md_table(["run", "images/s", "x local", "driver CPU ms/image", "rounds (images/s)"], rows) +
            f"\nRay steady rate from the first record to the last; the first record came "
            f"{ray_['first_record_s']:.1f} s after the call (actors starting, models loading).\n\n"
            f"## Cost model: N images on W workers like this machine\n\n"
            f"Per-worker rate {m['per_worker']:.1f} images/s (the steady `--ray` rate here). Driver: "
            f"{m['driver_ms']:.3f} CPU ms per image, measured with the real driver and workers that do nothing "
            f"({r['driver_alone']['images']:,} empty files: {r['driver_alone']['steady_images_per_s']:,.0f} "
            f"images/s on this machine, sharing its {r['machine']['cores']} cores with the workers), so one core "
            f"of driver tops out at {1e3 / m['driver_ms']:,.0f} images/s; "
            f"listing {m['list_rate_local']:,.0f} files/s (local, measured; pyarrow.fs "
            f"{m['list_rate_pyarrow']:,.0f}) or {m['list_rate_s3']:,.0f} keys/s (S3, assumed); block write "
            f"{m['block_ms']:.2f} ms per {r['settings']['block_size']} images (inside the driver's CPU); startup "
            f"{m['startup_s']:.0f} s.\n\n" +
            md_table(["workers", "images/s (local listing)", f"{m['images']:,} images", "bound",
                      "images/s (S3 listing)", f"{m['images']:,} images", "bound"], curve) +
            f"\n**{HEADLINE[0]:,} images on {HEADLINE[1]} workers**: {hours(head['seconds'])} with a local "
            f"listing ({head['bound']}-bound: listing {hours(head['listing_s'])}, processing "
            f"{hours(head['process_s'])}), {hours(h3['seconds'])} listing from S3 ({h3['bound']}-bound).\n")


def plot(r: dict[str, Any], path: Path) -> Path | None:
    """The cost model's images/s against workers (None without matplotlib)."""
    try:
        fig, ax = subplots(figsize=(7, 4.2))
    except ImportError:
        return None
    m = r["model"]
    ws = [c["workers"] for c in m["curve_local"]]
    ax.plot(ws, [c["images_per_s"] for c in m["curve_local"]], "o-", label=f"{m['images']:,} images, local listing")
    ax.plot(ws, [c["images_per_s"] for c in m["curve_s3"]], "s-", label=f"{m['images']:,} images, S3 listing")
    ax.plot(ws, [w * m["per_worker"] for w in ws], ":", label="workers alone")
    ax.axhline(1e3 / m["driver_ms"], ls="--", c="grey", label="driver ceiling")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("workers (each like this machine)")
    ax.set_ylabel("images/s over the whole scan")
    ax.set_title(f"sixview scan --ray cost model ({r['machine']['name']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)
