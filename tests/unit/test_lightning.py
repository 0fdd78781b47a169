from __future__ import annotations

import os

import pytest

from engine.beam.terms import Atom
from engine.lightning import (
    LightningError,
    bucket_top,
    changeset_errors,
    resolve_cookie,
    timing_from_collector,
)


def test_changeset_errors_read_like_ectos():
    changeset = {
        Atom("__struct__"): Atom("Elixir.Ecto.Changeset"),
        Atom("errors"): [
            (Atom("name"), (b"has already been taken", [])),
            (
                Atom("password"),
                (b"should be at least %{count} character(s)", [(Atom("count"), 12)]),
            ),
        ],
    }
    assert changeset_errors(changeset) == (
        "name has already been taken; password should be at least 12 character(s)"
    )


def test_collector_buckets_become_upper_bounds_and_percentiles():
    summary = {
        Atom("request"): {
            Atom("count"): 100,
            Atom("sum"): 100 * 1500,
            Atom("buckets"): [(999, 50), (2000, 50)],
        }
    }
    timing = timing_from_collector(summary)
    e = timing.events["request"]
    assert e.count == 100 and e.mean_us == 1500.0
    assert e.p50_us == 999
    assert 2009 <= e.p99_us <= 2011  # 2000..2009 bucket, read as its top
    assert (e.min_us, e.max_us) == (999, 2009)
    assert bucket_top(999) == 999 and bucket_top(1230) == 1239 and bucket_top(45600) == 45699


def test_plug_overhead_is_the_difference_of_means():
    def event(mean):
        return {Atom("count"): 1, Atom("sum"): mean, Atom("buckets"): [(mean, 1)]}

    timing = timing_from_collector(
        {
            Atom("request"): event(500),
            Atom("fetch_channel"): event(100),
            Atom("upstream"): event(300),
        }
    )
    assert timing.plug_overhead_mean_us == 100.0


def test_cookie_file_is_read_and_loose_permissions_warned(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(LightningError) as err:
        resolve_cookie(None)
    assert err.value.code == 2
    cookie = tmp_path / ".erlang.cookie"
    cookie.write_text("from-file\n")
    os.chmod(cookie, 0o644)
    assert resolve_cookie(None) == "from-file"
    assert "readable by others" in capsys.readouterr().err
    os.chmod(cookie, 0o400)
    assert resolve_cookie(None) == "from-file"
    assert capsys.readouterr().err == ""
    assert resolve_cookie("given") == "given"
