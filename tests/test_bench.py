# Tests of the benchmark runner: pure statistics, then runs against the simulator.
from __future__ import annotations

import json
import math
import sys
from typing import Any

import attrs
import httpx2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from holysheep_trio import bench, open_client
from holysheep_trio.bench import (
    DEFAULT_MODELS,
    BenchConfig,
    BenchReport,
    BenchRun,
    Distribution,
    ModelSummary,
    percentile,
    plotting_available,
    run_benchmark,
    streaming_rate,
    ttft_ecdf,
    write_plot,
)
from holysheep_trio.simulator import open_simulator

KEY = "sk-bench-test"

# ---- pure statistics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "expected"),
    [(50, 5), (95, 10), (100, 10), (10, 1), (1, 1), (51, 6)],
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], p) == expected


def test_percentile_of_few_values_is_an_observed_value() -> None:
    assert percentile([0.2], 95) == 0.2
    assert percentile([0.1, 0.9], 50) == 0.1
    assert percentile([0.1, 0.9], 95) == 0.9


@pytest.mark.parametrize("p", [0, -1, 101])
def test_percentile_rejects_bad_input(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], p)
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def test_distribution() -> None:
    dist = Distribution.of([3.0, 1.0, 2.0, 4.0])
    assert dist == Distribution(count=4, mean=2.5, min=1.0, max=4.0, p50=2.0, p95=4.0)
    assert Distribution.of([]) is None
    with pytest.raises(ValueError, match="finite"):
        Distribution.of([1.0, math.nan])


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=50))
@settings(max_examples=100)
def test_distribution_properties(values: list[float]) -> None:
    dist = Distribution.of(values)
    assert dist is not None
    assert dist.count == len(values)
    assert dist.min <= dist.p50 <= dist.p95 <= dist.max
    assert dist.min <= dist.mean <= dist.max
    # Nearest rank: every percentile is an observed value, and the order does not matter.
    assert {dist.p50, dist.p95} <= set(values)
    assert Distribution.of(reversed(values)) == dist


def test_streaming_rate_counts_time_after_the_first_token() -> None:
    # 46 tokens: the first at 0.5 s, the other 45 in the second after it.
    assert streaming_rate(46, ttft=0.5, duration=1.5) == 45
    assert streaming_rate(1, ttft=0.5, duration=1.5) is None  # one token: no rate to measure
    assert streaming_rate(45, ttft=None, duration=1.5) is None
    assert streaming_rate(0, ttft=0.5, duration=1.5) is None
    assert streaming_rate(10, ttft=1.5, duration=1.5) is None  # one piece: no rate


def run(model: str = "m", **fields: Any) -> BenchRun:
    return BenchRun(model=model, **fields)


def test_a_failed_run_has_no_rate() -> None:
    good = run(ttft=0.2, duration=1.2, completion_tokens=50)
    assert good.ok
    assert good.tokens_per_second == 49  # 50 - 1 tokens after the first, in 1 s
    bad = attrs.evolve(good, error_kind="timeout", error="idle deadline")
    assert not bad.ok
    assert bad.tokens_per_second is None
    assert bad.to_json()["tokens_per_second"] is None
    assert good.to_json()["tokens_per_second"] == 49


def test_model_summary_counts_errors_by_kind_and_ignores_them_in_timings() -> None:
    runs = [
        run(ttft=0.1, duration=1.1, completion_tokens=40),
        run(ttft=0.3, duration=2.3, completion_tokens=40),
        run(ttft=9.0, duration=9.5, completion_tokens=3, error_kind="network", error="reset"),
        run(duration=0.1, error_kind="rate_limit", error="429"),
        run(duration=0.1, error_kind="rate_limit", error="429"),
        run("other", ttft=5.0, duration=6.0, completion_tokens=5),
    ]
    summary = ModelSummary.of("m", runs)
    assert summary.runs == 5
    assert summary.succeeded == 2
    assert dict(summary.errors) == {"network": 1, "rate_limit": 2}
    assert list(summary.errors) == ["network", "rate_limit"]
    assert summary.error_rate == pytest.approx(0.6)
    assert summary.error_rates == pytest.approx({"network": 0.2, "rate_limit": 0.4})
    assert summary.to_json()["error_rates"] == summary.error_rates
    assert summary.ttft == Distribution(count=2, mean=0.2, min=0.1, max=0.3, p50=0.1, p95=0.3)
    assert summary.tokens_per_second is not None
    assert summary.tokens_per_second.min == pytest.approx(19.5)  # (40 - 1) / 2 s
    assert summary.tokens_per_second.max == pytest.approx(39)  # (40 - 1) / 1 s
    assert summary.completion_tokens == 80
    empty = ModelSummary.of("nobody", runs)
    assert (empty.runs, empty.error_rate, empty.ttft, empty.tokens_per_second) == (0, 0, None, None)


