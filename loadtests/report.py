"""The chart of a load run: hold outcomes per second and hold latency (p50/p99) over time, as a PNG.

Drawn from the per-second hold counters every Locust process records (loadtests/metrics.py): exact
per-second percentiles, where Locust's own stats history only keeps a 10-second rolling window.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render straight to a file

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from loadtests.metrics import Metrics, percentile  # noqa: E402


def hold_series(metrics: Metrics, start: float | None = None) -> dict[str, list[float]]:
    """Per second (from `start`, default the first hold): ok/s, conflicts/s, errors/s, p50 and p99 in ms.

    Seconds without any hold are kept (as zeros, no latency) so the time axis is continuous.
    """
    seconds = sorted(metrics.timeline)
    if not seconds:
        return {k: [] for k in ("t", "ok", "conflict", "error", "p50", "p99")}
    first = int(start) if start is not None else seconds[0]
    series: dict[str, list[float]] = {k: [] for k in ("t", "ok", "conflict", "error", "p50", "p99")}
    for second in range(min(first, seconds[0]), seconds[-1] + 1):
        bucket = metrics.timeline.get(second)
        series["t"].append(second - first)
        for kind in ("ok", "conflict", "error"):
            series[kind].append(bucket[kind] if bucket else 0)
        lat = bucket["lat"] if bucket else {}
        series["p50"].append(percentile(lat, 0.50) if lat else float("nan"))  # type: ignore[arg-type]
        series["p99"].append(percentile(lat, 0.99) if lat else float("nan"))  # type: ignore[arg-type]
    # a closing point one second later, so the last second is drawn as a full step
    for key, values in series.items():
        values.append(values[-1] + 1 if key == "t" else values[-1])
    return series


def write_chart(metrics: Metrics, path: Path, title: str, start: float | None = None,
                sold_out_at: float | None = None) -> Path:
    """Two panels sharing the time axis: holds/s (granted, refused, errors) and p50/p99 hold latency."""
    s = hold_series(metrics, start)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, constrained_layout=True)
    top.stackplot(s["t"], s["ok"], s["conflict"], s["error"], step="post", alpha=0.85,
                  labels=["holds granted/s", "refused (409 seats_unavailable)/s", "other errors/s"],
                  colors=["#2a9d8f", "#e9c46a", "#e76f51"])
    top.set_ylabel("hold requests per second")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title(title)
    bottom.plot(s["t"], s["p50"], label="p50", color="#264653", drawstyle="steps-post")
    bottom.plot(s["t"], s["p99"], label="p99", color="#e76f51", drawstyle="steps-post")
    bottom.set_ylabel("hold latency (ms)")
    bottom.set_xlabel("seconds since the first hold")
    if any(v == v and v > 0 for v in s["p99"]):  # log scale only with positive data (NaN != NaN)
        bottom.set_yscale("log")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper right", fontsize=8)
    if sold_out_at is not None and s["t"]:
        for ax in (top, bottom):
            ax.axvline(sold_out_at, color="#6d597a", linestyle="--", linewidth=1)
        top.annotate("sold out", (sold_out_at, 0), xytext=(4, 6), textcoords="offset points", fontsize=8,
                     color="#6d597a")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
