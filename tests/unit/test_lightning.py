from __future__ import annotations

import os

import pytest

from engine.beam.terms import Atom
from engine.lightning.session import LightningError, resolve_cookie
from engine.lightning.setup import changeset_errors, same_url
from engine.lightning.timing import bucket_top, timing_from_collector


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
        Atom("events"): {
            Atom("request"): {
                Atom("count"): 100,
                Atom("sum"): 100 * 1500,
                Atom("buckets"): [(999, 50), (2000, 50)],
            }
        },
        Atom("unresolved"): {},
    }
    timing = timing_from_collector(summary)
    e = timing.events["request"]
    assert e.count == 100 and e.mean_us == 1500.0
    assert e.p50_us == 999
    assert 2009 <= e.p99_us <= 2011  # 2000..2009 bucket, read as its top
    assert (e.min_us, e.max_us) == (999, 2009)
    assert bucket_top(999) == 999 and bucket_top(1230) == 1239 and bucket_top(45600) == 45699


def event(mean):
    return {Atom("count"): 1, Atom("sum"): mean, Atom("buckets"): [(mean, 1)]}


def test_plug_overhead_is_the_difference_of_means():
    timing = timing_from_collector(
        {
            Atom("events"): {
                Atom("request"): event(500),
                Atom("fetch_channel"): event(100),
                Atom("upstream"): event(300),
            },
            Atom("unresolved"): {},
        }
    )
    assert timing.plug_overhead_mean_us == 100.0
    assert timing.as_dict()["events_used"]["total"] == "request"
    assert timing.unresolved is None  # the seed's Lightning cannot tell


def test_todays_total_is_inbound_and_unresolved_requests_are_counted():
    # Today: inbound wraps the whole call; request (auth + forward) opens after
    # fetch_channel and holds upstream, so it is not the total.
    timing = timing_from_collector(
        {
            Atom("events"): {
                Atom("inbound"): event(700),
                Atom("request"): event(450),
                Atom("fetch_channel"): event(100),
                Atom("upstream"): event(300),
            },
            Atom("unresolved"): {Atom("unknown_channel"): 3, Atom("invalid_uuid"): 1},
        }
    )
    assert timing.plug_overhead_mean_us == 300.0  # 700 - 100 - 300
    data = timing.as_dict()
    assert data["events_used"] == {
        "total": "inbound",
        "db_lookup": "fetch_channel",
        "upstream": "upstream",
    }
    assert data["unresolved"] == {"unknown_channel": 3, "invalid_uuid": 1}


def test_destinations_compare_as_urls():
    assert same_url("http://localhost:4001", "http://LOCALHOST:4001/")
    assert same_url("http://example.com", "http://example.com:80")
    assert not same_url("http://localhost:4001", "http://127.0.0.1:4001")
    assert not same_url("http://localhost:4001", "http://localhost:4002")


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
