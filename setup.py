"""Anvil: raw web text -> curated corpora -> trained language models -> scaling laws.

Dependencies are pinned to ranges that were installed and tested together on CPU (see
../shared/CPU_NOTES.md). Install torch first (the Makefile does), then deepspeed with
--no-build-isolation because its setup.py imports torch.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.4,<2.16",
    "deepspeed>=0.16,<0.20",
    # No extras: megatron-core's [dev]/[lts] pull Transformer Engine and other CUDA-only packages.
    "megatron-core>=0.16.1,<0.17",
    "accelerate>=1.0,<2",
    "datasketch>=1.6,<3",
    "wandb>=0.18,<0.32",
    "tensorboard>=2.15,<3",
    "tokenizers>=0.20,<0.24",
    "transformers>=4.45,<6",
    "peft>=0.13,<0.22",
    "safetensors>=0.4,<0.9",
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "pyyaml>=6,<7",
    "rich>=13,<16",
    "trafilatura>=1.12,<3",
    "py3langid>=0.3,<0.5",
    "pyarrow>=15,<27",
    "zstandard>=0.22,<0.26",
    "warcio>=1.7,<2",
    "ray[default]>=2.30,<2.61",
    "matplotlib>=3.8,<4",
    "scikit-learn>=1.4,<2",
    "psutil>=5.9,<8",
]

setup(
    name="anvil",
    version="0.1.0",
    description="From raw web text to trained language models and scaling laws",
    python_requires=">=3.10",
    packages=find_packages(include=["framework*", "launch*", "data_pipeline*"]),
    include_package_data=True,
    package_data={"": ["*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8,<10", "pytest-timeout>=2.2,<3"]},
    entry_points={"console_scripts": ["anvil=launch.cli:main"]},
)
