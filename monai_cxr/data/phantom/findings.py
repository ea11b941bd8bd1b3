"""The phantom's eight findings, each of a known physical size.

Sizes are fractions of the image width, so the resolution a finding needs is known by
construction: a nodule 1-2 % of the width spans 0.3-0.6 pixel at 32 px (lost) and
2.6-5 pixels at 256 px (clear); a mass of 8-14 % spans 2.6-4.5 pixels even at 32 px.

Two findings change the anatomy itself (:func:`apply_to_anatomy`: Cardiomegaly enlarges the
heart, Emphysema darkens the lungs and flattens the diaphragm); the others are drawn onto
the density map (:func:`draw_findings`). Every drawn finding returns a geometry record
(centre, extent in pixels and as a fraction of the width, contrast), which tests and
``PHANTOM.md`` use. Contrasts are in density units, where soft tissue is about 0.45,
aerated lung about 0.23 darker, posterior ribs about 0.06 brighter, lung markings up to
0.035 and quantum noise has an SD of 0.02-0.04 per pixel.

Contrasts were calibrated with ``benchmarks/calibrate_phantom.py`` (ResNet34 from scratch,
~1500 training presentations): nodules are calcified-bright but tiny, so area averaging to
32 px dilutes each to a bump of 0.06-0.15 in one pixel, like the rib edges around it
(AUC 0.41-0.54 at 32 px, 0.61-0.79 at 64 px), while at 128 px they are sharp 1.7-2.6 px
dots (AUC 0.99); a mass is a 2.6-4.5 px blob even at 32 px and is learnt there (AUC ~0.92).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from monai_cxr.data.phantom.anatomy import (
    F32,
    Anatomy,
    Patient,
    grid,
    heart_box,
    lung_extent,
    ramp,
    window,
)

FINDINGS = ("Atelectasis", "Cardiomegaly", "Edema", "Effusion", "Emphysema", "Hernia", "Mass", "Nodule")

# The drawing parameters, in fractions of the width and density units (PHANTOM.md quotes them).
NODULE_COUNT = (3, 6)
NODULE_DIAMETER = (0.013, 0.020)
NODULE_CONTRAST = (0.60, 0.75)  # calcified: as bright as bone
MASS_DIAMETER = (0.08, 0.14)
MASS_CONTRAST = (0.35, 0.45)
CARDIOMEGALY_CTR = (0.55, 0.65)  # normal hearts: 0.38-0.46 (PA)
EFFUSION_HEIGHT = (0.08, 0.18)  # above the costophrenic angle, at the lateral wall
EMPHYSEMA_DARKENING = (0.08, 0.12)
EMPHYSEMA_DOME = 0.3  # dome height multiplied by this (flattened)
EMPHYSEMA_DESCENT = (0.02, 0.04)  # diaphragm lower by this
EDEMA_HAZE_SIGMA = (0.05, 0.07)
EDEMA_HAZE_CONTRAST = (0.08, 0.12)
EDEMA_LINES = (5, 9)  # per lung: Kerley B lines at the bases
EDEMA_LINE_LENGTH = (0.02, 0.035)
EDEMA_LINE_CONTRAST = 0.10
ATELECTASIS_LENGTH = (0.10, 0.18)
ATELECTASIS_THICKNESS = (0.008, 0.016)
ATELECTASIS_CONTRAST = (0.15, 0.22)
HERNIA_DIAMETER = (0.06, 0.10)
HERNIA_CONTRAST = (0.14, 0.20)


def apply_to_anatomy(a: Patient, labels, rng: dict) -> tuple[Patient, list[dict]]:
    """Cardiomegaly and Emphysema: findings that change the patient's anatomy (before the view)."""
    records = []
    if "Cardiomegaly" in labels:
        r = rng["Cardiomegaly"]
        a = replace(a, ctr=r.uniform(*CARDIOMEGALY_CTR))
        records.append({"finding": "Cardiomegaly", "ctr": round(a.ctr, 4)})
    if "Emphysema" in labels:
        r = rng["Emphysema"]
        vessels = a.vessels.copy()
        vessels[:, 3] *= 0.5  # pruned vascular markings
        a = replace(
            a,
            lung_depth=a.lung_depth + r.uniform(*EMPHYSEMA_DARKENING),
            dome=a.dome * EMPHYSEMA_DOME,
            diaphragm=a.diaphragm + r.uniform(*EMPHYSEMA_DESCENT),
            thorax=a.thorax * 1.03,
            vessels=vessels,
        )
        records.append({"finding": "Emphysema", "dome": round(a.dome, 4), "lung_depth": round(a.lung_depth, 4)})
    return a, records


