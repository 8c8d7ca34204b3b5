"""Pure functions that turn a launch request into exact commands: torchrun, ssh/pdsh, Slurm sbatch.

Hostfile parsing lives in launch/hostfile.py, exit codes and failure classification in launch/exits.py.

`anvil launch` (launch/commands/launch.py) only parses arguments, runs checks and executes what these
functions return, so `--dry-run` prints exactly what would run and the golden-file tests in
tests/launch/ pin every byte. Nothing here touches the network, the file system or torch.

Every mode composes the same per-node step: one `torchrun` per node with a c10d rendezvous on the
first node (node rank 0 hosts the store, the others only connect). The hostfile mode fans out
`anvil launch --node-rank i ...` over ssh (or pdsh), so each node runs the same pre-launch checks
locally; the Slurm mode does the same through `srun`. Commands are argv lists, never shell strings;
where a shell string is unavoidable (the remote side of ssh, an sbatch script) every word is quoted
with `shlex.quote`, and host names and environment variable names are validated first.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from framework.configtree import ConfigError
from framework.training.watchdog import EXIT_RETRY
from launch.hostfile import Host, check_host

DEFAULT_PORT = 29500

# Environment forwarded to remote nodes in hostfile mode (ssh starts a clean login environment).
FORWARD_ENV_PREFIXES = ("NCCL_", "WANDB_", "ANVIL_", "HF_", "TORCH_", "GLOO_", "UCX_", "FI_", "PYTHON")
FORWARD_ENV_NAMES = ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_OFFLINE", "LD_LIBRARY_PATH")
# Host-specific settings that must never be copied to another machine.
NEVER_FORWARD = ("CUDA_VISIBLE_DEVICES", "ANVIL_NODE_RANK", "ANVIL_STATUS_DIR", "PYTHONHOME")

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class NodeLaunch:
    """What one node runs: the training command under torchrun."""

    config: str
    overrides: list[str] = field(default_factory=list)
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    max_restarts: int = 0
    rdzv_id: str = "anvil"

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


@dataclass
class SlurmOptions:
    nodes: int = 1
    gpus_per_node: int = 0  # 0: CPU-only nodes
    time: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    job_name: str = "anvil"
    cpus_per_task: Optional[int] = None
    output: Optional[str] = None  # default: RUN_DIR/slurm-%j.out
    requeue_on_retry: int = 0  # requeue the job this many times when launch exits EXIT_RETRY
    container_image: Optional[str] = None  # pyxis/enroot: image or .sqsh file for every task
    container_mounts: Optional[str] = None  # pyxis: SRC:DST[,SRC:DST...]


def default_rdzv_id(run_dir: str, port: int) -> str:
    """The same id on every node that runs the same command (rendezvous ids must match)."""
    return "anvil-" + hashlib.sha1(f"{run_dir}:{port}".encode()).hexdigest()[:10]


def node_env(node: NodeLaunch, run_dir: str) -> dict[str, str]:
    """Variables the launcher adds for its workers (read by framework/training/watchdog.py)."""
    return {
        "ANVIL_NODE_RANK": str(node.node_rank),
        "ANVIL_STATUS_DIR": status_dir(run_dir, node.node_rank),
        # torchrun's shared agent store keeps keys across restarts, and agents that restart for
        # a membership change keep their restart count: restarted ranks then meet stale process
        # group keys ("Connection refused" at init). A fresh store per attempt avoids both.
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }


def status_dir(run_dir: str, node_rank: int) -> str:
    return f"{run_dir.rstrip('/')}/launch/node{node_rank}"


def torchrun_argv(node: NodeLaunch, python: str, anvil_bin: str) -> list[str]:
    """One torchrun on this node: c10d rendezvous on MASTER_ADDR:PORT, `anvil train` per rank."""
    if node.nnodes < 1 or not 0 <= node.node_rank < node.nnodes:
        raise ConfigError(f"--node-rank {node.node_rank} is outside 0..{node.nnodes - 1} for --nnodes {node.nnodes}")
    if node.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {node.nproc_per_node}")
    if not 0 < node.master_port < 65536:
        raise ConfigError(f"--master-port must be in 1..65535, got {node.master_port}")
    check_host(node.master_addr, "--master-addr")
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={node.nnodes}",
        f"--nproc-per-node={node.nproc_per_node}",
        f"--node-rank={node.node_rank}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={node.master_addr}:{node.master_port}",
        f"--rdzv-id={node.rdzv_id}",
        # Node rank 0 hosts the rendezvous store; the others only connect (also when every "node"
        # is the same machine, where the host-name heuristic cannot tell them apart).
        f"--rdzv-conf=is_host={1 if node.node_rank == 0 else 0}",
        f"--max-restarts={node.max_restarts}",
        anvil_bin,
        "train",
        node.config,
        *node.overrides,
    ]


def forwarded_env(environ: Mapping[str, str], extra: Sequence[str] = ()) -> dict[str, str]:
    """The explicit list of variables copied to remote nodes, sorted for reproducible commands."""
    for name in extra:
        if not _ENV_NAME_RE.match(name):
            raise ConfigError(f"--export: invalid environment variable name {name!r}")
    out = {}
    for key, value in environ.items():
        if key in NEVER_FORWARD or not _ENV_NAME_RE.match(key):
            continue
        if key.startswith(FORWARD_ENV_PREFIXES) or key in FORWARD_ENV_NAMES or key in extra:
            out[key] = value
    return dict(sorted(out.items()))


def node_launch_argv(node: NodeLaunch, anvil_bin: str, node_rank: str) -> list[str]:
    """`anvil launch` for one node of a fan-out (node_rank may be a placeholder like pdsh's %n)."""
    return [
        anvil_bin,
        "launch",
        "--nnodes",
        str(node.nnodes),
        "--node-rank",
        node_rank,
        "--master-addr",
        node.master_addr,
        "--master-port",
        str(node.master_port),
        "--nproc-per-node",
        str(node.nproc_per_node),
        "--max-restarts",
        str(node.max_restarts),
        "--rdzv-id",
        node.rdzv_id,
        node.config,
        *node.overrides,
    ]


def _remote_shell(cwd: str, env: Mapping[str, str], argv: Sequence[str]) -> str:
    exports = [f"{k}={v}" for k, v in env.items()]
    return f"cd {shlex.quote(cwd)} && exec env {shlex.join([*exports, *argv])}"


def ssh_commands(
    hosts: Sequence[Host],
    node: NodeLaunch,
    anvil_bin: str,
    cwd: str,
    env: Mapping[str, str],
    ssh_port: Optional[int] = None,
) -> list[list[str]]:
    """One ssh argv per host; host i runs `anvil launch --node-rank i` in `cwd` with `env`."""
    cmds = []
    for rank, host in enumerate(hosts):
        check_host(host.name)
        remote = _remote_shell(cwd, env, node_launch_argv(node, anvil_bin, str(rank)))
        port = ["-p", str(ssh_port)] if ssh_port else []
        cmds.append(["ssh", "-o", "BatchMode=yes", *port, host.name, remote])
    return cmds


def pdsh_command(
    hosts: Sequence[Host], node: NodeLaunch, anvil_bin: str, cwd: str, env: Mapping[str, str]
) -> list[str]:
    """One pdsh argv for all hosts; pdsh replaces %n by each host's position in the -w list."""
    for host in hosts:
        check_host(host.name)
    remote = _remote_shell(cwd, env, node_launch_argv(node, anvil_bin, "%n"))
    return ["pdsh", "-S", "-R", "ssh", "-f", "1024", "-w", ",".join(h.name for h in hosts), remote]


def slurm_script(node: NodeLaunch, slurm: SlurmOptions, anvil_bin: str, cwd: str, run_dir: str) -> str:
    """An sbatch script: srun starts one `anvil launch` (one torchrun) per node, rendezvous on the first."""
    if slurm.nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {slurm.nodes}")
    for name, value in (
        ("--time", slurm.time),
        ("--partition", slurm.partition),
        ("--account", slurm.account),
        ("--job-name", slurm.job_name),
    ):
        if value is not None and not re.match(r"^[A-Za-z0-9_.:,+-]+$", value):
            raise ConfigError(f"{name}: invalid value {value!r} (letters, digits and . : , + - _ only)")
    output = slurm.output or f"{run_dir.rstrip('/')}/slurm-%j.out"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={slurm.job_name}",
        f"#SBATCH --nodes={slurm.nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if slurm.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={slurm.gpus_per_node}")
    if slurm.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={slurm.cpus_per_task}")
    for name, value in (("time", slurm.time), ("partition", slurm.partition), ("account", slurm.account)):
        if value:
            lines.append(f"#SBATCH --{name}={value}")
    if any(c in output for c in '"$`\\\n'):
        raise ConfigError(f"run_dir / output {output!r}: characters sbatch cannot take in #SBATCH --output")
    # sbatch reads #SBATCH lines itself (no shell): it understands double quotes only.
    lines.append(f"#SBATCH --output={output}" if shlex.quote(output) == output else f'#SBATCH --output="{output}"')
    if slurm.requeue_on_retry:
        lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    lines += [
        "# Written by `anvil launch --slurm`; one torchrun per node, rendezvous on the first node.",
        "set -uo pipefail",
        f"cd {shlex.quote(cwd)}",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_ADDR",
    ]
    srun = ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1"]
    if slurm.container_image:
        # Inside the container `anvil` is on PATH; the working folder must be mounted at the same path.
        anvil_bin = "anvil"
        srun += [f"--container-image={slurm.container_image}", f"--container-workdir={cwd}"]
        if slurm.container_mounts:
            srun.append(f"--container-mounts={slurm.container_mounts}")
    argv = node_launch_argv(node, anvil_bin, "SLURM_NODEID_PLACEHOLDER")
    argv[argv.index("--master-addr") + 1] = "MASTER_ADDR_PLACEHOLDER"
    inner = (
        shlex.join(argv)
        .replace("SLURM_NODEID_PLACEHOLDER", '"$SLURM_NODEID"')
        .replace("MASTER_ADDR_PLACEHOLDER", '"$MASTER_ADDR"')
    )
    # bash -c so that $SLURM_NODEID is expanded inside each task, not once in the batch script.
    lines.append(f"{shlex.join(srun)} bash -c {shlex.quote(inner)}")
    lines.append("rc=$?")
    if slurm.requeue_on_retry:
        lines += [
            f'if [ "$rc" -eq {EXIT_RETRY} ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {slurm.requeue_on_retry} ]; then',
            '  echo "anvil: retryable failure (exit 75); requeueing job $SLURM_JOB_ID" >&2',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "fi",
        ]
    lines.append('exit "$rc"')
    return "\n".join(lines) + "\n"


def format_command(argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> str:
    """A copy-pasteable shell line for an argv (with optional leading VAR=value assignments)."""
    assigns = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*assigns, shlex.join(argv)])
