"""Pure functions that turn a launch request into exact commands: torchrun, ssh/pdsh, Slurm sbatch.

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

DEFAULT_PORT = 29500

# Exit codes of `anvil launch`, meant for schedulers (documented in README "Launching").
from framework.training.watchdog import EXIT_FAILED, EXIT_RETRY  # noqa: E402 - one definition

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # bad command line, config or hostfile: nothing was started
EXIT_ENV_CHECK = 3  # a pre-launch check failed (port in use, run dir not writable, data missing)
EXIT_INTERRUPTED = 130

# Environment forwarded to remote nodes in hostfile mode (ssh starts a clean login environment).
FORWARD_ENV_PREFIXES = ("NCCL_", "WANDB_", "ANVIL_", "HF_", "TORCH_", "GLOO_", "UCX_", "FI_", "PYTHON")
FORWARD_ENV_NAMES = ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_OFFLINE", "LD_LIBRARY_PATH")
# Host-specific settings that must never be copied to another machine.
NEVER_FORWARD = ("CUDA_VISIBLE_DEVICES", "ANVIL_NODE_RANK", "ANVIL_STATUS_DIR", "PYTHONHOME")

# A host name, an IPv4 address or user@host: letters, digits, '.', '-', '_' and nothing a shell or
# ssh could interpret (no leading '-', which ssh would read as an option).
_HOST_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}@)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Host:
    name: str  # as written: host or user@host (the ssh target)
    slots: int

    @property
    def address(self) -> str:
        return self.name.split("@", 1)[-1]


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


def check_host(name: str, where: str = "host") -> str:
    if not _HOST_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{where}: invalid host name {name!r}; expected letters, digits, '.', '-', '_' "
            "(optionally user@host), not starting with '-'")
    return name


def parse_hostfile(text: str, source: str = "hostfile") -> list[Host]:
    """Parse DeepSpeed's hostfile format: one `HOST slots=N` per line, `#` comments, blank lines."""
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("slots="):
            raise ConfigError(f"{where}: expected 'HOST slots=N', got {raw.strip()!r}")
        name, slots_text = parts[0], parts[1][len("slots="):]
        check_host(name, where)
        if not slots_text.isdigit() or int(slots_text) <= 0:
            raise ConfigError(f"{where}: slots must be a positive integer, got {slots_text!r}")
        if name in seen:
            raise ConfigError(f"{where}: host {name!r} already listed on line {seen[name]}")
        seen[name] = lineno
        hosts.append(Host(name, int(slots_text)))
    if not hosts:
        raise ConfigError(f"{source}: no hosts (expected lines like 'worker-1 slots=8')")
    return hosts


def hostfile_nproc(hosts: Sequence[Host], nproc_per_node: Optional[int], source: str = "hostfile") -> int:
    """Processes per node for a hostfile: torchrun needs the same count on every node."""
    slots = {h.slots for h in hosts}
    if nproc_per_node is not None:
        short = [h.name for h in hosts if h.slots < nproc_per_node]
        if short:
            raise ConfigError(f"{source}: --nproc-per-node {nproc_per_node} exceeds the slots of {', '.join(short)}")
        return nproc_per_node
    if len(slots) != 1:
        raise ConfigError(
            f"{source}: hosts have different slots {sorted(slots)}; every node runs the same number of "
            "processes (pass --nproc-per-node to use fewer)")
    return slots.pop()


def default_rdzv_id(run_dir: str, port: int) -> str:
    """The same id on every node that runs the same command (rendezvous ids must match)."""
    return "anvil-" + hashlib.sha1(f"{run_dir}:{port}".encode()).hexdigest()[:10]


