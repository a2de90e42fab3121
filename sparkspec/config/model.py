"""The resolved project: what the rest of sparkspec works from.

Past the loader nothing reads raw YAML: every default is applied, every template
rendered, every reference checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sparkspec.apifacts import MODEL

MAX_TAKES = 8  # candidates per scene (`takes: 1..8`)


@dataclass(frozen=True)
class PollConfig:
    initial: float = 2.0
    max: float = 15.0


REMOTE_PARALLELISM = 10  # the API renders 10 tasks of an account at once; more wait in its queue
DEFAULT_REQUESTS_PER_MINUTE = 500  # under the API's 600 per account and model


@dataclass(frozen=True)
class ProviderConfig:
    type: str = "spark"
    model: str = MODEL
    base_url: str | None = None
    api_key_env: str = "SPARK_API_KEY"
    protocol: str = "generation"  # spark only: generation | queue
    parallelism: int = REMOTE_PARALLELISM  # the loader gives `local` the CPU count
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    poll: PollConfig = field(default_factory=PollConfig)
    price_per_million_tokens: float | None = None


@dataclass(frozen=True)
class RemoteConfig:
    """The spec's `remote:` (section 9): where the team's render cache is; never credentials."""

    url: str | None = None
    endpoint: str | None = None
    region: str | None = None
    claim_ttl: float | None = None


@dataclass(frozen=True)
class Budget:
    """What one apply may spend (DESIGN section 10); None: no limit."""

    max_tokens: int | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class ImageRef:
    """A first-frame image: a file inside the project, a data URL, or an https URL."""

    text: str  # as rendered from the spec
    path: Path | None = None  # absolute, for a file
    url: str | None = None  # for an https or data URL
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Scene:
    id: str
    source_id: str  # the id in the spec; differs for matrix expansions
    prompt: str  # rendered
    resolution: str
    ratio: str
    duration: int | None  # exactly one of duration and frames is set
    frames: int | None
    seed: int | None  # None: derived from the key inputs
    camera_fixed: bool
    watermark: bool
    image: ImageRef | None = None
    upstream: str | None = None  # first_frame: {scene: ...}
    service_tier: str | None = None
    execution_expires_after: int | None = None
    callback_url: str | None = None
    description: str | None = None
    takes: int = 1  # candidates rendered, each with its own seed (keys.take_seed)
    pick: int = 1  # the take that stands for the scene: renders/<id>.mp4, chains, sequences


@dataclass(frozen=True)
class SequenceSpec:
    id: str
    scenes: tuple[str, ...]


@dataclass(frozen=True)
class Project:
    spec_path: Path  # absolute
    display_path: str  # the spec's path as the user named it, for messages
    root: Path  # absolute, resolved: the spec's folder
    name: str
    salt: str
    output_dir: str
    provider: ProviderConfig
    scenes: dict[str, Scene]
    sequences: dict[str, SequenceSpec]
    spec_sha256: str  # of the spec file's bytes
    vars_sha256: str  # of the variables in force, after --var-file and --var
    templates_sha256: str = ""  # of every template file read (prompt files and their includes)
    remote: RemoteConfig | None = None
    budget: Budget = Budget()
