"""A picture of one simulation: altitude against downrange, and ground tracks over the coastlines
with the sensors of each nation (filled if they reported the missiles, hollow if not)."""

from __future__ import annotations

import math

import numpy as np

from warnshare.geo import ecef_to_geodetic

from .model import NATIONS, SimResult
from .sensors import sensors

NATION_COLOURS = {"USA": "#1f4e9c", "JPN": "#c0262d", "KOR": "#1b8a3a"}
NATION_MARKERS = {"USA": "v", "JPN": "o", "KOR": "s"}
NS = 1_000_000_000
# label positions (points) that keep neighbouring sites' names apart
LABEL_OFFSETS = {"USA-TPY2-SHARIKI": (-8, -11), "KOR-GREENPINE-CHUNGNAM": (-70, -10), "USA-TPY2-SEONGJU": (-82, -12),
                 "KOR-KDX3-YULGOK": (-40, 7)}


def _downrange_km(lat0: float, lon0: float, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p1, l1 = math.radians(lat0), math.radians(lon0)
    p2, l2 = np.radians(lat), np.radians(lon)
    h = np.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def plot_result(result: SimResult, path: str) -> None:
    """Render ``result`` to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    sc = result.scenario
    fig = plt.figure(figsize=(17, 10))
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.15], height_ratios=[1.25, 1])
    ax_alt = fig.add_subplot(grid[0, 0])
    ax_time = fig.add_subplot(grid[1, 0])
    ax_map = fig.add_subplot(grid[:, 1])
    colours = plt.get_cmap("tab10")
    seen_sensors: set[str] = set()
    for ms in result.measurements.values():
        if (ms.truth_id != "").any():
            seen_sensors.add(ms.sensor_id)

    all_lat, all_lon = [], []
    for k, (mid, tr) in enumerate(result.truth.items()):
        c = colours(k % 10)
        lat, lon, alt = ecef_to_geodetic(tr.position_ecef_m)
        lon = np.where(lon < 0, lon + 360.0, lon)
        dr = _downrange_km(tr.launch_lat_deg, tr.launch_lon_deg, lat, lon)
        label = f"{mid} {tr.missile_class}: apogee {tr.apogee_m / 1e3:,.0f} km, range {tr.range_m / 1e3:,.0f} km, {tr.flight_time_s / 60:.1f} min"
        ax_alt.plot(dr, alt / 1e3, color=c, lw=1.8, label=label)
        if tr.breakup_ns is not None:
            i = int(np.searchsorted(tr.times_ns, tr.breakup_ns))
            ax_alt.plot(dr[i], alt[i] / 1e3, marker="*", ms=14, color="k", ls="none")
        # where each nation's first national track became valid
        for nation, ups in result.national_tracks.items():
            mine = [u for u in ups if u.missile_id == mid]
            if not mine:
                continue
            t = mine[0].time_of_validity_ns
            i = min(int(np.searchsorted(tr.times_ns, t)), len(tr.times_ns) - 1)
            ax_alt.plot(dr[i], alt[i] / 1e3, marker=NATION_MARKERS[nation], ms=9, mfc=NATION_COLOURS[nation],
                        mec="k", ls="none", zorder=5)
        ax_map.plot(lon, lat, color=c, lw=2.0, zorder=4)
        ax_map.plot(lon[0], lat[0], marker="^", color=c, mec="k", ms=10, ls="none", zorder=6)
        ax_map.plot(lon[-1], lat[-1], marker="X", color=c, mec="k", ms=10, ls="none", zorder=6)
        all_lat.extend([lat.min(), lat.max()])
        all_lon.extend([lon.min(), lon.max()])

    ax_alt.set_xlabel("downrange from launch (km)")
    ax_alt.set_ylabel("altitude above the WGS84 ellipsoid (km)")
    ax_alt.set_xlim(left=0)
    top = max(tr.apogee_m for tr in result.truth.values()) / 1e3
    ax_alt.set_ylim(0, top * 1.08)
    ax_alt.grid(True, alpha=0.3)
    handles, _ = ax_alt.get_legend_handles_labels()
    handles += [Line2D([], [], marker=NATION_MARKERS[n], ls="none", mfc=NATION_COLOURS[n], mec="k", ms=9,
                       label=f"first {n} national track") for n in NATIONS if result.national_tracks.get(n)]
    silent = [n for n in NATIONS if n in result.national_tracks and not result.national_tracks[n]]
    if silent:
        handles.append(Line2D([], [], ls="none", label=f"no national track: {', '.join(silent)}"))
    if any(tr.breakup_ns is not None for tr in result.truth.values()):
        handles.append(Line2D([], [], marker="*", ls="none", color="k", ms=12, label="break-up"))
    ax_alt.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.13),
                  ncol=2, framealpha=0.9)
    ax_alt.set_title("Altitude against downrange")

    _timeline(ax_time, result, colours)

    # sensors
    labels: list = []
    wanted = set(result.national_tracks) or set(NATIONS)
    for s in sensors():
        if s.kind != "radar" or s.nation not in wanted:
            continue
        lon_s = s.lon_deg if s.lon_deg >= 0 else s.lon_deg + 360
        used = s.id in seen_sensors
        off = s.id in sc.unavailable_sensors
        ax_map.plot(lon_s, s.lat_deg, marker=NATION_MARKERS[s.nation], ms=9, ls="none", zorder=7,
                    mec=NATION_COLOURS[s.nation], mfc=NATION_COLOURS[s.nation] if used else "white", mew=1.6,
                    alpha=0.35 if off else 1.0)
        short = s.id.split("-", 1)[1].replace("GREENPINE", "GP").replace("TPY2", "TPY-2").replace("FPS5", "FPS-5")
        labels.append((short + (" (off)" if off else ""), lon_s, s, used))
        all_lat.append(s.lat_deg)
        all_lon.append(lon_s)

    lat0, lat1 = min(all_lat) - 1.5, max(all_lat) + 1.5
    lon0, lon1 = min(all_lon) - 2.0, max(all_lon) + 2.0
    if lon1 - lon0 > 30.0:
        # a flight far out into the Pacific: keep the map on the region and point to the impact
        lon1 = max(lon0 + 30.0, max(s.lon_deg for s in sensors() if s.kind == "radar") + 6.0)
        for k, (mid, tr) in enumerate(result.truth.items()):
            lat, lon, _ = ecef_to_geodetic(tr.position_ecef_m)
            lon = np.where(lon < 0, lon + 360.0, lon)
            inside = np.nonzero(lon <= lon1 - 0.5)[0]
            if len(inside) == len(lon) or len(inside) == 0:
                continue
            i = inside[-1]
            ax_map.annotate(f"{mid} impact {tr.impact_lat_deg:.1f}N {tr.impact_lon_deg % 360:.1f}E\n"
                            f"({tr.range_m / 1e3:,.0f} km from launch)",
                            xy=(lon[i], lat[i]), xytext=(-150, -40), textcoords="offset points", fontsize=8,
                            color=colours(k % 10), arrowprops={"arrowstyle": "->", "color": colours(k % 10)}, zorder=9)
            ax_map.annotate("", xy=(lon1, lat[i]), xytext=(lon[i], lat[i]),
                            arrowprops={"arrowstyle": "-|>", "color": colours(k % 10), "lw": 2}, zorder=5)
    wide = lon1 - lon0 > 30.0
    for text, lon_s, s, used in labels:
        if wide and not used:
            continue  # on a wide map only the radars that saw something are named
        ax_map.annotate(text, (lon_s, s.lat_deg), xytext=LABEL_OFFSETS.get(s.id, (5, 3)), textcoords="offset points",
                        fontsize=5.5 if wide else 7, color=NATION_COLOURS[s.nation], zorder=8)
    _coastlines(ax_map, (lon0, lon1, lat0, lat1))
    ax_map.set_xlim(lon0, lon1)
    ax_map.set_ylim(lat0, lat1)
    ax_map.set_aspect(1.0 / math.cos(math.radians(0.5 * (lat0 + lat1))))
    ax_map.set_xlabel("longitude (deg E)")
    ax_map.set_ylabel("latitude (deg N)")
    ax_map.grid(True, alpha=0.3)
    ax_map.set_title("Ground tracks and radars (filled: reported a missile; hollow: did not)")
    legend = [
        Line2D([], [], marker="^", ls="none", color="grey", mec="k", ms=9, label="launch"),
        Line2D([], [], marker="X", ls="none", color="grey", mec="k", ms=9, label="impact / debris fall"),
    ]
    legend += [Line2D([], [], marker=NATION_MARKERS[n], ls="none", mfc=NATION_COLOURS[n], mec=NATION_COLOURS[n],
                      ms=9, label=f"{n} radar") for n in NATIONS if n in wanted]
    if "USA-SBIRS" in result.measurements:
        ms = result.measurements["USA-SBIRS"]
        legend.append(Line2D([], [], ls="none", label=f"USA space IR layer (GEO): {int((ms.truth_id != '').sum())} plume fixes"))
    ax_map.legend(handles=legend, fontsize=8, loc="lower right", framealpha=0.9)
    fig.suptitle(f"{sc.name}: t=0 {_utc(sc.start_ns)}, seed {result.seed}", fontsize=13)
    fig.text(0.99, 0.005, _attribution(), ha="right", va="bottom", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timeline(ax, result: SimResult, colours) -> None:
    """One row per sensor (its reports) and per nation (its national track updates), coloured by
    missile, against minutes after t=0."""
    sc = result.scenario
    ids = list(result.truth)
    rows: list[tuple[str, str, np.ndarray, np.ndarray]] = []  # label, nation, times, labels
    for nation in NATIONS:
        if nation in result.national_tracks:
            ups = result.national_tracks[nation]
            rows.append((f"{nation} national tracks", nation,
                         np.array([u.time_of_validity_ns for u in ups], dtype=np.int64),
                         np.array([u.missile_id for u in ups], dtype=object)))
        for ms in sorted((m for m in result.measurements.values() if m.nation == nation), key=lambda m: m.sensor_id):
            rows.append((ms.sensor_id, nation, ms.times_ns, ms.truth_id))
    rows.reverse()
    for y, (label, _, times, labels) in enumerate(rows):
        bold = label.endswith("tracks")
        for k, mid in enumerate(ids):
            t = times[labels == mid]
            if len(t):
                ax.plot((t - sc.start_ns) / NS / 60.0, np.full(len(t), y), ls="none", marker="|",
                        ms=9 if bold else 7, mew=2.0 if bold else 1.0, color=colours(k % 10))
        fa = times[labels == ""]
        if len(fa):
            ax.plot((fa - sc.start_ns) / NS / 60.0, np.full(len(fa), y), ls="none", marker="x", ms=4, color="0.5")
    for nation in NATIONS:
        ys = [y for y, r in enumerate(rows) if r[1] == nation]
        if ys:
            ax.axhspan(min(ys) - 0.5, max(ys) + 0.5, color=NATION_COLOURS[nation], alpha=0.06)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=7)
    for lab, r in zip(ax.get_yticklabels(), rows, strict=True):
        lab.set_color(NATION_COLOURS[r[1]])
        if r[0].endswith("tracks"):
            lab.set_fontweight("bold")
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xlabel("minutes after t=0 (a tick per report or track update, coloured by missile; grey x: false alarm)")
    ax.set_title("Who reported what, when")
    ax.grid(True, axis="x", alpha=0.3)


def _utc(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / NS, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _attribution() -> str:
    try:
        from warnshare.regions import attribution

        return "Coastlines: " + attribution()
    except Exception:  # the plot is still useful without the credit line
        return ""


def _coastlines(ax, box: tuple[float, float, float, float]) -> None:
    try:
        from warnshare.regions import land_polygons
    except ImportError:
        ax.text(0.01, 0.01, "(coastlines unavailable)", transform=ax.transAxes, fontsize=8)
        return
    lon0, lon1, lat0, lat1 = box
    for rings in land_polygons().values():
        for ring in rings:
            lo, la = ring[:, 0], ring[:, 1]
            if lo.max() < lon0 or lo.min() > lon1 or la.max() < lat0 or la.min() > lat1:
                continue
            ax.fill(lo, la, facecolor="#ececec", edgecolor="#555555", lw=0.6, zorder=1)
    # country codes at a representative point keep the map readable without a basemap
    for code, (la, lo) in {"JPN": (36.5, 139.0), "KOR": (36.3, 127.9), "PRK": (40.2, 127.0)}.items():
        if lat0 < la < lat1 and lon0 < lo < lon1:
            ax.text(lo, la, code, fontsize=9, color="#777777", ha="center", zorder=2)