def draw_findings(img: np.ndarray, lungs: np.ndarray, a: Anatomy, labels, rng: dict) -> list[dict]:
    """Draw the local findings of ``labels`` onto ``img`` in place; return their geometry."""
    records = []
    for name in ("Effusion", "Edema", "Atelectasis", "Hernia", "Mass", "Nodule"):
        if name in labels:
            records += _DRAW[name](img, lungs, a, rng[name])
    for rec in records:
        rec["fraction"] = round(rec["width_px"] / img.shape[0], 5)
    return records


def _record(name, size, x, y, width, height, contrast, **extra):
    return {
        "finding": name,
        "x": round(x * size, 2),
        "y": round(y * size, 2),
        "width_px": round(width * size, 3),
        "height_px": round(height * size, 3),
        "contrast": round(float(contrast), 4),
        **extra,
    }


def _in_lung(lungs, r, y_range=(0.0, 1.0), margin=0.0, tries=200):
    """A random point well inside the aerated lungs (optionally within a band of rows)."""
    size = lungs.shape[0]
    x = y = 0.5
    for _ in range(tries):
        x, y = r.uniform(0.1, 0.9), r.uniform(*y_range)
        ok = True
        for dx, dy in ((0, 0), (margin, 0), (-margin, 0), (0, margin), (0, -margin)):
            i, j = int((y + dy) * size), int((x + dx) * size)
            if not (0 <= i < size and 0 <= j < size) or lungs[i, j] < 0.9:
                ok = False
                break
        if ok:
            return x, y
    return x, y


def _sphere(img, x, y, radius, amp, lobes=None):
    """Add the projection of a solid sphere (thickness ~ sqrt(1 - r^2)) with optional lobulation."""
    size = img.shape[0]
    g = grid(size)
    reach = radius * (1.25 if lobes is not None else 1.0) + 1.0 / size
    rows, cols = window(size, x - reach, x + reach, y - reach, y + reach)
    ddx = (g[cols] - F32(x))[None, :]
    ddy = (g[rows] - F32(y))[:, None]
    r2 = ddx * ddx + ddy * ddy
    scale = F32(radius)
    if lobes is not None:
        theta = np.arctan2(ddy, ddx)
        scale = F32(radius) * (1 + sum(F32(k) * np.sin(F32(n) * theta + F32(p)) for n, k, p in lobes))
    t = 1 - r2 / (scale * scale)
    img[rows, cols] += F32(amp) * np.sqrt(np.clip(t, 0, 1, out=t))


def _nodule(img, lungs, a, r):
    size = img.shape[0]
    out = []
    for _ in range(int(r.integers(NODULE_COUNT[0], NODULE_COUNT[1] + 1))):
        d, c = r.uniform(*NODULE_DIAMETER), r.uniform(*NODULE_CONTRAST)
        x, y = _in_lung(lungs, r, margin=d)
        _sphere(img, x, y, d / 2, c)
        out.append(_record("Nodule", size, x, y, d, d, c))
    return out


def _mass(img, lungs, a, r):
    d, c = r.uniform(*MASS_DIAMETER), r.uniform(*MASS_CONTRAST)
    x, y = _in_lung(lungs, r, margin=d / 3)
    lobes = [(2, r.uniform(0.03, 0.08), r.uniform(0, 6.3)), (3, r.uniform(0.02, 0.06), r.uniform(0, 6.3))]
    _sphere(img, x, y, d / 2, c, lobes)
    return [_record("Mass", img.shape[0], x, y, d, d, c)]


def _effusion(img, lungs, a, r):
    """Fluid filling a costophrenic angle; its meniscus climbs the lateral chest wall."""
    size = img.shape[0]
    g = grid(size)
    sides = {0: (-1,), 1: (1,), 2: (-1, 1)}[int(r.choice(3, p=(0.4, 0.4, 0.2)))]
    out = []
    for side in sides:
        h = r.uniform(*EFFUSION_HEIGHT)
        medial, lateral = lung_extent(a, side)
        floor = a.diaphragm - (0.02 if side < 0 else 0.0)
        rows, cols = window(
            size, min(medial, lateral) - 0.01, max(medial, lateral) + 0.01, floor - h - 0.1, floor + 0.02
        )
        lat = np.clip((g[cols] - F32(medial)) / F32(lateral - medial), 0, 1)  # 0 medial .. 1 lateral
        top = F32(floor - 0.55 * h) - F32(0.45 * h) * lat * lat  # meniscus: higher laterally
        fluid = ramp(g[rows][:, None] - top[None, :], 0.012)
        fluid *= lungs[rows, cols]
        img[rows, cols] += F32(a.lung_depth * 0.95) * fluid
        out.append(
            _record(
                "Effusion", size, lateral, floor - h, h, h, a.lung_depth * 0.95, side="right" if side < 0 else "left"
            )
        )
    return out


