"""`sixview scan --ray`: the driver (`scan`), what runs on Ray's workers (`work`), the block files (`blocks`).

Imported only with `--ray` (the `ray` extra: ray[data], pyarrow)."""
