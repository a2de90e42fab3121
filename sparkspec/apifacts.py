"""Facts about the Spark Dance API that sparkspec plans with (reference sections 2 and 6)."""

from __future__ import annotations

MODEL = "spark_dance_v1_0_pro_fast"
ARK_MODEL = "seedance-1-0-pro-fast-251015"  # the same model on BytePlus ModelArk (reference section 8)
PROTOCOLS = ("generation", "queue")  # of the spark gateway (reference sections 5 and 7)
# Upstream's text commands (older clients appended parameters to the prompt); ModelArk may read
# them as parameters, so a prompt for `ark` should not contain them.
ARK_TEXT_COMMANDS = ("rs", "resolution", "rt", "ratio", "dur", "duration", "fps", "framepersecond", "frames",
                     "wm", "watermark", "seed", "cf", "camerafixed")
FPS = 24
RESOLUTIONS = ("480p", "720p", "1080p")
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
ALL_RATIOS = RATIOS + ("adaptive",)
DURATION_RANGE = (2, 12)
FRAMES_RANGE = (29, 289)
SEED_RANGE = (-1, 2**32 - 1)
EXPIRES_RANGE = (3600, 259200)
SERVICE_TIERS = ("default", "flex")
PROMPT_ADVISED_CHARS = 500

DEFAULT_DURATION = 5
# The API's own "service unavailable" error code: transient (reference section 4), under
# whatever HTTP status it comes.
UNAVAILABLE = "003021099"

API_DEFAULTS: dict[str, str | int | bool] = {
    "resolution": "1080p",
    "ratio": "16:9",
    "duration": DEFAULT_DURATION,
    "camera_fixed": False,
    "watermark": False,
}

IMAGE_FORMATS = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
IMAGE_MAX_BYTES = 30 * 1024 * 1024
IMAGE_SIDE_EXCLUSIVE = (300, 6000)
IMAGE_ASPECT_EXCLUSIVE = (0.4, 2.5)

PIXEL_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640),
             "3:4": (544, 736), "9:16": (480, 864), "21:9": (960, 416)},
    "720p": {"16:9": (1248, 704), "4:3": (1120, 832), "1:1": (960, 960),
             "3:4": (832, 1120), "9:16": (704, 1248), "21:9": (1504, 640)},
    "1080p": {"16:9": (1920, 1088), "4:3": (1664, 1248), "1:1": (1440, 1440),
              "3:4": (1248, 1664), "9:16": (1088, 1920), "21:9": (2176, 928)},
}


def largest_ratio(resolution: str) -> str:
    """The ratio of the most pixels at `resolution` (21:9 at 720p): an estimate's upper bound."""
    return max(PIXEL_SIZES[resolution], key=lambda ratio: PIXEL_SIZES[resolution][ratio][0] *
               PIXEL_SIZES[resolution][ratio][1])


def valid_frames(frames: int) -> bool:
    return FRAMES_RANGE[0] <= frames <= FRAMES_RANGE[1] and (frames - 25) % 4 == 0


def frame_count(duration: int | None, frames: int | None) -> int:
    """Frames the API renders: `frames` as given, else 24 per second plus one."""
    if frames is not None:
        return frames
    return FPS * (duration if duration is not None else DEFAULT_DURATION) + 1


def nearest_ratio(width: int, height: int) -> str:
    """The table's ratio closest to an image's aspect, for `ratio: adaptive`."""
    aspect = width / height

    def distance(ratio: str) -> float:
        w, h = (int(x) for x in ratio.split(":"))
        return abs(aspect - w / h)

    return min(RATIOS, key=distance)


def pixel_size(resolution: str, ratio: str) -> tuple[int, int]:
    return PIXEL_SIZES[resolution][ratio]


def estimate_tokens(width: int, height: int, frames: int) -> int:
    """Upstream's billing formula, width x height x frames / 1024, rounded down."""
    return width * height * frames // 1024


def tokens_cost(tokens: int, price_per_million_tokens: float, service_tier: str | None) -> float:
    """What `tokens` cost at the spec's price: half for the `flex` tier, as the plan shows."""
    return tokens / 1e6 * price_per_million_tokens * (0.5 if service_tier == "flex" else 1.0)
