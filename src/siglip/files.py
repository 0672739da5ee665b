"""Finding a checkpoint's files and reading and writing small files: the bottom layer of the package.

This module owns:

* the file names of a checkpoint folder (``config.json``, ``model.safetensors``, the tokenizer and processor
  files) and the hub file patterns;
* ``Checkpoint``: a folder, a hub id (through the ``huggingface_hub`` cache) or the bundled demo name, resolved
  once, with each JSON file parsed once and kept;
* ``CheckpointError``: the one error for an unusable checkpoint folder or file, naming it;
* JSON reads that must give an object, and atomic writes (temporary name, flush, rename).

It imports nothing from the rest of ``siglip``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
TORCH_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
SPIECE_NAME = "spiece.model"
TOKENIZER_NAME = "tokenizer.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"
ONNX_EXPORT_INFO_NAME = "onnx_export.json"  # marks a folder written by `siglip export onnx`

# Files a checkpoint may need; only these are ever fetched from the hub (never code).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
# What preprocessing alone needs: tokenizer and image processor files (AutoTokenizer, AutoProcessor), and the
# image processor's JSON alone (AutoImageProcessor).
PREPROCESSING_PATTERNS = ["*.json", "*.model"]
IMAGE_PROCESSOR_PATTERNS = ["*.json"]

# `siglip-demo` names the tiny model trained by this project and shipped inside the package.
DEMO_MODEL = "siglip-demo"
DEMO_FOLDER = Path(__file__).resolve().parent / "assets" / "demo"

# Keyword arguments of every from_pretrained that go to the hub, not to the object being loaded.
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")


class CheckpointError(ValueError):
    """A checkpoint folder or file that can't be used as is; the message names the file and the problem."""


