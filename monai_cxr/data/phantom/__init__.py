"""The phantom: a synthetic chest-radiograph dataset written exactly as an NIH ChestX-ray14 release.

``synthesize`` writes ``Data_Entry_2017.csv`` (NIH's header and row format), 8-bit grayscale
PNGs under ``images/``, ``train_val_list.txt`` / ``test_list.txt`` (about 80/20 by patient),
``PHANTOM.md`` (says the data are synthetic and how each finding is drawn) and
``phantom_findings.csv`` (the drawn geometry, like NIH's ``BBox_List_2017.csv``).

Each patient has 1-4 images (follow-ups), PA or AP. Labels are independent per image, with
a settable prevalence. Every image draws from its own seed, ``SeedSequence([seed, 2,
patient, follow-up])``, so the output is identical for the same seed whatever the number of
worker processes, and ``render_image`` reproduces any single image.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from monai_cxr.data.phantom import findings as pf
from monai_cxr.data.phantom.anatomy import (
    AP_HEART_MAGNIFICATION,
    AP_MAGNIFICATION,
    draw_patient,
    image_anatomy,
    render_anatomy,
)
from monai_cxr.errors import CxrError
from monai_cxr.fileio import atomic_write, write_text
from monai_cxr.progress import progress_bar

LABELS = pf.FINDINGS
NO_FINDING = "No Finding"
DEFAULT_PREVALENCE = {label: 0.25 for label in LABELS}
FOLLOWUP_WEIGHTS = (0.3, 0.3, 0.2, 0.2)  # P(1, 2, 3, 4 images per patient)
AP_FRACTION = 0.4  # NIH: 44,810 AP of 112,120
TEST_FRACTION = 0.2
FIELD_OF_VIEW_MM = 430.0  # a 17-inch detector: sets OriginalImagePixelSpacing
CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


@dataclass(frozen=True)
class ImageSpec:
    """One row of the data-entry table, before it is drawn."""

    image_id: str
    patient_id: int
    followup: int
    view: str
    age: int
    sex: str
    labels: tuple  # subset of LABELS, in LABELS order

    @property
    def finding_labels(self) -> str:
        return "|".join(self.labels) if self.labels else NO_FINDING


def resolve_prevalence(prevalence=None) -> dict:
    """Per-label prevalence from None (defaults), one float for all labels, or a dict label -> float."""
    if prevalence is None:
        return dict(DEFAULT_PREVALENCE)
    if isinstance(prevalence, dict):
        unknown = [k for k in prevalence if k not in LABELS]
        if unknown:
            raise CxrError(
                f"unknown phantom label(s) {', '.join(map(repr, unknown))} in prevalence; allowed: {', '.join(LABELS)}"
            )
        out = dict(DEFAULT_PREVALENCE)
        out.update(prevalence)
    else:
        out = {label: prevalence for label in LABELS}
    bad = {
        k: v for k, v in out.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0
    }
    if bad:
        raise CxrError("prevalence must be a number in [0, 1]; got " + ", ".join(f"{k}={v!r}" for k, v in bad.items()))
    return {k: float(v) for k, v in out.items()}


def parse_prevalence(text: str | None):
    """The ``--prevalence`` option: ``0.3`` for every label, or ``Nodule=0.3,Mass=0.2``."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if "=" not in text:
        try:
            return float(text)
        except ValueError:
            raise CxrError(f"prevalence {text!r} is not a number (expected e.g. 0.25 or Nodule=0.3,Mass=0.2)") from None
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key.strip() in out:
            raise CxrError(f"prevalence of {key.strip()!r} is given twice in {text!r}; give each label once")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise CxrError(f"prevalence item {item.strip()!r} is not LABEL=NUMBER (e.g. Nodule=0.3)") from None
    return out


def plan(patients: int, seed: int = 0, prevalence=None) -> list[ImageSpec]:
    """The table of images: patients, follow-ups, views, demographics and labels (no pixels)."""
    prev = resolve_prevalence(prevalence)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    counts = rng.choice(np.arange(1, len(FOLLOWUP_WEIGHTS) + 1), patients, p=FOLLOWUP_WEIGHTS)
    ages = rng.integers(20, 86, patients)
    sexes = np.where(rng.random(patients) < 0.56, "M", "F")
    total = int(counts.sum())
    views = np.where(rng.random(total) < AP_FRACTION, "AP", "PA")
    draws = rng.random((total, len(LABELS)))
    thresholds = np.array([prev[label] for label in LABELS])
    specs, k = [], 0
    for p in range(patients):
        for f in range(int(counts[p])):
            labels = tuple(label for label, hit in zip(LABELS, draws[k] < thresholds) if hit)
            specs.append(
                ImageSpec(
                    f"{p + 1:08d}_{f:03d}.png", p + 1, f, str(views[k]), int(ages[p]) + f // 2, str(sexes[p]), labels
                )
            )
            k += 1
    return specs


