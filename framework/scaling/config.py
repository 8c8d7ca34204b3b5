"""The sweep config tree: what `anvil sweep plan|run` read from SWEEP.yaml.

One dataclass per component (model family shape rules, training rules, the grid, the runner),
defaults here, filled by `framework.configtree` so unknown keys and wrong types fail with the
dotted key. Paths inside a sweep file (`base_config`, `output_dir`) are relative to the repository
root (the working directory), like every other `anvil` path argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from framework.configtree import ConfigError, load


@dataclass
class FamilyConfig:
    """Shape rules of the model family: depth sets width through the aspect ratio."""

    arch: Literal["llama", "gpt2"] = "llama"  # model family of every run
    head_dim: int = 32  # n_heads = d_model / head_dim
    aspect_ratio: float = 32.0  # d_model / n_layers, rounded to a multiple of head_dim
    min_layers: int = 1  # smallest depth the size rules may pick
    max_layers: int = 12  # largest depth the size rules may pick
    vocab_size: int = 384  # model.vocab_size of every run
    seq_len: int = 128  # model.seq_len of every run
    tie_embeddings: bool = False  # share the input embedding and the output head
    shapes: list[list[int]] = field(default_factory=list)  # explicit [[n_layers, d_model], ...] instead of the rules

    def validate(self) -> None:
        for name in ("head_dim", "min_layers", "max_layers", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key 'family.{name}': must be positive, got {getattr(self, name)}")
        if self.aspect_ratio <= 0:
            raise ConfigError(f"config key 'family.aspect_ratio': must be positive, got {self.aspect_ratio}")
        if self.min_layers > self.max_layers:
            raise ConfigError(
                f"config key 'family.min_layers': {self.min_layers} > family.max_layers={self.max_layers}"
            )
        for i, s in enumerate(self.shapes):
            if len(s) != 2 or s[0] <= 0 or s[1] <= 0 or s[1] % self.head_dim:
                raise ConfigError(
                    f"config key 'family.shapes[{i}]': expected [n_layers, d_model] with d_model a "
                    f"positive multiple of family.head_dim={self.head_dim}, got {s}"
                )


@dataclass
class RulesConfig:
    """How each run's optimisation settings follow from its shape and token budget."""

    lr: float = 3e-3  # peak learning rate at lr_base_width
    lr_base_width: int = 128  # d_model at which rules.lr applies unscaled
    lr_width_exponent: float = 0.0  # lr = lr * (lr_base_width / d_model) ** exponent (1.0: muP-like)
    global_batch_size: int = 16  # sequences per step, every run
    micro_batch_size: int = 8  # sequences per forward pass (gradient accumulation fills the global batch)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"  # learning-rate schedule of every run
    warmup_fraction: float = 0.05  # warm-up steps as a share of each run's steps
    min_warmup_steps: int = 5  # at least this many warm-up steps
    min_lr_ratio: float = 0.1  # final learning rate / peak
    evals: int = 10  # validation evaluations per run (evenly spaced; the last at the final step)
    eval_iters: int = 4  # validation batches per evaluation
    checkpoints: int = 4  # checkpoints per run (resume granularity)
    hparams: Literal["fixed", "porian", "deepseek", "fitted"] = (
        "fixed"  # what sets lr, batch and beta2: fixed (rules.lr with width scaling, rules.global_batch_size), porian (Porian et al. 2024: lr, batch ~ N), deepseek (DeepSeek LLM: lr, batch ~ C) or fitted (rules.hparams_fit)
    )
    hparams_fit: Optional[str] = None  # rules.hparams=fitted: hparams.json from `anvil sweep fit --hparams`
    lr_multiplier: float = (
        1.0  # multiplies the law's learning rate (porian/deepseek/fitted; OLMo-core uses 0.5 with WSD)
    )
    batch_multiplier: float = 1.0  # multiplies the law's batch size (porian/deepseek/fitted)
    beta2: Optional[float] = (
        None  # AdamW beta2 of every run under rules.hparams=fixed/deepseek/fitted; None = the base config's
    )
    beta2_small_batch: float = 0.99  # rules.hparams=porian: beta2 below rules.beta2_batch_tokens tokens per step
    beta2_large_batch: float = 0.95  # rules.hparams=porian: beta2 at or above rules.beta2_batch_tokens
    beta2_batch_tokens: int = 524288  # rules.hparams=porian: batch (tokens) from which beta2_large_batch applies

    def validate(self) -> None:
        for name in (
            "lr",
            "lr_base_width",
            "global_batch_size",
            "micro_batch_size",
            "evals",
            "eval_iters",
            "checkpoints",
            "lr_multiplier",
            "batch_multiplier",
            "beta2_batch_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key 'rules.{name}': must be positive, got {getattr(self, name)}")
        for name in ("beta2", "beta2_small_batch", "beta2_large_batch"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"config key 'rules.{name}': expected [0, 1), got {value}")
        if self.hparams == "fitted" and not self.hparams_fit:
            raise ConfigError(
                "config key 'rules.hparams_fit': rules.hparams=fitted needs the hparams.json written "
                "by `anvil sweep fit RESULTS.csv --hparams --output hparams.json`"
            )
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"config key 'rules.global_batch_size': {self.global_batch_size} is not divisible by "
                f"rules.micro_batch_size={self.micro_batch_size}"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"config key 'rules.warmup_fraction': expected [0, 1), got {self.warmup_fraction}")


