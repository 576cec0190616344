"""The names and numbers a user chooses from, in one light home (no heavy imports).

``is5net --help`` shows the choices of every command; if they lived in the modules that use them, building
the parser would import torch, SAM and the metrics (seconds and ~750 MB) only to print text. So they live
here, and the modules that own their meaning import them from here: each value is written once.

Sample defaults of the reference training recipe: each 8-connected GT component covering at least
``MIN_COMPONENT_FRACTION`` of the image (0.4 %) becomes its own sample (GT enrichment); each side of a
jittered box moves by up to ``JITTER_FRACTION`` of the box's side.
"""

# Stage 1 (is5net.inference.stage1, docs/stage1.md): each family's types (SAM's tiny: the random test SAM),
# the mask kept, the methods. A name is FAMILY or FAMILY:TYPE; coarse masks from files are the other way
# (--coarse-mask, --coarse-dir).
SAM_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")
HQ_SAM_TYPES = ("vit_tiny", "vit_b", "vit_l", "vit_h")
SAM2_TYPES = ("tiny", "small", "base_plus", "large")
STAGE1_FAMILIES = {"sam": SAM_TYPES, "hq-sam": HQ_SAM_TYPES, "sam2": SAM2_TYPES}
MASK_CHOICES = ("first", "best")
STAGE1_METHODS = (*STAGE1_FAMILIES, "grabcut")
STAGE1_NAMES = tuple(
    name for family, types in STAGE1_FAMILIES.items() for name in (family, *(f"{family}:{t}" for t in types))
) + ("grabcut",)

# The refiner's runtimes (is5net.inference.backends); `auto` picks among them.
BACKENDS = ("torch", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)
# The refiner's precisions (is5net.runtime; int8: is5net.inference.quantize, docs/deployment.md "Precision") and
# how many calibration images int8 uses by default (is5net.inference.quantize.DEFAULT_COUNT says why).
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
CALIBRATION_COUNT = 64

# Regions (is5net.contract, docs/input-contract.md "Regions").
REGIONS = ("image", "box", "tiles")
DEFAULT_MARGIN = 0.1
DEFAULT_MAX_SIDE = 4096
# tiles: the working image is the crop at this multiple of its own resolution (docs/input-contract.md).
DEFAULT_TILE_SCALE = 1.0
TILE_SCALE_RANGE = (0.25, 8.0)

# What `is5net predict` writes (is5net.inference.outputs): kinds of file, several boxes combined.
SAVE_KINDS = ("mask", "cutout", "both")
COMBINE_MODES = ("separate", "union", "labels")

# Metric keys (is5net.eval.metrics): the paper's Table I columns in its order, then cheap extras.
PAPER_METRICS: tuple[str, ...] = ("maxF", "wF", "MAE", "Sm", "meanEm", "HCE")
EXTRA_METRICS: tuple[str, ...] = ("meanF", "mIoU", "maxEm")
ALL_METRICS: tuple[str, ...] = PAPER_METRICS + EXTRA_METRICS

DEFAULT_INPUT_SIZE = 1024  # the refiner's input side (is5net.checkpoint)
DEFAULT_CACHE_NAME = ".sam-cache"  # the SAM-mask cache's folder under a dataset (is5net.data.sam_cache)
MAX_PIXELS_ENV = "IS5NET_MAX_PIXELS"  # the environment's pixel limit for images (is5net.io)

# Training samples (is5net.data.samples).
MIN_COMPONENT_FRACTION = 0.004
JITTER_FRACTION = 0.1
