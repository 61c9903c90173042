"""The JSONL and CSV sinks, and reading results back for --resume."""

from __future__ import annotations

import csv
import json

from edge.records import FIELDS, record
from edge.sinks import CsvSink, JsonlSink, done_paths


def ok(path: str, labels: list[str], scores: dict[str, float], guess: dict | None = None,
       presence: float = 0.5) -> dict:
    rec = record("path", path, error=None)
    rec.update(engine="hd", labels=labels, guess=guess, presence=presence, scores=scores)
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
        table.write(ok("guess.jpg", [], {"cat": 0.1, "dog": 0.25}, {"label": "dog", "score": 0.25}, 0.325))
        table.write(ok("none.jpg", [], {"cat": 0.1, "dog": 0.05}, None, 0.145))
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert rows[0] == ["path", "engine", "labels", "guess", "presence", "error", "cat", "dog"]
    assert rows[1] == ['odd, "name".jpg', "hd", "dog|cat", "", "0.5", "", "0.6", "0.8"]
    assert rows[2] == ["bad.jpg", "", "", "", "", "not an image, sorry", "", ""]
    assert rows[3] == ["guess.jpg", "hd", "", "dog", "0.325", "", "0.1", "0.25"]
    assert rows[4] == ["none.jpg", "hd", "", "", "0.145", "", "0.1", "0.05"]


def test_error_records_have_no_guess_and_no_presence(tmp_path):
    err = record("frame", 7, error="cannot decode", width=4, height=3)
    assert list(err) == ["frame", *FIELDS[1:]] and FIELDS.index("guess") == FIELDS.index("labels") + 1
    assert FIELDS.index("presence") == FIELDS.index("guess") + 1
    assert err["labels"] == [] and err["guess"] is None and err["presence"] is None
    out = tmp_path / "r.jsonl"
    with JsonlSink(out) as sink:
        sink.write(err)
    back = json.loads(out.read_text())
    assert back["guess"] is None and back["presence"] is None


def test_csv_rebuilt_from_records_of_an_older_run_without_guess_or_presence(tmp_path):
    old = ok("old.jpg", ["cat"], {"cat": 0.9, "dog": 0.1})
    del old["guess"], old["presence"]
    with CsvSink(tmp_path / "r.csv", ["cat", "dog"], rows=[old]):
        pass
    rows = list(csv.reader((tmp_path / "r.csv").open(newline="")))
    assert rows[1] == ["old.jpg", "hd", "cat", "", "", "", "0.9", "0.1"]
