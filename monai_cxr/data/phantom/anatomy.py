"""The phantom's normal anatomy: a patient's chest drawn as a density map.

Everything is measured in fractions of the image width (x and y in [0, 1], y down), so a
patient looks the same at every image size. A :class:`Patient` holds what stays fixed
across a patient's follow-ups; :func:`image_anatomy` perturbs it per image (positioning,
inspiration, exposure, view) and :func:`render_anatomy` draws it. Drawing works on
bounding boxes of precomputed coordinate vectors, so a 512 px image costs a few
milliseconds: that is what lets ``monai-cxr synth`` write more than 100 images/s per core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

F32 = np.float32
AP_MAGNIFICATION = 1.07  # AP films: source closer, detector behind the back
AP_HEART_MAGNIFICATION = 1.05  # ... and the anterior heart is magnified even more


@dataclass(frozen=True, eq=False)
class Patient:
    """The parts of a chest that belong to the patient (shared by the follow-ups)."""

    cx: float  # midline
    thorax: float  # half-width of the rib cage
    apex: float  # y of the lung apices
    diaphragm: float  # y of the costophrenic angles (the lowest aerated lung)
    dome: float  # height of the diaphragm domes above the costophrenic angles
    mediastinum: float  # half-width of the mediastinum
    ctr: float  # cardiothoracic ratio: heart width / rib-cage width
    lung_depth: float  # how much darker aerated lung is than soft tissue
    tissue: float  # soft-tissue density
    rib_pitch: float
    rib_slope: float
    rib_curve: float
    rib_contrast: float
    vessels: np.ndarray  # (n, 4): x, y, sigma, contrast of lung markings
    texture: np.ndarray  # coarse random field, smoothly upsampled to the image
    noise: float  # quantum-noise SD, in density units


@dataclass(frozen=True, eq=False)
class Anatomy(Patient):
    """One image of a patient: the patient after view, positioning and exposure."""

    gain: float = 1.0
    offset: float = 0.0


def draw_patient(rng: np.random.Generator, male: bool) -> Patient:
    """A random patient: body habitus, heart, lungs, ribs, lung markings, texture, noise."""
    thorax = rng.uniform(0.33, 0.37) + (0.012 if male else -0.012)
    cx = 0.5 + rng.normal(0, 0.008)
    apex = rng.uniform(0.11, 0.16)
    diaphragm = rng.uniform(0.71, 0.78)
    mediastinum = rng.uniform(0.055, 0.075)
    n = int(rng.integers(40, 60))
    side = rng.choice((-1.0, 1.0), n)
    # Lung markings are densest near the hila and thin out towards the periphery.
    lateral = mediastinum + (thorax - mediastinum) * rng.beta(1.3, 2.0, n)
    vessels = np.stack(
        [
            cx + side * lateral,
            rng.uniform(apex + 0.05, diaphragm - 0.06, n),
            rng.uniform(0.010, 0.020, n),  # sigma: 2.5-5 % of width across
            rng.uniform(0.015, 0.035, n) * np.exp(-(lateral - mediastinum) / 0.25),
        ],
        axis=1,
    ).astype(F32)
    return Patient(
        cx=cx,
        thorax=thorax,
        apex=apex,
        diaphragm=diaphragm,
        dome=rng.uniform(0.045, 0.075),
        mediastinum=mediastinum,
        ctr=rng.uniform(0.38, 0.46),
        lung_depth=rng.uniform(0.20, 0.26),
        tissue=rng.uniform(0.42, 0.50),
        rib_pitch=rng.uniform(0.058, 0.070),
        rib_slope=rng.uniform(0.0, 0.15),
        rib_curve=rng.uniform(0.6, 1.0),
        rib_contrast=rng.uniform(0.045, 0.07),
        vessels=vessels,
        texture=rng.normal(0, 0.018, (10, 10)).astype(F32),
        noise=rng.uniform(0.018, 0.030),
    )


def image_anatomy(patient: Patient, rng: np.random.Generator, view: str) -> Anatomy:
    """The patient as one image shows them: positioning, inspiration, exposure and view.

    AP films magnify the thorax (more so the heart), are taken in shallower inspiration and
    are noisier; PA films are the reference.
    """
    p = patient
    vessels = p.vessels.copy()
    vessels[:, :2] += rng.normal(0, 0.003, (len(vessels), 2)).astype(F32)
    a = Anatomy(**{f: getattr(p, f) for f in Patient.__dataclass_fields__})
    a = replace(
        a,
        cx=p.cx + rng.normal(0, 0.006),
        diaphragm=p.diaphragm + rng.normal(0, 0.012),
        apex=p.apex + rng.normal(0, 0.004),
        vessels=vessels,
        texture=(p.texture + rng.normal(0, 0.006, p.texture.shape)).astype(F32),
        gain=rng.uniform(0.9, 1.1),
        offset=rng.uniform(-0.03, 0.03),
        noise=p.noise * rng.uniform(0.9, 1.1),
    )
    if view == "AP":
        m = AP_MAGNIFICATION
        vessels[:, 0] = 0.5 + (vessels[:, 0] - 0.5) * m
        vessels[:, 1] = 0.45 + (vessels[:, 1] - 0.45) * m
        vessels[:, 2] *= m
        a = replace(
            a,
            cx=0.5 + (a.cx - 0.5) * m,
            thorax=a.thorax * m,
            mediastinum=a.mediastinum * m,
            apex=0.45 + (a.apex - 0.45) * m,
            diaphragm=0.45 + (a.diaphragm - 0.45) * m - 0.03,
            ctr=a.ctr * AP_HEART_MAGNIFICATION,
            rib_pitch=a.rib_pitch * m,
            noise=a.noise * 1.3,
            rib_slope=a.rib_slope + 0.1,
        )
    return a


@lru_cache(maxsize=8)
def grid(size: int) -> np.ndarray:
    """Pixel-centre coordinates in fractions of the width (read-only)."""
    g = ((np.arange(size, dtype=np.float64) + 0.5) / size).astype(F32)
    g.flags.writeable = False
    return g


def window(size: int, x0: float, x1: float, y0: float, y1: float):
    """Row and column slices of the pixels inside a box given in fractions of the width."""
    c0, c1 = max(0, int(x0 * size)), min(size, int(np.ceil(x1 * size)) + 1)
    r0, r1 = max(0, int(y0 * size)), min(size, int(np.ceil(y1 * size)) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def ramp(v: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``v`` (>0 inside), edges ``edge`` wide. In place."""
    v *= 1.0 / edge
    v += 0.5
    return np.clip(v, 0.0, 1.0, out=v)