def test_report_totals_and_json_round_trip() -> None:
    config = BenchConfig(models=("a", "b"), runs=2, concurrency=2, max_tokens=10)
    runs = [
        run("a", ttft=0.5, duration=1.5, completion_tokens=10),
        run("a", index=1, ttft=0.5, duration=1.0, completion_tokens=10),
        run("b", duration=0.1, error_kind="authentication", error="401"),
    ]
    report = BenchReport.from_runs(runs, config=config, wall_time=2.0, target="sim")
    assert [summary.model for summary in report.models] == ["a", "b"]
    assert report.succeeded == 2
    assert report.completion_tokens == 20
    assert report.tokens_per_second == 10
    assert report.summary("b").errors == {"authentication": 1}
    with pytest.raises(KeyError):
        report.summary("c")
    data = json.loads(json.dumps(report.to_json()))
    assert data["version"] == 1
    assert data["config"] == {
        "models": ["a", "b"],
        "runs": 2,
        "concurrency": 2,
        "max_tokens": 10,
        "prompt": config.prompt,
        "system": None,
        "api": "chat",
    }
    assert data["runs_total"] == 3
    assert data["interrupted"] is False
    assert data["models"][0]["ttft"]["p50"] == 0.5
    assert data["models"][0]["tokens_per_second"]["max"] == 18  # (10 - 1) / 0.5 s
    assert data["models"][1]["error_rate"] == 1.0
    assert data["models"][1]["ttft"] is None
    assert data["runs"][2]["error_kind"] == "authentication"
    empty = BenchReport.from_runs([], config=config, wall_time=0.0, interrupted=True)
    assert empty.tokens_per_second is None
    assert empty.to_json()["interrupted"] is True


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"runs": 0}, "runs"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"runs": 1.5}, "runs"),
        ({"models": ()}, "models"),
        ({"models": ("a", "a")}, "duplicates"),
        ({"models": ("a", "")}, "models"),
        ({"api": "completions"}, "api"),
    ],
)
def test_config_validation(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BenchConfig(**fields)


def test_config_defaults_and_messages() -> None:
    config = BenchConfig()
    assert config.models == DEFAULT_MODELS
    assert config.runs == 20
    assert BenchConfig(models="solo").models == ("solo",)
    assert BenchConfig(max_tokens=None).max_tokens is None
    assert BenchConfig(prompt="p", system="s").messages() == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "p"},
    ]


