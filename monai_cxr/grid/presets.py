"""The studies ``monai-cxr study`` knows: what data, which grid, which training settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from monai_cxr.grid.settings import GridSettings

__all__ = ["PAPER_LABELS", "PAPER_RESOLUTIONS", "PRESETS", "Preset"]

# Sabottke & Spieler 2020 (FACTS.md): eight labels, nine resolutions, two architectures.
PAPER_LABELS = ["Emphysema", "Cardiomegaly", "Hernia", "Edema", "Effusion", "Atelectasis", "Mass", "Nodule"]
PAPER_RESOLUTIONS = [32, 64, 128, 224, 256, 320, 448, 512, 600]


@dataclass(frozen=True)
class Preset:
    """A named study: defaults for ``monai-cxr study``, each of which an option overrides.

    Attributes:
        synthetic: synthesise the phantom (``phantom`` holds ``synthesize`` arguments) unless
            ``--data-dir`` (or ``--table``) names data.
        grid: the ``generate`` settings.
        jobs: cells run at a time by the local executor.
        split_seed: the seed of the patient split (``prepare --seed``).
    """

    name: str
    description: str
    grid: GridSettings
    synthetic: bool = False
    phantom: dict = field(default_factory=dict)
    jobs: int = 1
    split_seed: int = 0

    def describe(self, grid: GridSettings | None = None, description: str | None = None) -> str:
        """The description (or ``description``), and how the networks of ``grid`` (default: the preset's) start."""
        grid, description = grid or self.grid, description or self.description
        started = [arch for arch in grid.archs if arch in grid.pretrained]
        if not started:
            return f"{description}, from scratch"
        rest = [arch for arch in grid.archs if arch not in grid.pretrained]
        return f"{description}, fine-tuned from the --pretrained weights of {', '.join(started)}" + (
            f"; {', '.join(rest)} from scratch" if rest else ""
        )

    def settings(self) -> dict:
        """The settings the preset fixes, by the command line's names (``learning_rate``, ``seed``, ``jobs``)."""
        return {"dataset": "nih", "seed": self.split_seed, **asdict(self.grid), "jobs": self.jobs}


PRESETS = {
    # About 3-4 minutes on a 2-core CPU (3 x 384 images per cell): the phantom is calibrated
    # (benchmarks/calibrate_phantom.py) so that a mass is learnt at 32 px, a nodule only at 128 px.
    "quick": Preset(
        name="quick",
        description="the phantom, Mass and Nodule at 32 and 128 px, ResNet34, CPU-sized",
        synthetic=True,
        phantom={"patients": 200, "size": 256, "seed": 0},
        grid=GridSettings(
            labels=["Mass", "Nodule"],
            resolutions=[32, 128],
            archs=["resnet34"],
            seeds=[0],
            epochs=3,
            batch_size=16,
            subsample=384,
            learning_rate=1e-3,
        ),
        jobs=2,
    ),
    # The paper's analysis at CPU scale, on the phantom (results/phantom-grid): Mass and Nodule,
    # four sizes around where the phantom's nodules vanish, both architectures, three seeds
    # pooled, scored on a held-out test fold. About 48 cells of CPU minutes each.
    "phantom-grid": Preset(
        name="phantom-grid",
        description="the phantom, Mass and Nodule at 32, 64, 96 and 128 px, ResNet34 and DenseNet121, 3 seeds",
        synthetic=True,
        phantom={"patients": 300, "size": 256, "seed": 0},
        grid=GridSettings(
            labels=["Mass", "Nodule"],
            resolutions=[32, 64, 96, 128],
            archs=["resnet34", "densenet121"],
            seeds=[0, 1, 2],
            epochs=3,
            batch_size=16,
            subsample=384,
            learning_rate=1e-3,
        ),
        jobs=2,
    ),
    # The published grid, for a GPU and NIH ChestX-ray14: 8 x 9 x 2 = 144 cells,
    # ten class-balanced subsample epochs each (the paper's Figure 4). The paper used standard
    # ImageNet architectures: --pretrained resnet34=...,densenet121=... (torchvision's files, see
    # the README) starts them from ImageNet; without it the cells train from scratch. The speed options
    # (bf16, falling back to fp16 on GPUs without it; NHWC; cuDNN autotuning; pinned memory)
    # are off on a CPU; run.json records what each cell got.
    "paper": Preset(
        name="paper",
        description="NIH ChestX-ray14, the published grid (8 labels x 9 resolutions x ResNet34, DenseNet121)",
        grid=GridSettings(
            labels=list(PAPER_LABELS),
            resolutions=list(PAPER_RESOLUTIONS),
            archs=["resnet34", "densenet121"],
            seeds=[0],
            epochs=10,
            batch_size=32,
            subsample=8192,
            learning_rate=1e-3,
            augment_prob=0.5,
            loader_workers=4,
            amp="bf16",
            channels_last=True,
            cudnn_benchmark=True,
            pin_memory=True,
        ),
    ),
}
