"""Published numbers, as data with their sources, shown beside measured runs as "reported" rows.

They are stored in the units of our records: accuracies, error rates and ECE as fractions, NLL in
nats, mCE in percent. A reported row appears only in a leaderboard block whose dataset AND backbone
match, and it is never ranked. (A dataset's mCE reference, e.g. AlexNet's ImageNet-C errors from
Hendrycks and Dietterich 2019, is declared by the dataset:
:attr:`benchmark.data.base.DatasetSpec.mce_reference`.)

References: each source, and what was taken from it.

- google/uncertainty-baselines (UB), ``baselines/cifar/README.md``
  (https://github.com/google/uncertainty-baselines/blob/main/baselines/cifar/README.md):
  CIFAR-10, WRN-28-10: accuracy, NLL, ECE, and cA, cNLL, cECE (mean over the 15 benchmark
  corruptions x 5 severities), test forward passes and parameters, of the deterministic model, MC
  dropout with 1 and 30 samples, BatchEnsemble M=4, MIMO M=3 and the deep ensemble M=4.
  CIFAR-100, WRN-28-10: the same methods' accuracy, NLL, ECE, cA, cNLL and cECE, whose corrupted
  figures average UB's 17 corruptions (the 15 minus motion blur and snow, plus 4 extras; our
  ``benchmark15`` set differs), and test time in ms per example on 8 TPUv2 cores (deterministic
  0.079, MIMO 0.080, BatchEnsemble 0.319, deep ensemble 0.317, MC dropout K=30 2.457), kept as a
  row note only: it is not comparable with our measured ms.
- google/uncertainty-baselines, ``baselines/imagenet/README.md``
  (https://github.com/google/uncertainty-baselines/blob/main/baselines/imagenet/README.md):
  ImageNet, ResNet-50: NLL, accuracy and ECE on ImageNet and ImageNet-C, mCE, parameters and
  forward passes of the deterministic model, BatchEnsemble M=4, MIMO M=2 (rho 0.6, batch
  repetition 2), MC dropout with 10 samples and the deep ensemble M=4. UB's ImageNet-C comes from a
  TFDS regeneration of the corruptions, not the released JPEGs: the same model may score slightly
  differently on the official files.
- Havasi et al., "Training independent subnetworks for robust prediction" (MIMO), ICLR 2021: its
  tables report the same UB runs (nothing else is taken from it here).
- The CIFAR recipes in :data:`PAPER_RECIPES` (the epochs a block must reach to be read as a
  reproduction): UB's ``baselines/cifar/{deterministic,dropout,batchensemble,mimo}.py`` (200
  epochs deterministic, 250 BatchEnsemble and MIMO) with google/edward2's layers; ImageNet: MIMO's
  150-epoch ImageNet recipe in UB, and 90 epochs as the shortest budget accepted.
- Zhang, Gao, Sabuncu, "Ex uno plures" (non-overlapping subnetwork ensembles), arXiv 2106.04767:
  only the abstract is available and no numbers were found, so the subnetwork ensemble has no
  reported row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UB_CIFAR = "UB baselines/cifar/README.md"
UB_IMAGENET = "UB baselines/imagenet/README.md"
UB_URL_CIFAR = "https://github.com/google/uncertainty-baselines/blob/main/baselines/cifar/README.md"
UB_URL_IMAGENET = "https://github.com/google/uncertainty-baselines/blob/main/baselines/imagenet/README.md"


@dataclass(frozen=True)
class Reported:
    """One published row: identity, source, and metrics named as the leaderboard's columns."""

    dataset: str
    backbone: str
    method: str
    variant: str
    members: int
    source: str
    url: str
    metrics: dict[str, float] = field(default_factory=dict)
    corruption_set: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        return f"reported ({self.source})"


# Paper recipes: the budget a measured block must match to be read as a reproduction.
PAPER_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("cifar10", "wrn28-10"): {"min_epochs": 200, "text": "WRN-28-10, 200-250 epochs, official CIFAR-10 test set, full CIFAR-10-C"},
    ("cifar100", "wrn28-10"): {"min_epochs": 200, "text": "WRN-28-10, 200-250 epochs, official CIFAR-100 test set, full CIFAR-100-C"},
    ("imagenet", "resnet50"): {"min_epochs": 90, "text": "ResNet-50, 90-150 epochs, official ImageNet validation set, full ImageNet-C"},
}


def _c10(method: str, variant: str, members: int, acc: float, nll: float, ece: float, ca: float, cnll: float, cece: float,
         passes: int, params: float) -> Reported:
    return Reported("cifar10", "wrn28-10", method, variant, members, UB_CIFAR, UB_URL_CIFAR,
                    {"accuracy": acc / 100, "nll": nll, "ece": ece, "cA": ca / 100, "cNLL": cnll, "cECE": cece,
                     "forward_passes": passes, "params": params}, corruption_set="benchmark15")