def split_patients(patients: int, seed: int = 0) -> set:
    """Patient ids of the official-style test list: about 20 %, at least one when there are two patients."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    n_test = min(max(round(TEST_FRACTION * patients), 1 if patients >= 2 else 0), patients - 1)
    return set((rng.permutation(patients)[: max(n_test, 0)] + 1).tolist())


def render_image(spec: ImageSpec, size: int, seed: int = 0):
    """Draw one image: (uint8 array size x size, list of geometry records of its findings)."""
    patient_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, spec.patient_id]))
    patient = draw_patient(patient_rng, spec.sex == "M")
    streams = np.random.SeedSequence([seed, 2, spec.patient_id, spec.followup]).spawn(2 + len(LABELS))
    finding_rng = {label: np.random.default_rng(s) for label, s in zip(LABELS, streams[2:])}
    patient, records = pf.apply_to_anatomy(patient, spec.labels, finding_rng)
    anatomy = image_anatomy(patient, np.random.default_rng(streams[0]), spec.view)
    density, lungs = render_anatomy(anatomy, size)
    records += pf.draw_findings(density, lungs, anatomy, spec.labels, finding_rng)
    pixels = _expose(density, anatomy, np.random.default_rng(streams[1]))
    return pixels, records


def _expose(density, a, rng):
    """Density -> 8-bit film: exposure gain/offset plus quantum noise (triangular, from raw bytes: fast)."""
    size = density.shape[0]
    raw = np.frombuffer(rng.bytes(2 * size * size), np.uint8).reshape(2, size, size)
    out = raw[0].astype(np.float32)
    out += raw[1]
    # Two uniform bytes sum to a triangular variable with SD 255/sqrt(6) around 255.
    out *= np.float32(a.noise * 255.0 * math.sqrt(6.0) / 255.0)
    out += density * np.float32(255.0 * a.gain)
    out += np.float32(255.0 * a.offset - a.noise * math.sqrt(6.0) * 255.0 + 0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG, "Up" filter and Huffman-only deflate.

    Noisy radiographs barely compress with LZ matching; Huffman coding of row differences
    gives smaller files than PIL's ``compress_level=1`` at a quarter of the time.
    """
    h, w = pixels.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY)
    data = z.compress(rows.tobytes()) + z.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def _one_blas_thread():
    """Keep BLAS to one thread: the small matrix products of the drawing run 3x slower
    when a BLAS thread pool spins up for each of them (and workers already use every core)."""
    return threadpool_limits(limits=1, user_api="blas")


def _render_patient(job):
    """Worker task: draw and write every image of one patient; return their geometry records."""
    specs, size, seed, image_dir = job
    out = []
    for spec in specs:
        pixels, records = render_image(spec, size, seed)
        png = encode_png(pixels)
        atomic_write(Path(image_dir) / spec.image_id, lambda tmp, png=png: tmp.write_bytes(png))
        out += [{"image_id": spec.image_id, **r} for r in records]
    return out


