"""The training config tree: one dataclass per component, defaults here and nowhere else.

`anvil train CONFIG.yaml key=value ...` fills `RunConfig` through `framework.configtree`; the
resolved tree is printed by `--print-config` and saved as `RUN_DIR/config.yaml`. `validate()`
methods check what one section can check alone; cross-section checks that need the world size
live in `RunConfig.check_layout`, called before any process group or file is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from framework.configtree import ConfigError, build, dump_yaml, merge, parse_overrides, read_yaml


@dataclass
class ModelConfig:
    arch: Literal["llama", "gpt2"] = "llama"  # llama (RMSNorm, SwiGLU, rotary) or gpt2 (LayerNorm, GELU)
    n_layers: int = 2  # transformer blocks
    d_model: int = 64  # hidden size
    n_heads: int = 4  # attention heads (d_model / n_heads = head size, even for rotary)
    n_kv_heads: Optional[int] = None  # grouped-query attention; None = n_heads
    vocab_size: int = 384  # embedding rows; omitted with data.tokenizer set: its size padded to 128
    seq_len: int = 128  # tokens per training sequence (context length)
    ffn_hidden: Optional[int] = None  # None: 8/3 d (SwiGLU, rounded to 64) or 4 d (GELU)
    tie_embeddings: bool = False  # share the input embedding with the output head
    norm_eps: float = 1e-5  # epsilon of RMSNorm / LayerNorm
    rope_theta: float = 10000.0  # rotary embedding base (llama)
    init_std: Optional[float] = None  # None: GPT-NeoX small init, sqrt(2 / (5 d_model))

    def validate(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key 'model.{name}': must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"config key 'model.d_model': {self.d_model} is not divisible by model.n_heads={self.n_heads}"
            )
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ConfigError(f"config key 'model.n_kv_heads': n_heads={self.n_heads} is not divisible by {kv}")
        if self.arch == "llama" and (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"config key 'model.n_heads': rotary embeddings need an even head size, got {self.d_model // self.n_heads}"
            )


@dataclass
class ParallelConfig:
    tensor: int = 1  # tensor-parallel size (megatron-core column/row layers); divides n_heads
    pipeline: int = 1  # pipeline stages (DeepSpeed 1F1B); at most n_layers
    zero_stage: int = 0  # DeepSpeed ZeRO: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters sharded
    sequence_parallel: bool = False  # with tensor > 1: shard norms/dropout activations along the sequence
    activation_checkpointing: bool = False  # recompute block activations in backward (less memory)
    timeout_s: float = 0.0  # collective timeout; 0 = 120 s on CPU (gloo), 1800 s on GPUs

    def validate(self) -> None:
        if self.tensor < 1 or self.pipeline < 1:
            raise ConfigError(
                f"config key 'parallel': tensor and pipeline must be >= 1, got {self.tensor}, {self.pipeline}"
            )
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"config key 'parallel.zero_stage': expected 0, 1, 2 or 3, got {self.zero_stage}")


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps to train
    micro_batch_size: int = 8  # sequences per forward pass on one data-parallel rank
    global_batch_size: int = 8  # sequences per optimizer step over all ranks (gradient accumulation fills the rest)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate / peak (cosine, linear, wsd)
    warmup_steps: int = 10  # linear warm-up steps from 0 to lr
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"  # learning-rate schedule after warm-up
    wsd_decay_fraction: float = 0.2  # schedule wsd: share of the steps spent decaying at the end
    weight_decay: float = 0.1  # AdamW decoupled weight decay (matrices only; not norms, biases)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # global gradient-norm clip; 0 = off
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp32, or bf16/fp16 mixed precision with fp32 master weights
    log_interval: int = 10  # steps between metrics.jsonl / console lines
    checkpoint_interval: int = 100  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept; older ones are deleted
    eval_interval: int = 0  # 0: evaluate only at the end
    eval_iters: int = 4  # validation batches per evaluation
    max_consecutive_skips: int = 5  # non-finite steps in a row that stop the run (spike_action rollback: roll back)
    spike_window: int = 50  # losses the spike z-score is computed against
    spike_zscore: float = 6.0  # a loss this many standard deviations above the window's mean is a spike
    spike_action: Literal["log", "rollback"] = (
        "log"  # log: flag; rollback: reload the last good checkpoint, skip data since
    )
    max_rollbacks: int = 3  # spike_action rollback: rollbacks per run; the next spike stops the run
    inject_nan_at: list[int] = field(default_factory=list)  # fault injection: steps whose loss is NaN (once per run)

    def validate(self) -> None:
        for name in ("steps", "micro_batch_size", "global_batch_size", "log_interval", "checkpoint_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config key 'train.{name}': must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"config key 'train.lr': must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.eval_interval < 0 or self.eval_iters < 0:
            raise ConfigError(
                "config keys 'train.warmup_steps', 'train.eval_interval', 'train.eval_iters' must be >= 0"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"config key 'train.min_lr_ratio': expected a value in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.wsd_decay_fraction <= 1.0:
            raise ConfigError(
                f"config key 'train.wsd_decay_fraction': expected a value in (0, 1], got {self.wsd_decay_fraction}"
            )
        if self.keep_checkpoints < 1:
            raise ConfigError(f"config key 'train.keep_checkpoints': must be >= 1, got {self.keep_checkpoints}")
        if self.max_consecutive_skips < 1:
            raise ConfigError(
                f"config key 'train.max_consecutive_skips': must be >= 1, got {self.max_consecutive_skips}"
            )
        if self.max_rollbacks < 0:
            raise ConfigError(f"config key 'train.max_rollbacks': must be >= 0, got {self.max_rollbacks}")


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)  # tokenized prefixes (PREFIX.bin / PREFIX.idx)
    weights: list[float] = field(default_factory=list)  # blend weights; empty = proportional to size
    tokenizer: Optional[str] = None  # tokenizer.json
    split: str = "98,2,0"  # train, validation, test shares
    cache_dir: Optional[str] = None  # index caches; default RUN_DIR/../.data_cache
    mix: Optional[str] = None  # `anvil data mix` YAML: sets paths and weights (differing explicit ones: error)

    def validate(self) -> None:
        if self.mix:
            self._apply_mix()
        if self.weights and len(self.weights) != len(self.paths):
            raise ConfigError(
                f"config key 'data.weights': {len(self.weights)} weights for {len(self.paths)} data.paths"
            )
        if any(w < 0 for w in self.weights):
            raise ConfigError(f"config key 'data.weights': weights must be >= 0, got {self.weights}")

    def _apply_mix(self) -> None:
        """Fill paths/weights from the fragment. Explicit ones must agree with it (a saved
        RUN_DIR/config.yaml carries both), so no silent precedence between two blends."""
        import os

        from framework.data.mix import MixError, read_mix

        try:
            paths, weights = read_mix(self.mix)
        except MixError as exc:
            raise ConfigError(f"config key 'data.mix': {exc}") from None
        same_paths = [os.path.abspath(p) for p in self.paths] == [os.path.abspath(p) for p in paths]
        if self.paths and not same_paths or self.weights and self.weights != weights:
            raise ConfigError(
                f"config key 'data.mix': {self.mix} sets data.paths / data.weights but the config "
                f"also gives different ones ({self.paths}, {self.weights}); keep one of the two"
            )
        self.paths, self.weights = paths, weights


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # lm-evaluation-harness tasks run on the live model, e.g. [anvil_mc]
    include_path: Optional[str] = None  # folder of harness task YAMLs (Anvil ships configs/eval)
    interval: int = 0  # steps between task / domain evaluations; 0 = only at the end
    limit: Optional[int] = None  # examples per task per evaluation; None = all
    batch_size: int = 16  # task requests or held-out windows per forward pass
    datasets: dict[str, str] = field(default_factory=dict)  # held-out domains NAME: PREFIX, loss per domain
    max_tokens: int = 65536  # held-out tokens per domain per evaluation

    def validate(self) -> None:
        if self.interval < 0 or self.batch_size <= 0 or self.max_tokens <= 0:
            raise ConfigError("config keys 'eval.interval' (>= 0), 'eval.batch_size', 'eval.max_tokens' (> 0)")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"config key 'eval.limit': must be positive or null, got {self.limit}")
        if any(not isinstance(t, str) or not t or "," in t for t in self.tasks):
            raise ConfigError(f"config key 'eval.tasks': expected a list of task names, got {self.tasks}")

    @property
    def enabled(self) -> bool:
        return bool(self.tasks or self.datasets)


@dataclass
class LoggingConfig:
    wandb: bool = False  # log to Weights & Biases (offline unless WANDB_MODE says otherwise)
    wandb_project: str = "anvil"  # wandb project name
    wandb_group: Optional[str] = None  # wandb group (e.g. a sweep); None = no group
    tensorboard: bool = False  # write TensorBoard event files to RUN_DIR/tensorboard
    console: bool = True  # print progress lines (rank 0)
    peak_tflops: Optional[float] = None  # per device; None: looked up from the device name


@dataclass
class RunConfig:
    seed: int = 1234  # initial weights and data order: same seed + config = same numbers
    run_dir: str = "runs/default"  # checkpoints, metrics.jsonl, config.yaml; rerunning with the same run_dir resumes
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def check_layout(self, world_size: int) -> int:
        """Validate the layout against the world size; return the data-parallel size."""
        p, t = self.parallel, self.train
        problems = layout_problems(
            self.model,
            world_size,
            p.tensor,
            p.pipeline,
            p.zero_stage,
            p.sequence_parallel,
            t.micro_batch_size,
            t.global_batch_size,
        )
        if problems:
            raise ConfigError(problems[0])
        return world_size // (p.tensor * p.pipeline)


def layout_problems(
    m: Optional[ModelConfig],
    world_size: int,
    tensor: int = 1,
    pipeline: int = 1,
    zero_stage: int = 0,
    sequence_parallel: bool = False,
    micro_batch_size: Optional[int] = None,
    global_batch_size: Optional[int] = None,
) -> list[str]:
    """Every reason a DP x TP x PP x ZeRO layout cannot run this model, as config-key messages with the
    numbers; empty when it can. The one copy of the rules: `RunConfig.check_layout` (training, `anvil
    launch`), `topology.validate_layout` and the planner's candidate layouts all ask it."""
    out: list[str] = []
    if tensor < 1 or pipeline < 1:
        return [f"config key 'parallel': tensor and pipeline must be >= 1, got {tensor}, {pipeline}"]
    model_par = tensor * pipeline
    if world_size % model_par:
        return [
            f"config key 'parallel': world size {world_size} is not divisible by "
            f"tensor x pipeline = {tensor} x {pipeline} = {model_par}"
        ]
    dp = world_size // model_par
    if m is not None:
        if m.n_heads % tensor:
            out.append(f"config key 'parallel.tensor': model.n_heads={m.n_heads} is not divisible by {tensor}")
        if (m.n_kv_heads or m.n_heads) % tensor:
            out.append(f"config key 'parallel.tensor': model.n_kv_heads={m.n_kv_heads} is not divisible by {tensor}")
        if m.vocab_size % tensor:
            out.append(f"config key 'parallel.tensor': model.vocab_size={m.vocab_size} is not divisible by {tensor}")
        if pipeline > m.n_layers:
            out.append(
                f"config key 'parallel.pipeline': {pipeline} stages for model.n_layers={m.n_layers} "
                "(at least one layer per stage)"
            )
        if sequence_parallel and tensor > 1:
            if m.arch != "llama":
                out.append(
                    "config key 'parallel.sequence_parallel': needs model.arch=llama (learned "
                    "positions are added to the whole sequence)"
                )
            elif m.seq_len % tensor:
                out.append(
                    f"config key 'parallel.sequence_parallel': model.seq_len={m.seq_len} is not "
                    f"divisible by parallel.tensor={tensor}"
                )
    if pipeline > 1 and zero_stage > 1:
        out.append(
            f"config key 'parallel.zero_stage': ZeRO-{zero_stage} with pipeline parallelism is not "
            "supported by DeepSpeed (use zero_stage 0 or 1)"
        )
    if micro_batch_size and global_batch_size is not None and global_batch_size % (micro_batch_size * dp):
        out.append(
            f"config key 'train.global_batch_size': {global_batch_size} is not divisible by "
            f"micro_batch_size x data-parallel size = {micro_batch_size} x {dp} = {micro_batch_size * dp}"
        )
    return out