def _c100(method: str, variant: str, members: int, acc: float, nll: float, ece: float, ca: float, cnll: float, cece: float,
          ms: float | None = None) -> Reported:
    metrics = {"accuracy": acc / 100, "nll": nll, "ece": ece, "cA": ca / 100, "cNLL": cnll, "cECE": cece}
    note = ""
    if ms is not None:
        note = f"test time {ms} ms per example on 8 TPUv2 cores (not comparable with our measured ms)"
    return Reported("cifar100", "wrn28-10", method, variant, members, UB_CIFAR, UB_URL_CIFAR, metrics, corruption_set="cifar100-ub17", note=note)


def _inet(method: str, variant: str, members: int, clean: tuple[float, float, float], corrupted: tuple[float, float, float], mce: float,
          params: float, passes: int) -> Reported:
    nll, acc, ece = clean
    cnll, ca, cece = corrupted
    return Reported("imagenet", "resnet50", method, variant, members, UB_IMAGENET, UB_URL_IMAGENET,
                    {"accuracy": acc / 100, "nll": nll, "ece": ece, "cA": ca / 100, "cNLL": cnll, "cECE": cece, "mCE": mce,
                     "params": params, "forward_passes": passes}, corruption_set="benchmark15",
                    note="ImageNet-C regenerated through TFDS, not the Zenodo JPEGs")


REPORTED: tuple[Reported, ...] = (
    # CIFAR-10, WRN-28-10; corrupted = mean over the 15 benchmark corruptions x 5 severities.
    _c10("deterministic", "", 1, 96.0, 0.159, 0.0231, 76.1, 1.05, 0.153, 1, 36.5e6),
    _c10("mc_dropout", "K=1", 1, 95.9, 0.160, 0.0241, 68.8, 1.27, 0.166, 1, 36.5e6),
    _c10("mc_dropout", "K=30", 30, 96.1, 0.145, 0.019, 70.0, 1.27, 0.167, 30, 36.5e6),
    _c10("batchensemble", "M=4", 4, 96.3, 0.136, 0.0177, 77.8, 0.97, 0.124, 4, 36.6e6),
    _c10("mimo", "M=3", 3, 96.4, 0.123, 0.010, 76.6, 0.927, 0.112, 1, 36.5e6),
    _c10("deep_ensemble", "M=4", 4, 96.6, 0.114, 0.010, 77.9, 0.81, 0.087, 4, 146e6),
    # CIFAR-100, WRN-28-10; corrupted = UB's 17 corruptions.
    _c100("deterministic", "", 1, 79.8, 0.875, 0.0857, 51.37, 2.70, 0.239, ms=0.079),
    _c100("mc_dropout", "K=1", 1, 79.6, 0.830, 0.0501, 42.63, 2.90, 0.202),
    _c100("mc_dropout", "K=30", 30, 80.7, 0.785, 0.0487, 46.2, 2.73, 0.207, ms=2.457),
    _c100("batchensemble", "M=4", 4, 81.9, 0.690, 0.0265, 53.1, 2.56, 0.149, ms=0.319),
    _c100("mimo", "M=3", 3, 82.0, 0.690, 0.022, 53.7, 2.28, 0.129, ms=0.080),
    _c100("deep_ensemble", "M=4", 4, 82.7, 0.666, 0.021, 54.1, 2.27, 0.138, ms=0.317),
    # ImageNet, ResNet-50; cells NLL / acc / ECE, ImageNet-C adds mCE.
    _inet("deterministic", "", 1, (0.939, 76.2, 0.032), (3.21, 40.5, 0.103), 75.4, 25.6e6, 1),
    _inet("batchensemble", "M=4", 4, (0.922, 76.8, 0.037), (3.09, 41.9, 0.089), 73.5, 25.8e6, 4),
    _inet("mimo", "M=2,rho=0.6,rep=2", 2, (0.887, 77.5, 0.037), (3.03, 43.3, 0.106), 71.7, 27.7e6, 1),
    _inet("mc_dropout", "K=10", 10, (0.919, 76.6, 0.026), (2.96, 42.4, 0.046), 72.9, 25.6e6, 10),
    _inet("deep_ensemble", "M=4", 4, (0.857, 77.9, 0.017), (2.82, 44.9, 0.047), 69.5, 102.4e6, 4),
)


def reported_for(dataset: str, backbone: str) -> list[Reported]:
    """Published rows for exactly this dataset and backbone (none for e.g. ``cifar10-jpeg``)."""
    return [r for r in REPORTED if r.dataset == dataset and r.backbone == backbone]


# The classes the published figures are measured on (a block whose records have other class counts,
# e.g. a 100-class ImageNet smoke run, gets no reported rows).
REPORTED_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def paper_recipe(dataset: str, backbone: str) -> dict[str, Any] | None:
    """The published training recipe of this dataset and backbone, if any."""
    return PAPER_RECIPES.get((dataset, backbone))
