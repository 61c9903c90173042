"""Training runs: `train` (Standard), `adapt` (HD), the run folder they write and read back,
tracking and plots."""
