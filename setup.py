"""Anvil: raw web text -> curated corpora -> trained language models -> scaling laws.

Each lower bound is the version CI installs and the whole suite passes with (older versions are
untested, so they are not allowed: datasketch 1.6.5, for one, lacks the `MinHash(scheme=...)` the
signature-compatibility test uses); upper bounds stop at the next untested major/minor release.
Install torch first (the Makefile does), then deepspeed with --no-build-isolation because its
setup.py imports torch.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.13,<2.16",
    "deepspeed>=0.19,<0.20",
    # No extras: megatron-core's [dev]/[lts] pull Transformer Engine and other CUDA-only packages.
    "megatron-core>=0.16.1,<0.17",
    "accelerate>=1.15,<2",
    "datasketch>=2.0,<3",
    "wandb>=0.31,<0.32",
    "tensorboard>=2.21,<3",
    "tokenizers>=0.23,<0.24",
    "transformers>=5.24,<6",
    "peft>=0.21,<0.22",
    "safetensors>=0.8,<0.9",
    "numpy>=2.4,<3",
    "scipy>=1.17,<2",
    "pyyaml>=6.0.4,<7",
    "rich>=15,<16",
    "trafilatura>=2.3,<3",
    "py3langid>=0.4,<0.5",
    "pyarrow>=26,<27",
    "zstandard>=0.25,<0.26",
    "warcio>=1.8.1,<2",
    "resiliparse>=2.0.1,<3",  # extract: {engine: resiliparse}; 2.0.1 installed and tested on Python 3.11
    "fastwarc>=2.0.1,<3",  # WARC/WET reading; warcio takes over for what FastWARC refuses
    "ray[default]>=2.60,<2.61",
    "matplotlib>=3.11,<4",
    "scikit-learn>=1.9,<2",
    "fasttext-community>=0.11.9,<1",  # classifier step's fastText models; not fasttext-numpy2 (see steps/fasttext_model.py)
    "psutil>=7.2,<8",
    "lm-eval>=0.4.13,<0.5",  # `anvil eval --tasks`, in-loop eval.tasks (framework/eval/lm_adapter.py)
    "xxhash>=4.1,<5",  # 64-bit unit hashes of paragraph/sentence dedup and decontaminate; task-output checksums
    "regex>=2026.11.19,<2027",  # steps/en_tokens.py (compat: datatrove): Unicode letter classes, \p{Ll}
]

setup(
    name="anvil",
    version="0.1.0",
    description="From raw web text to trained language models and scaling laws",
    python_requires=">=3.10",
    packages=find_packages(include=["framework*", "launch*", "data_pipeline*"]),
    include_package_data=True,
    package_data={"": ["*.yaml"], "framework.scaling": ["published/*.csv", "published/*.md"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=9.2,<10", "pytest-timeout>=2.4,<3", "pytest-xdist>=3.8,<4", "ruff>=0.17.6,<0.18"]
    },
    entry_points={"console_scripts": ["anvil=launch.cli:main"]},
)