def heart_box(a: Anatomy):
    """Centre and semi-axes of the heart ellipse; its width is ``ctr`` x the rib-cage width."""
    ha = a.ctr * a.thorax
    hb = 0.85 * ha
    return a.cx + 0.3 * ha, a.diaphragm - 0.6 * hb, ha, hb


def lung_extent(a: Anatomy, side: int):
    """Medial and lateral x of one lung (side -1: image left = patient's right)."""
    return a.cx + side * a.mediastinum, a.cx + side * a.thorax


def render_anatomy(a: Anatomy, size: int):
    """Draw the normal chest: returns (density, lungs), float32 arrays of ``size`` x ``size``.

    ``density`` is brighter where the film would be whiter; ``lungs`` is the aerated lung
    field (0..1, heart excluded), where findings are placed.
    """
    g = grid(size)
    edge = max(1.5 / size, 0.004)
    dx = np.abs(g - F32(a.cx))
    # Body: neck, rounded shoulders, trunk; an elliptic cross-section makes the middle
    # (spine, mediastinum, abdomen) denser than the lateral chest wall. Air outside.
    # Below the shoulders every row is the same, so only the neck rows are computed in 2-D.
    neck = np.clip((g - F32(a.apex - 0.12)) / F32(0.10), 0.0, 1.0)
    shoulders = int(np.searchsorted(neck, 1.0))
    half = F32(a.thorax + 0.08) * (F32(0.4) + F32(0.6) * np.sqrt(neck[: shoulders + 1] * (2 - neck[: shoulders + 1])))
    section = dx[None, :] / half[:, None]
    np.square(section, out=section)
    np.subtract(1.0, section, out=section)
    np.sqrt(np.clip(section, 0.0, 1.0, out=section), out=section)
    section *= F32(1.2 * a.tissue)
    img = np.empty((size, size), F32)
    img[:shoulders] = section[:shoulders]
    img[shoulders:] = section[-1]
    # Spine and mediastinum a little denser; trachea darker.
    rows, cols = window(size, a.cx - a.mediastinum, a.cx + a.mediastinum, 0.0, 1.0)
    img[rows, cols] += 0.05 * ramp(F32(0.6 * a.mediastinum) - dx[cols], 0.02)[None, :]
    rows, cols = window(size, a.cx - 0.03, a.cx + 0.03, 0.0, a.apex + 0.2)
    img[rows, cols] -= 0.07 * ramp(F32(0.016) - dx[cols], 0.01)[None, :]

    lungs = np.zeros((size, size), F32)
    for side in (-1, 1):
        medial, lateral = lung_extent(a, side)
        centre, width = (medial + lateral) / 2, abs(lateral - medial)
        floor = a.diaphragm - (0.02 if side < 0 else 0.0)  # the right dome sits higher
        rows, cols = window(size, min(medial, lateral) - 0.01, max(medial, lateral) + 0.01, a.apex - 0.01, floor + 0.01)
        t = (g[rows] - F32(a.apex)) / F32(floor - a.apex)
        half_w = F32(width / 2) * np.sqrt(np.clip(t * 3, 0, 1)) * (F32(0.88) + F32(0.12) * t)
        inside = half_w[:, None] - np.abs(g[cols] - F32(centre))[None, :]
        u = (g[cols] - F32(centre - side * 0.15 * width)) / F32(width / 2)
        dome = F32(floor - a.dome) + F32(a.dome) * np.minimum(u * u, 1.0)
        np.minimum(inside, dome[None, :] - g[rows][:, None], out=inside)
        lungs[rows, cols] = ramp(inside, edge)

    # Heart (and aortic knob) hide the medial lower lungs.
    hx, hy, ha, hb = heart_box(a)
    rows, cols = window(size, hx - ha, hx + ha, hy - hb, hy + hb)
    q = np.square((g[cols] - F32(hx)) / F32(ha))[None, :] + np.square((g[rows] - F32(hy)) / F32(hb))[:, None]
    heart = ramp((1 - q) * F32(ha / 2), edge)
    lungs[rows, cols] *= 1 - heart
    img[rows, cols] += 0.03 * heart
    knob_x, knob_y, knob_r = a.cx + a.mediastinum + 0.005, a.apex + 0.13, 0.03
    rows, cols = window(size, knob_x - knob_r, knob_x + knob_r, knob_y - knob_r, knob_y + knob_r)
    r2 = np.square(g[cols] - F32(knob_x))[None, :] + np.square(g[rows] - F32(knob_y))[:, None]
    lungs[rows, cols] *= 1 - ramp(F32(knob_r) - np.sqrt(r2), edge)

    rows, cols = window(size, a.cx - a.thorax - 0.02, a.cx + a.thorax + 0.02, a.apex - 0.04, a.diaphragm + 0.02)
    img[rows, cols] -= F32(a.lung_depth) * lungs[rows, cols]
    _ribs(img, a, rows, cols, dx)
    img += smooth_field(a, size)
    return img, lungs