def load_run_config(path: str | None, overrides: list[str] | None = None) -> RunConfig:
    """RunConfig from a YAML file (with its `base:` chain) and `key=value` overrides.

    `model.vocab_size` follows the data: when `data.tokenizer` is set and neither the file itself
    nor an override sets `model.vocab_size` (a `base:` preset's value does not count), it is the
    tokenizer's size padded to a multiple of 128, as Megatron and GPT-NeoX do. An explicit value
    smaller than the tokenizer still fails later, naming both numbers.
    """
    extra = parse_overrides(overrides or [])
    tree = merge(read_yaml(path) if path else {}, extra)
    own = merge(read_yaml(path, follow_base=False) if path else {}, extra)
    tokenizer = (tree.get("data") or {}).get("tokenizer")
    if tokenizer and "vocab_size" not in (own.get("model") or {}):
        from framework.data.tokenizer import padded_vocab_size, tokenizer_vocab_size

        try:
            vocab = padded_vocab_size(tokenizer_vocab_size(tokenizer))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"config key 'data.tokenizer': {exc}") from None
        tree["model"] = {**(tree.get("model") or {}), "vocab_size": vocab}
    return build(RunConfig, tree)


__all__ = [
    "ModelConfig",
    "ParallelConfig",
    "TrainConfig",
    "DataConfig",
    "LoggingConfig",
    "RunConfig",
    "layout_problems",
    "load_run_config",
    "dump_yaml",
    "ConfigError",
]
