"""The JSONL and CSV sinks, and reading results back for --resume."""

from __future__ import annotations

import csv
import json

from edge.records import record
from edge.sinks import CsvSink, JsonlSink, done_paths


def ok(path: str, labels: list[str], scores: dict[str, float]) -> dict:
    rec = record("path", path, error=None)
    rec.update(engine="hd", labels=labels, scores=scores)
    return rec


def test_jsonl_lines_are_whole_and_flushed_as_written(tmp_path):
    out = tmp_path / "sub" / "r.jsonl"
    with JsonlSink(out) as sink:
        sink.write(ok("a é.jpg", ["dog"], {"dog": 0.9}))
        assert json.loads(out.read_text(encoding="utf-8"))["path"] == "a é.jpg"  # on disk before the close
        sink.write(record("path", "b.jpg", error="empty file"))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["error"] for x in lines] == [None, "empty file"]


def test_append_cuts_a_partial_line_and_resume_reads_successes_only(tmp_path):
    out = tmp_path / "r.jsonl"
    with JsonlSink(out) as sink:
        sink.write(ok("a.jpg", [], {}))
        sink.write(record("path", "bad.jpg", error="corrupt image header"))
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"path": "c.jpg", "lab')  # a run killed mid-write
    assert done_paths(out) == {"a.jpg"}
    with JsonlSink(out, append=True) as sink:
        sink.write(ok("c.jpg", ["cat"], {"cat": 0.7}))
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["path"] for r in recs] == ["a.jpg", "bad.jpg", "c.jpg"]
    assert done_paths(out) == {"a.jpg", "c.jpg"} and done_paths(tmp_path / "none.jsonl") == set()


def test_jsonl_dash_writes_stdout(capsys):
    with JsonlSink("-") as sink:
        sink.write(ok("a.jpg", ["dog"], {"dog": 0.5}))
    assert json.loads(capsys.readouterr().out)["labels"] == ["dog"]


def test_csv_has_one_score_column_per_class_and_quotes(tmp_path):
    out = tmp_path / "r.csv"
    with CsvSink(out, ["cat", "dog"]) as table:
        table.write(ok('odd, "name".jpg', ["dog", "cat"], {"cat": 0.6, "dog": 0.8}))
        table.write(record("path", "bad.jpg", error="not an image, sorry"))
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert rows[0] == ["path", "engine", "labels", "error", "cat", "dog"]
    assert rows[1] == ['odd, "name".jpg', "hd", "dog|cat", "", "0.6", "0.8"]
    assert rows[2] == ["bad.jpg", "", "", "not an image, sorry", "", ""]