def smooth_field(a: Anatomy, size: int) -> np.ndarray:
    """Lung markings plus soft-tissue texture, as one matrix product.

    Both are sums of separable Gaussians (markings: one per vessel; texture: a coarse grid
    of random weights), so the whole field is ``left.T @ right`` with thin factors: about
    twenty times cheaper than adding spots one by one.
    """
    g = grid(size)
    x, y, sigma, amp = a.vessels.T
    ex = np.exp(-0.5 * np.square((g[None, :] - x[:, None]) / sigma[:, None]))
    ey = np.exp(-0.5 * np.square((g[None, :] - y[:, None]) / sigma[:, None])) * amp[:, None]
    basis = _texture_basis(size, a.texture.shape[0])
    left = np.concatenate([ey, basis])
    right = np.concatenate([ex, a.texture @ basis])
    return left.T @ right


@lru_cache(maxsize=8)
def _texture_basis(size: int, n: int) -> np.ndarray:
    """n Gaussian bumps evenly over [0, 1], overlapping so their sum is smooth."""
    centres = np.linspace(-0.05, 1.05, n)
    width = (centres[1] - centres[0]) * 0.75
    b = np.exp(-0.5 * np.square((grid(size)[None, :] - centres[:, None]) / width)).astype(F32)
    b.flags.writeable = False
    return b