@dataclass
class GridConfig:
    """Which (model, tokens) pairs to train."""

    kind: Literal["isoflop", "explicit", "hparams"] = (
        "isoflop"  # isoflop: sizes per FLOP budget; explicit: shapes x tokens; hparams: per budget, the size nearest the predicted optimum x an lr x batch grid (for `anvil sweep fit --hparams`)
    )
    budgets: list[float] = field(default_factory=list)  # training FLOPs per isoFLOP curve
    flops: Literal["6nd", "model"] = "6nd"  # C = 6 N D, or the model's own FLOPs per token x D
    sizes_per_budget: int = 4  # model sizes on each isoFLOP curve
    tokens_per_param: float = 20.0  # centre of each budget's sizes: D / N there
    size_span: float = 8.0  # largest / smallest N per budget (log-spaced around the centre)
    tokens: list[float] = field(default_factory=list)  # explicit grid: every shape x every D
    min_steps: int = 20  # runs shorter than this are dropped from the plan (and counted)
    placement: Literal["bracket", "span"] = (
        "bracket"  # bracket: >= grid.min_each_side sizes below and above each budget's predicted optimum; span: log-spaced over grid.size_span around it (the old rule)
    )
    min_each_side: int = 2  # placement=bracket: sizes wanted below and above the predicted optimum N (sizes_per_budget // 2 are placed on each side; `sweep plan` warns where fewer fit)
    prior_fit: Optional[str] = (
        None  # fit.json of an earlier `anvil sweep fit`: predicted optimum N_opt = G (C/6)^a; None = sqrt(C / (6 tokens_per_param))
    )
    lr_factors: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0]
    )  # kind=hparams: multiples of the rule's learning rate
    batch_factors: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0]
    )  # kind=hparams: multiples of the rule's batch size
    unique_tokens: float = (
        0.0  # tokens in the training corpus (written to the plan and results for the repetition-aware fit); 0 = unknown
    )

    def validate(self) -> None:
        if self.min_each_side < 0:
            raise ConfigError(f"config key 'grid.min_each_side': must be >= 0, got {self.min_each_side}")
        if self.unique_tokens < 0:
            raise ConfigError(f"config key 'grid.unique_tokens': must be >= 0, got {self.unique_tokens}")
        for name in ("lr_factors", "batch_factors"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise ConfigError(
                    f"config key 'grid.{name}': expected a non-empty list of positive factors, got {values}"
                )
        if self.kind in ("isoflop", "hparams"):
            if not self.budgets:
                raise ConfigError("config key 'grid.budgets': an isoflop grid needs at least one budget (FLOPs)")
            if any(b <= 0 for b in self.budgets):
                raise ConfigError(f"config key 'grid.budgets': budgets must be positive, got {self.budgets}")
            if self.sizes_per_budget < 1:
                raise ConfigError(f"config key 'grid.sizes_per_budget': must be >= 1, got {self.sizes_per_budget}")
        elif not self.tokens or any(t <= 0 for t in self.tokens):
            raise ConfigError(
                f"config key 'grid.tokens': an explicit grid needs positive token counts, got {self.tokens}"
            )
        if self.tokens_per_param <= 0 or self.size_span < 1:
            raise ConfigError("config keys 'grid.tokens_per_param' (> 0) and 'grid.size_span' (>= 1) are out of range")


@dataclass
class RunnerConfig:
    """How `anvil sweep run` executes the plan."""

    launcher: Literal["local", "anvil-launch", "slurm"] = "local"  # how each run starts
    nproc_per_node: int = 1  # processes per run (anvil-launch / slurm)
    threads: int = 0  # OMP_NUM_THREADS for each run; 0 = inherit (1 is fastest for tiny models on busy CPUs)
    jobs: int = 1  # launcher local / anvil-launch: runs at the same time (one core each with threads: 1); they share the machine's GPUs
    final_evals: int = 3  # final loss = mean of the last K validation losses
    wandb: bool = True  # offline unless WANDB_MODE says otherwise; one group per sweep
    wandb_project: str = "anvil-sweeps"  # wandb project of the sweep's runs
    timeout_s: float = 0.0  # per run; 0 = none
    max_failures: int = 3  # consecutive failed runs before the sweep stops
    slurm_partition: Optional[str] = None  # launcher slurm: partition; None = the cluster default
    slurm_time: str = "04:00:00"  # launcher slurm: time limit per run

    def validate(self) -> None:
        if self.final_evals < 1:
            raise ConfigError(f"config key 'run.final_evals': must be >= 1, got {self.final_evals}")
        if self.jobs < 1:
            raise ConfigError(f"config key 'run.jobs': must be >= 1, got {self.jobs}")


@dataclass
class SweepConfig:
    name: str = "sweep"  # names the output folder and the wandb group
    output_dir: Optional[str] = None  # default runs/sweeps/NAME
    base_config: str = "configs/train/tiny.yaml"  # the training config every run starts from
    overrides: list[str] = field(default_factory=list)  # key=value applied to every run
    seed: int = 1234  # seed of every run
    family: FamilyConfig = field(default_factory=FamilyConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    run: RunnerConfig = field(default_factory=RunnerConfig)

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"config key 'name': expected a plain name (no spaces or slashes), got {self.name!r}")
        for i, item in enumerate(self.overrides):
            if "=" not in item:
                raise ConfigError(f"config key 'overrides[{i}]': expected key=value, got {item!r}")

    @property
    def out_dir(self) -> str:
        return self.output_dir or f"runs/sweeps/{self.name}"


def load_sweep(path: str, overrides: list[str] | None = None) -> SweepConfig:
    return load(SweepConfig, path, overrides)