def synthesize(
    out, patients: int = 200, size: int = 512, seed: int = 0, prevalence=None, workers: int = 0, force: bool = False
) -> str:
    """Write the phantom dataset into ``out`` in the NIH ChestX-ray14 layout; return a summary line.

    A folder that already holds files is refused unless ``force``: it may be a real dataset.
    """
    for name, value, low in (("patients", patients, 1), ("size", size, 16), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise CxrError(f"{name} must be an integer >= {low}; got {value!r}")
    prev = resolve_prevalence(prevalence)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrError(f"output {str(out)!r} exists and is not a folder")
    if not force and out.is_dir() and any(out.iterdir()):
        raise CxrError(
            f"output folder {str(out)!r} is not empty; synth writes only into an empty or new folder "
            f"(--force to overwrite a phantom there)"
        )
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    specs = plan(patients, seed, prev)
    by_patient: dict[int, list] = {}
    for s in specs:
        by_patient.setdefault(s.patient_id, []).append(s)
    jobs = [(group, size, seed, str(image_dir)) for group in by_patient.values()]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    records = []
    bar = progress_bar(total=len(specs), unit="img", desc="synth")  # shown on a terminal only
    if workers <= 1:
        with _one_blas_thread():
            for job in jobs:
                records += _render_patient(job)
                bar.update(len(job[0]))
    else:
        with multiprocessing.get_context().Pool(workers, initializer=_one_blas_thread) as pool:
            for job, rec in zip(jobs, pool.imap(_render_patient, jobs, chunksize=max(1, len(jobs) // (8 * workers)))):
                records += rec
                bar.update(len(job[0]))
    bar.close()

    test_ids = split_patients(patients, seed)
    spacing = f"{FIELD_OF_VIEW_MM / size:.3f}"
    rows = [CSV_HEADER] + [
        f"{s.image_id},{s.finding_labels},{s.followup},{s.patient_id},{s.age},{s.sex},{s.view},"
        f"{size},{size},{spacing},{spacing}"
        for s in specs
    ]
    write_text(out / "train_val_list.txt", "".join(f"{s.image_id}\n" for s in specs if s.patient_id not in test_ids))
    write_text(out / "test_list.txt", "".join(f"{s.image_id}\n" for s in specs if s.patient_id in test_ids))
    write_text(out / "phantom_findings.csv", _findings_csv(records))
    counts = Counter(label for s in specs for label in s.labels)
    no_finding = sum(1 for s in specs if not s.labels)
    write_text(
        out / "PHANTOM.md",
        phantom_card(
            patients=patients,
            size=size,
            seed=seed,
            prevalence=prev,
            images=len(specs),
            counts=counts,
            no_finding=no_finding,
        ),
    )
    write_text(out / "Data_Entry_2017.csv", "\n".join(rows) + "\n")  # last: it makes the folder a dataset
    n_test = sum(1 for s in specs if s.patient_id in test_ids)
    per_label = ", ".join(f"{label} {counts[label]}" for label in LABELS)
    return (
        f"SYNTHETIC phantom: {len(specs)} images of {patients} patients, {size}x{size} px, seed {seed} "
        f"-> {out} (train_val {len(specs) - n_test}, test {n_test} images). Positives: {per_label}; "
        f"{NO_FINDING} {no_finding}. See {out / 'PHANTOM.md'}."
    )


def _findings_csv(records) -> str:
    columns = ["image_id", "finding", "x", "y", "width_px", "height_px", "fraction", "contrast"]
    lines = [",".join(columns)]
    for r in records:
        if "x" in r:  # drawn findings; Cardiomegaly and Emphysema change the anatomy instead
            lines.append(",".join(str(r[c]) for c in columns))
    return "\n".join(lines) + "\n"


def phantom_card(patients, size, seed, prevalence, images, counts, no_finding) -> str:
    """The text of PHANTOM.md: what the data are and how each finding is drawn."""

    def sz(lo, hi=None):
        hi = lo if hi is None else hi
        px = f"{lo * size:.1f}-{hi * size:.1f} px" if hi != lo else f"{lo * size:.1f} px"
        pct = f"{100 * lo:.1f}-{100 * hi:.1f} %" if hi != lo else f"{100 * lo:.1f} %"
        at_32, at_128 = f"{lo * 32:.1f}-{hi * 32:.1f} px at 32", f"{lo * 128:.1f}-{hi * 128:.1f} px at 128"
        return f"{pct} of width ({px} at {size} px; {at_32}, {at_128})"

    def c(pair):
        return f"{pair[0]:.2f}-{pair[1]:.2f}"

    rows = {
        "Nodule": f"{pf.NODULE_COUNT[0]}-{pf.NODULE_COUNT[1]} round opacities (projected solid spheres), "
        f"diameter {sz(*pf.NODULE_DIAMETER)}, peak contrast +{c(pf.NODULE_CONTRAST)}, inside the aerated lungs",
        "Mass": f"one lobulated round opacity, diameter {sz(*pf.MASS_DIAMETER)}, peak contrast +{c(pf.MASS_CONTRAST)}, "
        f"centred in a lung",
        "Cardiomegaly": f"heart width / rib-cage width (CTR) {c(pf.CARDIOMEGALY_CTR)} on PA (normal 0.38-0.46); "
        f"heart {sz(2 * 0.33 * pf.CARDIOMEGALY_CTR[0], 2 * 0.37 * pf.CARDIOMEGALY_CTR[1])} wide",
        "Effusion": f"fluid filling a costophrenic angle (right, left or both) up to {sz(*pf.EFFUSION_HEIGHT)}, "
        "meniscus climbing the lateral wall; the lung there turns as dense as soft tissue (+0.19-0.25)",
        "Emphysema": f"lungs darker by {c(pf.EMPHYSEMA_DARKENING)}, diaphragm domes flattened to "
        f"{pf.EMPHYSEMA_DOME:.0%} of their height and lowered by {sz(*pf.EMPHYSEMA_DESCENT)}, "
        "lung markings halved, chest 3 % wider",
        "Edema": f"bilateral perihilar haze (Gaussian, SD {sz(*pf.EDEMA_HAZE_SIGMA)}, "
        f"contrast +{c(pf.EDEMA_HAZE_CONTRAST)}) "
        f"plus {pf.EDEMA_LINES[0]}-{pf.EDEMA_LINES[1]} Kerley B lines per lung at the bases, "
        f"{sz(*pf.EDEMA_LINE_LENGTH)} long, 0.3 % of width (at least 1 px) thick, +{pf.EDEMA_LINE_CONTRAST:.2f}",
        "Atelectasis": f"plate-like band in a lower zone, length {sz(*pf.ATELECTASIS_LENGTH)}, "
        f"thickness {sz(*pf.ATELECTASIS_THICKNESS)}, within 15 degrees of horizontal, "
        f"contrast +{c(pf.ATELECTASIS_CONTRAST)}",
        "Hernia": f"retrocardiac gas bubble with an air-fluid level, diameter {sz(*pf.HERNIA_DIAMETER)}, "
        f"contrast -{c(pf.HERNIA_CONTRAST)} with a thin wall",
    }
    table = "\n".join(
        f"| {label} | {counts.get(label, 0)} | {prevalence[label]:.2f} | {rows[label]} |" for label in LABELS
    )
    return f"""# PHANTOM — SYNTHETIC DATA

**These images are synthetic.** They were generated procedurally by `monai-cxr synth`
(monai-cxr's chest-radiograph phantom). They show no real patient, and no result obtained
on them says anything about real radiographs or real diagnostic performance.

The folder mimics an NIH ChestX-ray14 release (`Data_Entry_2017.csv`, `images/`,
`train_val_list.txt`, `test_list.txt`) so that the same code reads both.

## Settings

- seed: {seed}
- patients: {patients}; images: {images} (1-4 follow-ups per patient, {AP_FRACTION:.0%} AP)
- size: {size} x {size} px (pixel spacing written as {FIELD_OF_VIEW_MM / size:.3f} mm)
- test list: about {TEST_FRACTION:.0%} of patients; no patient in both lists
- labels are drawn independently per image; `No Finding`: {no_finding} images

## Anatomy

Every patient has their own rib cage width, midline, lung apices, diaphragm height and
dome shape, mediastinum width, heart size (CTR 0.38-0.46), lung lucency, soft-tissue
density, rib spacing and curvature, lung markings (40-60 Gaussian spots of SD 1-2 % of
width, contrast up to 0.035, densest near the hila), a smooth soft-tissue texture and a
noise level. Follow-ups share these but differ in positioning, inspiration, exposure and
noise. AP images are magnified (thorax x{AP_MAGNIFICATION:.2f}, heart
x{AP_MAGNIFICATION * AP_HEART_MAGNIFICATION:.2f}), taken in shallower inspiration and noisier.

Densities: air outside the body ~0, soft tissue 0.42-0.50, aerated lung 0.20-0.26 darker,
posterior ribs +0.045-0.07, quantum noise SD 0.018-0.03 per pixel (x1.3 on AP); the film is
density x 255 x gain (0.9-1.1) + offset.

## Findings

Sizes are fractions of the image width, so the resolution each finding needs is known by
construction. Contrasts are in the density units above.

| Label | Positive images | Prevalence | How it is drawn |
|---|---|---|---|
{table}

Nodule and Mass contrasts were calibrated by training (`benchmarks/calibrate_phantom.py`:
one ResNet34 per label from scratch, ~1500 presentations, images area-averaged from 256 px):
a mass is learnt already at 32 px, nodules are near chance at 32 px and learnt at 128 px.

`phantom_findings.csv` lists every drawn finding (centre, extent in px, fraction of width,
contrast), like NIH's bounding-box list.
"""
