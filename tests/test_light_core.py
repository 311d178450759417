"""The runtime stays light: no torch, transformers or optimum on the `import bertx`, embed and info paths."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

HEAVY = (
    "torch",
    "transformers",
    "optimum",
    "sentence_transformers",
    "onnx",
    "openvino",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "ray",
    "pyarrow",
)
CHECK = "import sys; print(sorted(m for m in {heavy} if m in sys.modules))"


def test_import_bertx_loads_nothing_heavy() -> None:
    code = "import bertx; " + CHECK.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["embed", "info"])
def test_cli_embed_and_info_load_nothing_heavy(tiny_artifact: Path, command: str) -> None:
    args = [command, str(tiny_artifact)] + (["the cat"] if command == "embed" else [])
    code = (
        "from bertx.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n" + CHECK.format(heavy=HEAVY)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_core_only_environment_embeds(tmp_path: Path, minilm_artifact: Path, minilm_source: Path) -> None:
    """A fresh virtual environment with only the core dependencies embeds with a real artifact."""
    import shutil

    root = tmp_path / "source"
    ignore = shutil.ignore_patterns(".venv", "build", "*.egg-info", "models", ".git", "__pycache__", ".*_cache")
    shutil.copytree(Path(__file__).resolve().parents[1], root, ignore=ignore)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(root)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = tmp_path / "v.npy"
    import bertx

    # The searched INT8 may be built for OpenVINO (an extra): then the core runs fp32 and names the extra.
    on_core = bertx.Manifest.load(minilm_artifact).variants[bertx.Precision.INT8].backend == "onnxruntime"
    variant = "int8" if on_core else "fp32"
    code = (
        "import sys, bertx\n"
        f"for name in {HEAVY!r}:\n"
        "    try:\n        __import__(name)\n    except ImportError:\n        continue\n"
        "    raise SystemExit(f'{name} is importable in the core-only environment')\n"
        f"m = bertx.Model.from_pretrained({str(minilm_artifact)!r}, variant={variant!r})\n"
        "import numpy as np\n"
        f"np.save({str(out)!r}, m.embed(['A man is eating food.', 'Das Wetter ist schön.']))\n"
        + CHECK.format(heavy=HEAVY)
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(minilm_source), device="cpu").encode(
        ["A man is eating food.", "Das Wetter ist schön."], convert_to_numpy=True
    )
    got = np.load(out)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.98
    bertx_cli = env_dir / "bin" / "bertx"
    result = subprocess.run([str(bertx_cli), "export", "x"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "pip install" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([str(bertx_cli), "info", str(minilm_artifact)], capture_output=True, text=True)
    assert result.returncode == 0 and "int8" in result.stdout
    if not on_core:
        args = [str(bertx_cli), "embed", str(minilm_artifact), "hello", "--variant", "int8"]
        result = subprocess.run(args, capture_output=True, text=True)
        assert result.returncode == 2 and "bertx[openvino]" in result.stderr and "Traceback" not in result.stderr