def _edema(img, lungs, a, r):
    """Bilateral perihilar (bat-wing) haze plus fine interstitial (Kerley B) lines at the bases."""
    size = img.shape[0]
    g = grid(size)
    haze = np.zeros_like(img)
    sigma, c = r.uniform(*EDEMA_HAZE_SIGMA), r.uniform(*EDEMA_HAZE_CONTRAST)
    hy = a.apex + 0.42 * (a.diaphragm - a.apex)
    line_px = max(1.0, 0.003 * size) / size
    out = []
    for side in (-1, 1):
        hx = a.cx + side * (a.mediastinum + 0.05)
        rows, cols = window(size, hx - 3 * sigma, hx + 3 * sigma, hy - 4 * sigma, hy + 4 * sigma)
        ex = np.exp(-0.5 * np.square((g[cols] - F32(hx)) / F32(sigma)))
        ey = np.exp(-0.5 * np.square((g[rows] - F32(hy)) / F32(1.3 * sigma)))
        haze[rows, cols] += F32(c) * ey[:, None] * ex[None, :]
        out.append(_record("Edema", size, hx, hy, 2.355 * sigma, 2.355 * 1.3 * sigma, c, part="haze"))
        medial, lateral = lung_extent(a, side)
        for _ in range(int(r.integers(EDEMA_LINES[0], EDEMA_LINES[1] + 1))):
            length = r.uniform(*EDEMA_LINE_LENGTH)
            y = a.diaphragm - r.uniform(0.03, 0.14)
            x0 = lateral - side * r.uniform(0.0, 0.01)  # lines start at the pleura, run medially
            x1 = x0 - side * length
            rows, cols = window(size, min(x0, x1), max(x0, x1), y - line_px, y + line_px)
            profile = ramp(F32(line_px / 2) - np.abs(g[rows] - F32(y)), 1.0 / size)
            haze[rows, cols] += F32(EDEMA_LINE_CONTRAST) * profile[:, None]
        out.append(
            _record(
                "Edema",
                size,
                lateral,
                a.diaphragm - 0.08,
                EDEMA_LINE_LENGTH[1],
                line_px,
                EDEMA_LINE_CONTRAST,
                part="lines",
            )
        )
    haze *= lungs
    img += haze
    return out


def _atelectasis(img, lungs, a, r):
    """Plate-like (discoid) atelectasis: a thin, nearly horizontal band in a lower zone."""
    size = img.shape[0]
    g = grid(size)
    length, thick = r.uniform(*ATELECTASIS_LENGTH), max(r.uniform(*ATELECTASIS_THICKNESS), 1.2 / size)
    c, angle = r.uniform(*ATELECTASIS_CONTRAST), np.deg2rad(r.uniform(-15, 15))
    x, y = _in_lung(lungs, r, (a.apex + 0.5 * (a.diaphragm - a.apex), a.diaphragm - 0.03), margin=length / 3)
    rows, cols = window(size, x - length / 2, x + length / 2, y - length / 2, y + length / 2)
    ddx, ddy = (g[cols] - F32(x))[None, :], (g[rows] - F32(y))[:, None]
    along = ddx * F32(np.cos(angle)) + ddy * F32(np.sin(angle))
    across = ddy * F32(np.cos(angle)) - ddx * F32(np.sin(angle))
    band = ramp(F32(thick / 2) - np.abs(across), 1.0 / size) * ramp(F32(length / 2) - np.abs(along), 0.02)
    img[rows, cols] += F32(c) * band * lungs[rows, cols]
    return [_record("Atelectasis", size, x, y, length, thick, c, angle_deg=round(float(np.rad2deg(angle)), 2))]


def _hernia(img, lungs, a, r):
    """Hiatal hernia: a gas bubble with an air-fluid level behind the heart."""
    size = img.shape[0]
    g = grid(size)
    d, c = r.uniform(*HERNIA_DIAMETER), r.uniform(*HERNIA_CONTRAST)
    hx, hy, ha, hb = heart_box(a)
    x, y = a.cx + r.uniform(0.0, 0.04), hy + r.uniform(-0.2, 0.25) * hb
    rad = d / 2
    rows, cols = window(size, x - rad - 0.01, x + rad + 0.01, y - rad - 0.01, y + rad + 0.01)
    ddx, ddy = (g[cols] - F32(x))[None, :], (g[rows] - F32(y))[:, None]
    dist = F32(rad) - np.sqrt(ddx * ddx + ddy * ddy)
    gas = ramp(dist.copy(), 1.5 / size) * ramp(F32(0.35 * rad) - ddy, 1.0 / size)  # fluid below the level
    wall = ramp(F32(0.006) - np.abs(dist), 1.5 / size)
    img[rows, cols] += F32(0.04) * wall - F32(c) * gas
    return [_record("Hernia", size, x, y, d, d, c)]


_DRAW = {
    "Nodule": _nodule,
    "Mass": _mass,
    "Effusion": _effusion,
    "Edema": _edema,
    "Atelectasis": _atelectasis,
    "Hernia": _hernia,
}