def node_env(node: NodeLaunch, run_dir: str) -> dict[str, str]:
    """Variables the launcher adds for its workers (read by framework/training/watchdog.py)."""
    return {"ANVIL_NODE_RANK": str(node.node_rank),
            "ANVIL_STATUS_DIR": status_dir(run_dir, node.node_rank),
            # torchrun's shared agent store keeps keys across restarts, and agents that restart for
            # a membership change keep their restart count: restarted ranks then meet stale process
            # group keys ("Connection refused" at init). A fresh store per attempt avoids both.
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


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
        python, "-m", "torch.distributed.run",
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
        anvil_bin, "train", node.config, *node.overrides,
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
    return [anvil_bin, "launch", "--nnodes", str(node.nnodes), "--node-rank", node_rank,
            "--master-addr", node.master_addr, "--master-port", str(node.master_port),
            "--nproc-per-node", str(node.nproc_per_node), "--max-restarts", str(node.max_restarts),
            "--rdzv-id", node.rdzv_id, node.config, *node.overrides]


def _remote_shell(cwd: str, env: Mapping[str, str], argv: Sequence[str]) -> str:
    exports = [f"{k}={v}" for k, v in env.items()]
    return f"cd {shlex.quote(cwd)} && exec env {shlex.join([*exports, *argv])}"


def ssh_commands(hosts: Sequence[Host], node: NodeLaunch, anvil_bin: str, cwd: str,
                 env: Mapping[str, str], ssh_port: Optional[int] = None) -> list[list[str]]:
    """One ssh argv per host; host i runs `anvil launch --node-rank i` in `cwd` with `env`."""
    cmds = []
    for rank, host in enumerate(hosts):
        check_host(host.name)
        remote = _remote_shell(cwd, env, node_launch_argv(node, anvil_bin, str(rank)))
        port = ["-p", str(ssh_port)] if ssh_port else []
        cmds.append(["ssh", "-o", "BatchMode=yes", *port, host.name, remote])
    return cmds


def pdsh_command(hosts: Sequence[Host], node: NodeLaunch, anvil_bin: str, cwd: str,
                 env: Mapping[str, str]) -> list[str]:
    """One pdsh argv for all hosts; pdsh replaces %n by each host's position in the -w list."""
    for host in hosts:
        check_host(host.name)
    remote = _remote_shell(cwd, env, node_launch_argv(node, anvil_bin, "%n"))
    return ["pdsh", "-S", "-R", "ssh", "-f", "1024", "-w", ",".join(h.name for h in hosts), remote]


def slurm_script(node: NodeLaunch, slurm: SlurmOptions, anvil_bin: str, cwd: str, run_dir: str) -> str:
    """An sbatch script: srun starts one `anvil launch` (one torchrun) per node, rendezvous on the first."""
    if slurm.nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {slurm.nodes}")
    for name, value in (("--time", slurm.time), ("--partition", slurm.partition), ("--account", slurm.account),
                        ("--job-name", slurm.job_name)):
        if value is not None and not re.match(r"^[A-Za-z0-9_.:,+-]+$", value):
            raise ConfigError(f"{name}: invalid value {value!r} (letters, digits and . : , + - _ only)")
    output = slurm.output or f"{run_dir.rstrip('/')}/slurm-%j.out"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={slurm.job_name}", f"#SBATCH --nodes={slurm.nodes}",
             "#SBATCH --ntasks-per-node=1"]
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
    inner = shlex.join(argv).replace("SLURM_NODEID_PLACEHOLDER", '"$SLURM_NODEID"') \
        .replace("MASTER_ADDR_PLACEHOLDER", '"$MASTER_ADDR"')
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


def root_cause(failures: Mapping[int, Mapping]) -> Optional[dict]:
    """The failed rank that explains the others: not one the agent itself stopped with SIGTERM."""
    if not failures:
        return None
    own = {r: f for r, f in failures.items() if f.get("exitcode") != -15} or dict(failures)
    rank = min(own, key=lambda r: (own[r].get("timestamp", 0), r))
    return {"rank": rank, **own[rank]}


def describe_failure(root: Mapping, node_rank: int) -> str:
    how = (f"was killed by {root.get('signal') or 'signal ' + str(-root['exitcode'])}" if root["exitcode"] < 0
           else f"exited with code {root['exitcode']}")
    return f"rank {root['rank']} (node {node_rank}, local rank {root.get('local_rank')}, pid {root.get('pid')}) {how}"


def classify_exit(returncode: int, records: Sequence[Mapping], root: Optional[Mapping] = None,
                  node_rank: int = 0) -> tuple[int, str]:
    """Map torchrun's outcome and the watchdog records of this node to a scheduler exit code.

    A watchdog record decides when there is one (an exception in training: do not retry; a lost
    or hung peer: retry). Without records, a rank killed by a signal (SIGKILL, out of memory) is
    retryable and a rank that exited with an error code before its watchdog started is not.
    """
    if returncode == 0:
        return EXIT_OK, "job finished"
    errors = [r for r in records if r.get("exit_code") == EXIT_FAILED]
    chosen = errors or [r for r in records if r.get("kind") != "comm_error"] or list(records)
    own_exit = root is not None and root["exitcode"] in (EXIT_RETRY, EXIT_FAILED) and records
    parts = [describe_failure(root, node_rank)] if root and not own_exit else []
    parts += list(dict.fromkeys(str(r.get("message", "")) for r in chosen[:4]))
    detail = "; ".join(parts) or f"torchrun exited with {returncode}"
    if errors:
        return EXIT_FAILED, f"training failed: {detail}"
    if records or root is None or root["exitcode"] < 0 or root["exitcode"] == EXIT_RETRY:
        return EXIT_RETRY, f"job failed (retryable): {detail}"
    if root["exitcode"] == EXIT_BAD_INPUT:
        return EXIT_BAD_INPUT, f"bad input: {detail}"
    return EXIT_FAILED, f"training failed: {detail}"


def combine_exit_codes(codes: Sequence[int]) -> int:
    """One exit code for a fan-out: a real training failure wins, then bad input, then retry."""
    for code in (EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ENV_CHECK):
        if code in codes:
            return code
    return EXIT_OK if all(c == 0 for c in codes) else EXIT_RETRY
