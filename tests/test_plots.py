"""Run charts: training curves from a CSVLogger history."""

import warnings

import pytest

pytest.importorskip("matplotlib")

from training.fit import plots  # noqa: E402

HEADER = "epoch,loss,val_loss,learning_rate\n"


@pytest.mark.parametrize(("rates", "scale"), [((1e-3, 5e-4), "log"), ((0.0, 0.0), "linear")])
def test_learning_rate_panel_is_log_only_for_positive_rates(tmp_path, monkeypatch, rates, scale):
    history = tmp_path / "history.csv"
    history.write_text(HEADER + "".join(f"{i},0.5,0.6,{r}\n" for i, r in enumerate(rates)))
    seen = {}
    real = plots.pyplot

    def spy():
        plt = real()
        subplots = plt.subplots

        def keep(*a, **k):
            fig, axes = subplots(*a, **k)
            seen["axes"] = axes
            return fig, axes

        monkeypatch.setattr(plt, "subplots", keep)
        return plt

    monkeypatch.setattr(plots, "pyplot", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero rate on a log axis warns
        out = plots.training_curves(history, tmp_path / "curves.png")
    assert out.stat().st_size > 0
    assert seen["axes"][3].get_yscale() == scale
    assert seen["axes"][0].get_yscale() == "linear"
