"""The one home of every evaluation default: plain constants, no imports (the CLI reads them for ``--help``).

`EvalConfig` (``ssl_toolkit/config.py``), the ``ssl-toolkit eval`` options, `evaluate_encoder_dir`,
`evaluate`, `score_features`, `linear_probe` and the k-NN functions all take their defaults from here, so
the command line and the Python API cannot disagree. The definitions these numbers parametrise are in
``docs/evaluation.md``.
"""

from __future__ import annotations

# --- k-NN (docs/evaluation.md, "k-NN") ---------------------------------------------------------------
# protocol -> (k, temperature): InstDisc / lightly's benchmarks, and DINO / solo-learn
KNN_PROTOCOLS: dict[str, tuple[int, float]] = {"instdisc": (200, 0.1), "dino": (20, 0.07)}
# the torch fallback's similarity block (queries x bank) holds at most this many float32 values (256 MiB)
KNN_TORCH_BLOCK_ELEMENTS = 1 << 26
# queries per FAISS call (bounds the (chunk, k) result arrays, not the bank)
KNN_FAISS_QUERY_CHUNK = 4096

# --- linear probe (docs/evaluation.md, "Linear probe") -----------------------------------------------
# The grid of the measured default job (eval/RESULTS.md, `ssl-toolkit train` with EvalConfig's lrs); the
# Python API's former 0.3..0.01 grid was never used for a published row.
LINEAR_LRS: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03)
LINEAR_BATCH_NORM: tuple[bool, ...] = (False, True)
LINEAR_EPOCHS = 30
LINEAR_BATCH_SIZE = 512
LINEAR_WEIGHT_DECAY = 0.0
LINEAR_VAL_FRACTION = 0.1

# --- RankMe (Garrido et al., ICML 2023) --------------------------------------------------------------
RANKME_SAMPLES = 25_600  # the paper's sample count
RANKME_EPS = 1e-7

# --- alpha-ReQ (Agrawal et al., NeurIPS 2022) --------------------------------------------------------
# 1-based eigenvalue ranks of the least-squares fit, both ends included: reptrix's default fit range
# (np.arange(10, 100) on 0-based indices), written by a co-author of the paper
ALPHA_REQ_FIT_RANGE: tuple[int, int] = (11, 100)

# --- LiDAR (Thilak et al., 2023) ---------------------------------------------------------------------
LIDAR_SAMPLES = 1000  # clean samples ("surrogate classes"); the paper uses 1000
LIDAR_VIEWS = 8  # augmented views of each (the paper uses up to 50; 8 keeps eval cheap)
LIDAR_DELTA = 1e-4  # ridge on the within-class scatter (stable-pretraining's default)
LIDAR_EPS = 1e-7  # added to the normalised eigenvalues, as in RankMe
LIDAR_AUGMENT = "simclr"  # view preset of ssl_toolkit.data.build_view_transform

# --- embedding statistics ----------------------------------------------------------------------------
# a dimension is "dead" when its std over the samples is below this fraction of the largest dimension's std
DEAD_DIM_RELATIVE_STD = 1e-4

# --- evaluation runs ---------------------------------------------------------------------------------
EVAL_BATCH_SIZE = 512  # images per encoder forward during feature extraction
FLOORS = True  # also score the raw-pixel and random-init floors
RAW_PIXELS_MAX_SIZE = 32  # the raw-pixel floor resizes larger images to this side (28 px Fashion-MNIST stays)
RECALIBRATE_BATCHES = 20  # clean batches that re-estimate the random-init floor's BatchNorm statistics
RECALIBRATE_BATCH_SIZE = 256
SEED = 0

__all__ = [
    "ALPHA_REQ_FIT_RANGE",
    "DEAD_DIM_RELATIVE_STD",
    "EVAL_BATCH_SIZE",
    "FLOORS",
    "KNN_FAISS_QUERY_CHUNK",
    "KNN_PROTOCOLS",
    "KNN_TORCH_BLOCK_ELEMENTS",
    "LIDAR_AUGMENT",
    "LIDAR_DELTA",
    "LIDAR_EPS",
    "LIDAR_SAMPLES",
    "LIDAR_VIEWS",
    "LINEAR_BATCH_NORM",
    "LINEAR_BATCH_SIZE",
    "LINEAR_EPOCHS",
    "LINEAR_LRS",
    "LINEAR_VAL_FRACTION",
    "LINEAR_WEIGHT_DECAY",
    "RANKME_EPS",
    "RANKME_SAMPLES",
    "RAW_PIXELS_MAX_SIZE",
    "RECALIBRATE_BATCHES",
    "RECALIBRATE_BATCH_SIZE",
    "SEED",
]