def split_hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the hub options out of ``kwargs`` (in place) and return them.

    ``trust_remote_code`` is popped and dropped: accepted for drop-in compatibility, but no code from a
    checkpoint folder is ever imported (only ``HUB_PATTERNS`` files are even downloaded).
    """
    kwargs.pop("trust_remote_code", None)
    return {k: kwargs.pop(k) for k in list(kwargs) if k in HUB_OPTIONS}


# ------------------------------------------------------------------------------------------------------------
# JSON and atomic writes
# ------------------------------------------------------------------------------------------------------------


def read_json_object(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """A JSON file that must hold an object; unreadable, invalid or another type is a CheckpointError."""
    path = Path(path)
    label = f"{path} ({what})" if what else str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        problem = "could not be read as JSON" if what or isinstance(e, OSError) else "is not valid JSON"
        raise CheckpointError(f"{label} {problem}: {reason}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{label} must hold a JSON object, got {type(data).__name__}")
    return data


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, deletions) to disk, where the platform allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A reader sees the old file or the new one, never part of one; a crash leaves at most a ``.<name>.tmp-<pid>``
    file behind. Raises ``OSError`` (the temporary file removed) when the write fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON with sorted keys and a final newline (how every config file here is written)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def is_onnx_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a local folder written by ``siglip export onnx`` (it holds ``onnx_export.json``)."""
    return (Path(folder).expanduser() / ONNX_EXPORT_INFO_NAME).is_file()


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover of an interrupted ``atomic_write_bytes``."""
    return path.name.startswith(".") and ".tmp-" in path.name


# ------------------------------------------------------------------------------------------------------------
# Resolving a folder
# ------------------------------------------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1) or name.count("/") > 1


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    subfolder: str | None = None,
    patterns: list[str] | None = None,
) -> Path:
    """A local folder holding the checkpoint's files: the path itself, or the hub snapshot in the local cache.

    Hub ids go through ``huggingface_hub.snapshot_download`` (which honours ``HF_HUB_OFFLINE``, ``HF_HOME`` and
    ``HF_HUB_CACHE``) and fetch only the files we read (``patterns``). Offline and not cached gives an error that
    says so and how to get the files.
    """
    if str(name_or_path) == DEMO_MODEL:
        if not DEMO_FOLDER.is_dir():
            raise CheckpointError(f"the bundled demo model is missing from this install ({DEMO_FOLDER})")
        return DEMO_FOLDER
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise CheckpointError(f"{path} has no subfolder {subfolder!r}")
        return folder
    name = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{name} is a file; pass the folder that holds config.json and the weights")
    if _looks_like_path(name):
        raise CheckpointError(
            f"{name} does not exist (expected a checkpoint folder or a hub id like google/siglip-base-patch16-224)"
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        folder = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
            allow_patterns=patterns or HUB_PATTERNS,
        )
    except HFValidationError:
        raise CheckpointError(f"{name!r} is neither an existing folder nor a valid hub repo id") from None
    except GatedRepoError:
        raise CheckpointError(
            f"{name} is a gated repo: accept its terms on huggingface.co and pass token=..."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{name} was not found on the Hugging Face hub (or is private: pass token=...)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{name} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or local_files_only
        from huggingface_hub.constants import HF_HUB_CACHE

        where = cache_dir or HF_HUB_CACHE
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else "the hub can't be reached"
        )
        raise CheckpointError(
            f"{name} is not a local folder and is not in the Hugging Face cache ({where}), and {why}. "
            f"Download it where the hub is reachable (hf download {name}; huggingface_hub's `hf` command, which "
            "replaced huggingface-cli) or pass the path of a local folder holding config.json and model.safetensors."
        ) from None
    except OSError as e:  # network failures that huggingface_hub did not map
        raise CheckpointError(f"could not fetch {name} from the hub: {e}") from None
    folder = Path(folder)
    return folder / subfolder if subfolder else folder


class Checkpoint:
    """A resolved checkpoint folder whose JSON files are each parsed at most once.

    Every ``from_pretrained`` accepts a ``Checkpoint`` as well as a name, so that one ``pipeline(...)`` call
    resolves the name once and the model, tokenizer and image processor share the parsed files.

    Attributes:
        folder: the local folder (the hub snapshot for a hub id).
        name: what the user passed (a path, hub id or the demo name), for messages and ``name_or_path``.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name
        self._json: dict[str, dict[str, Any] | None] = {}

    @classmethod
    def resolve(
        cls, name_or_path: str | os.PathLike | Checkpoint, patterns: list[str] | None = None, **hub_kwargs: Any
    ) -> Checkpoint:
        """A ``Checkpoint`` for a name (resolved through ``resolve_folder``), or the given one unchanged."""
        if isinstance(name_or_path, Checkpoint):
            return name_or_path
        return cls(resolve_folder(name_or_path, patterns=patterns, **hub_kwargs), str(name_or_path))

    def path(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def json(self, name: str, what: str = "") -> dict[str, Any] | None:
        """The parsed JSON object in file ``name``, or None when the folder has no such file (parsed once)."""
        if name not in self._json:
            path = self.folder / name
            self._json[name] = read_json_object(path, what) if path.is_file() else None
        return self._json[name]

    def config_dict(self) -> dict[str, Any]:
        """``config.json``, which a model folder must have."""
        data = self.json(CONFIG_NAME)
        if data is not None:
            return data
        if self.has("trainer_state.json"):
            raise CheckpointError(
                f"{self.folder} has no {CONFIG_NAME}: transformers.Trainer saves only the weights of models that are "
                "not transformers classes. Load it with from_pretrained(folder, config=<the trained model's "
                "config>), or train with callbacks=[siglip.SaveConfigCallback()] so that every checkpoint gets its "
                f"{CONFIG_NAME}"
            )
        raise CheckpointError(f"{self.folder} has no {CONFIG_NAME}; is this a SigLIP checkpoint folder?")

    def __repr__(self) -> str:
        return f"Checkpoint({self.name!r}, folder={str(self.folder)!r})"