def test_write_plot_without_matplotlib_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    report = BenchReport.from_runs([], config=BenchConfig(), wall_time=0.0)
    with pytest.raises(ImportError, match=r"holysheep-trio\[plot\]"):
        write_plot(report, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


@pytest.mark.skipif(not plotting_available(), reason="matplotlib (the plot extra) not installed")
def test_write_plot_draws_a_png(tmp_path: Any) -> None:
    config = BenchConfig(models=("a", "b"), runs=3)
    runs = [
        run(model, index=index, ttft=0.1 * (index + 1), duration=1.0 + index, completion_tokens=40)
        for model in ("a", "b")
        for index in range(3)
    ]
    runs.append(run("b", index=3, duration=0.1, error_kind="timeout", error="first token"))
    report = BenchReport.from_runs(runs, config=config, wall_time=3.0, target="sim")
    path = tmp_path / "plot.png"
    write_plot(report, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # TTFT as one step line per model (an ECDF), not overlapping histogram bars.
    ttft_axes = bench._figure(report).axes[0]
    assert not ttft_axes.patches
    lines = {line.get_label(): line for line in ttft_axes.get_lines()}
    assert set(lines) == {"a (n=3)", "b (n=3)"}
    assert list(lines["a (n=3)"].get_ydata()) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert ttft_axes.get_title() == "Time to first token (ECDF)"


def test_ttft_ecdf_steps_by_one_run_at_each_ttft() -> None:
    config = BenchConfig(models=("a", "b", "c"), runs=4)
    runs = [run("a", index=i, ttft=t, duration=1.0) for i, t in enumerate([0.4, 0.1, 0.3, 0.1])]
    runs.append(run("b", index=0, duration=0.1, error_kind="timeout", error="first token"))
    runs.append(run("c", index=0, ttft=2.0, duration=3.0))
    report = BenchReport.from_runs(runs, config=config, wall_time=1.0)
    assert ttft_ecdf(report) == {
        # sorted; every run counts, ties included; a failed run is not a TTFT
        "a": [(0.1, 0.0), (0.1, 0.25), (0.1, 0.5), (0.3, 0.75), (0.4, 1.0)],
        "c": [(2.0, 0.0), (2.0, 1.0)],
    }


# ---- the runner against the simulator -------------------------------------------------------


async def test_runner_interleaves_models_and_bounds_concurrency() -> None:
    seen: list[BenchRun] = []
    config = BenchConfig(
        models=("gpt-4.1", "deepseek-v3.2"), runs=5, concurrency=3, max_tokens=16, system="terse"
    )
    async with (
        open_simulator(api_key=KEY, profile="fast") as sim,
        open_client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        report = await run_benchmark(client, config, on_run=seen.append, target="fast sim")
        stats = sim.stats()
        one_at_a_time = await run_benchmark(client, attrs.evolve(config, concurrency=1, runs=2))
    assert [(r.model, r.index) for r in one_at_a_time.runs] == [
        ("gpt-4.1", 0),
        ("deepseek-v3.2", 0),
        ("gpt-4.1", 1),
        ("deepseek-v3.2", 1),
    ]
    assert report.runs == tuple(seen)
    assert len(report.runs) == 10
    assert report.target == "fast sim"
    assert all(r.ok and r.tokens_source == "usage" for r in report.runs)
    assert all(r.completion_tokens == 16 and r.attempts == 1 for r in report.runs)
    assert sorted((r.model, r.index) for r in report.runs) == sorted(
        (model, index) for model in config.models for index in range(5)
    )
    assert {model: n for model, n in stats.requests.items() if n} == {
        "gpt-4.1": 5,
        "deepseek-v3.2": 5,
    }
    assert all(count <= 3 for count in stats.max_concurrent.values())
    assert stats.completion_tokens["gpt-4.1"] == 5 * 16
    for summary in report.models:
        assert (summary.runs, summary.succeeded, summary.error_rate) == (5, 5, 0.0)
        assert summary.completion_tokens == 80


async def test_runner_measures_the_responses_api(autojump_clock: MockClock) -> None:
    config = BenchConfig(
        models=("gpt-4.1", "deepseek-v3.2"),
        runs=3,
        concurrency=2,
        max_tokens=16,
        system="terse",
        api="responses",
    )
    async with (
        open_simulator(api_key=KEY, profile="realistic") as sim,
        open_client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        sim.inject_faults("disconnect_after=3", model="gpt-4.1", endpoint="responses")
        report = await run_benchmark(client, config)
        stats = sim.stats()
    # Every request went to /v1/responses, none to chat completions.
    assert stats.requests_by_endpoint["responses"] == 6
    assert stats.requests_by_endpoint.get("chat", 0) == 0
    good = [run for run in report.runs if run.ok]
    assert len(good) == 5
    assert all(run.tokens_source == "usage" for run in good)
    assert all(run.ttft is not None and 0 < run.ttft < run.duration for run in good)
    (failed,) = [run for run in report.runs if not run.ok]
    assert failed.model == "gpt-4.1"
    assert failed.error_kind == "network"
    assert failed.tokens_source == "deltas"
    assert failed.completion_tokens == 3  # the deltas received before the cut
    assert failed.ttft is not None  # from the partial response
    assert report.to_json()["config"]["api"] == "responses"


async def test_runner_under_realistic_latencies(autojump_clock: MockClock) -> None:
    config = BenchConfig(runs=6, concurrency=8, max_tokens=45)
    async with (
        open_simulator(api_key=KEY, profile="realistic") as sim,
        open_client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        start = trio.current_time()
        report = await run_benchmark(client, config)
        elapsed = trio.current_time() - start
    assert report.wall_time == pytest.approx(elapsed)
    assert report.succeeded == 24
    fast, slow = report.summary("gemini-2.5-flash"), report.summary("claude-sonnet-4.5")
    assert fast.ttft is not None
    assert slow.ttft is not None
    # The seed's priors: gemini answers in ~0.18 s, claude in ~0.92 s; the simulator draws
    # around them (seeded), so only the order and the ballpark are pinned.
    assert fast.ttft.mean < slow.ttft.mean
    assert 0.05 < fast.ttft.p50 < 0.5
    assert 0.4 < slow.ttft.p50 < 2.0
    for summary in report.models:
        assert summary.ttft is not None
        assert summary.ttft.min <= summary.ttft.p50 <= summary.ttft.p95 <= summary.ttft.max
        assert summary.tokens_per_second is not None
        assert 35 < summary.tokens_per_second.p50 < 60  # ~45 tokens/s with jitter
    # 24 replies of ~1-2 s each, 8 at a time: about three rounds.
    assert 2.0 < report.wall_time < 10.0
    assert report.tokens_per_second == pytest.approx(24 * 45 / report.wall_time)


async def test_failures_become_runs_with_their_kind() -> None:
    config = BenchConfig(models=("gpt-4.1", "no-such-model"), runs=3, concurrency=2, max_tokens=8)
    async with (
        open_simulator(api_key=KEY, profile="fast") as sim,
        open_client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        # One run cut after 3 content chunks (after output began: no retry), one 401.
        sim.inject_faults("disconnect_after=3", "status=401", model="gpt-4.1")
        report = await run_benchmark(client, config)
    gpt = report.summary("gpt-4.1")
    assert gpt.runs == 3
    assert gpt.succeeded == 1
    assert dict(gpt.errors) == {"authentication": 1, "network": 1}
    cut = next(r for r in report.runs if r.error_kind == "network")
    assert cut.completion_tokens == 3
    assert cut.tokens_source == "deltas"
    assert cut.ttft is not None
    assert cut.error is not None
    assert "\n" not in cut.error
    missing = report.summary("no-such-model")
    assert (missing.succeeded, dict(missing.errors)) == (0, {"invalid_request": 3})
    assert missing.error_rate == 1.0
    assert KEY not in json.dumps(report.to_json())


async def test_tokens_are_counted_from_deltas_when_the_server_sends_no_usage() -> None:
    # The simulator always honours include_usage; a server that ignores it needs a mock.
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    # Seven network-level pieces would be seven "tokens" by the seed's count; five deltas are.
    body = (
        chunk({"role": "assistant", "content": ""})
        + b"".join(chunk({"content": word}) for word in ["a", " b", " c", " d", " e"])
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http,
        open_client(api_key=KEY, base_url="http://127.0.0.1:9/v1", http_client=http) as client,
    ):
        report = await run_benchmark(client, BenchConfig(models=("m",), runs=2, concurrency=1))
    assert [(r.completion_tokens, r.tokens_source) for r in report.runs] == [(5, "deltas")] * 2


async def test_cancelling_the_runner_keeps_the_finished_runs(autojump_clock: MockClock) -> None:
    seen: list[BenchRun] = []
    config = BenchConfig(models=("gemini-2.5-flash",), runs=50, concurrency=2, max_tokens=45)
    async with (
        open_simulator(api_key=KEY, profile="realistic") as sim,
        open_client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        with trio.move_on_after(5) as scope:
            await run_benchmark(client, config, on_run=seen.append)
        assert scope.cancelled_caught
        stats = sim.stats()
    assert 2 <= len(seen) < 50
    partial = BenchReport.from_runs(seen, config=config, wall_time=5.0, interrupted=True)
    assert partial.summary("gemini-2.5-flash").succeeded == len(seen)
    assert stats.requests["gemini-2.5-flash"] >= len(seen)
    assert stats.max_concurrent["gemini-2.5-flash"] == 2  # the bound, and it is used