def _ribs(img, a: Anatomy, rows, cols, dx):
    """Posterior ribs (arcs falling laterally), fainter anterior ribs, and the clavicles.

    A rib family is one periodic profile down the rows, shifted per column by the ribs'
    curvature; sampling that 1-D profile by index is several times cheaper than
    evaluating the pattern pixel by pixel (the shift is rounded to whole rows).
    """
    size = img.shape[0]
    g = grid(size)
    d = dx[cols]
    lateral = ramp(F32(a.thorax + 0.01) - d, 0.01) * ramp(d - F32(0.035), 0.01)
    # Fade in above the apices and out below the domes, instead of stopping at the box's edges.
    fade = ramp(g[rows] - F32(a.apex - 0.025), 0.04) * ramp(F32(a.diaphragm + 0.01) - g[rows], 0.05)
    r = np.arange(rows.start, rows.stop, dtype=np.intp)[:, None]
    edge = 2.0 * max(1.5 / size, 0.004) / a.rib_pitch
    ribs = None
    for shape, contrast, start in (
        (F32(a.rib_slope) * d + F32(a.rib_curve) * d * d, a.rib_contrast, a.apex - 0.03),
        (F32(0.35) - F32(0.9) * d, 0.45 * a.rib_contrast, a.apex + 0.02),
    ):
        shift = np.rint(shape * size).astype(np.intp)
        k0 = rows.start - int(shift.max())
        t = ((np.arange(k0, rows.stop - int(shift.min())) + 0.5) / size - start) / a.rib_pitch
        t -= np.floor(t) + 0.5
        profile = (contrast * ramp(0.2 - np.abs(t), edge)).astype(F32)
        band = profile[(r - k0) - shift[None, :]]
        ribs = band if ribs is None else np.add(ribs, band, out=ribs)
    ribs *= fade[:, None]
    ribs *= lateral[None, :]
    img[rows, cols] += ribs
    # Clavicles: from the sternal notch rising slightly towards the shoulders.
    crow, ccol = window(img.shape[0], a.cx - a.thorax - 0.04, a.cx + a.thorax + 0.04, a.apex - 0.06, a.apex + 0.06)
    dc = np.abs(g[ccol] - F32(a.cx))
    centre = F32(a.apex + 0.03) - F32(0.12) * dc
    band = F32(0.011) - np.abs(g[crow][:, None] - centre[None, :])
    band = ramp(band, 0.006) * ramp(dc - F32(0.02), 0.01)[None, :] * ramp(F32(a.thorax + 0.035) - dc, 0.01)[None, :]
    img[crow, ccol] += F32(0.06) * band
