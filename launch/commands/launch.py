"""`anvil launch`: start `anvil train` on one node, on N nodes, over a hostfile, or through Slurm.

Argument parsing, pre-launch checks and process handling only; the exact commands come from the
pure functions in launch/launcher.py (commands), launch/hostfile.py and launch/exits.py, so `--dry-run` prints what would run, byte for byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from launch.cli import Command

EPILOG = """\
modes:
  single node         anvil launch --nproc-per-node 4 CONFIG.yaml
  each node (no ssh)  anvil launch --nnodes 2 --node-rank 0|1 --master-addr NODE0 CONFIG.yaml
  hostfile (ssh)      anvil launch --hostfile hosts.txt CONFIG.yaml      (lines: 'HOST slots=N')
  Slurm               anvil launch --slurm --nodes 4 --gpus-per-node 8 --time 2:00:00 CONFIG.yaml

exit codes: 0 done; 1 training failed (do not retry); 2 bad input; 3 pre-launch check failed;
75 a rank died, hung or lost its peers (retry: training resumes from the latest checkpoint).
"""


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.yaml", help="training config (as for `anvil train`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1 (default 0)")
    p.add_argument(
        "--master-addr",
        default=None,
        help="address of node 0, which hosts the rendezvous (default 127.0.0.1; hostfile: first host)",
    )
    p.add_argument("--master-port", type=int, default=None, help="rendezvous port on node 0 (default 29500)")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="processes per node (default: one per GPU, or 1 on CPU where gloo is used)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart the job this many times after a failure; training resumes from the latest checkpoint (default 0)",
    )
    p.add_argument("--rdzv-id", default=None, help="rendezvous id shared by all nodes (default: from run_dir)")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands (and sbatch script); run nothing")
    h = p.add_argument_group("hostfile (fan out over ssh or pdsh)")
    h.add_argument("--hostfile", default=None, help="DeepSpeed-style hostfile: one 'HOST slots=N' per line")
    h.add_argument("--launcher", choices=("ssh", "pdsh"), default="ssh", help="fan-out tool (default ssh)")
    h.add_argument("--ssh-port", type=int, default=None, help="ssh port (default: ssh's own)")
    h.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="NAME",
        help="also forward this environment variable to the nodes (repeatable)",
    )
    s = p.add_argument_group("Slurm (--slurm writes an sbatch script and submits it)")
    s.add_argument("--slurm", action="store_true", help="write an sbatch script and submit it with sbatch")
    s.add_argument("--nodes", type=int, default=None, help="Slurm nodes (default: --nnodes)")
    s.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0: CPU nodes)")
    s.add_argument("--time", default=None, help="time limit, e.g. 2:00:00")
    s.add_argument("--partition", default=None, help="Slurm partition")
    s.add_argument("--account", default=None, help="Slurm account")
    s.add_argument("--job-name", default="anvil", help="Slurm job name (default anvil)")
    s.add_argument(
        "--requeue",
        type=int,
        default=0,
        metavar="N",
        help="requeue the Slurm job up to N times when it fails with exit code 75",
    )
    s.add_argument(
        "--container-image",
        default=None,
        help="run every task in this container (pyxis/enroot: image name or .sqsh file)",
    )
    s.add_argument("--container-mounts", default=None, help="pyxis mounts SRC:DST[,SRC:DST...]")
    s.add_argument(
        "--script", default=None, help="where to write the sbatch script (default RUN_DIR/launch/anvil.sbatch)"
    )


def _anvil_bin() -> str:
    beside = Path(sys.executable).parent / "anvil"
    found = str(beside) if beside.exists() else shutil.which("anvil")
    if not found:
        raise SystemExit("anvil launch: cannot find the `anvil` console script (pip install -e . first)")
    return str(Path(found).absolute())


def _local_nproc() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def _node(args: argparse.Namespace, cfg, nnodes: int, nproc: int, master_addr: str):
    from launch.launcher import DEFAULT_PORT, NodeLaunch, default_rdzv_id

    port = args.master_port or DEFAULT_PORT
    return NodeLaunch(
        config=args.config,
        overrides=list(args.overrides),
        nnodes=nnodes,
        node_rank=args.node_rank,
        nproc_per_node=nproc,
        master_addr=master_addr,
        master_port=port,
        max_restarts=args.max_restarts,
        rdzv_id=args.rdzv_id or default_rdzv_id(cfg.run_dir, port),
    )


def _check_layout(cfg, world: int) -> None:
    from framework.configtree import ConfigError
    from launch.env_checks import check_layout

    problem = check_layout(cfg, world)
    if problem:
        raise ConfigError(problem)


def _run(args: argparse.Namespace) -> int:
    from framework.config import load_run_config
    from framework.configtree import ConfigError

    if not os.path.isfile(args.config):
        raise ConfigError(f"{args.config}: config file not found")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    cfg = load_run_config(args.config, args.overrides)
    if args.slurm:
        return _run_slurm(args, cfg)
    if args.hostfile:
        return _run_hostfile(args, cfg)
    return _run_local(args, cfg)


def _run_local(args: argparse.Namespace, cfg) -> int:
    from launch import exits as X, launcher as L
    from launch.env_checks import EnvCheckError, run_checks
    from framework.training.watchdog import read_status

    nproc = args.nproc_per_node or _local_nproc()
    node = _node(args, cfg, args.nnodes, nproc, args.master_addr or "127.0.0.1")
    argv = L.torchrun_argv(node, sys.executable, _anvil_bin())
    env = L.node_env(node, cfg.run_dir)
    if args.dry_run:
        _check_layout(cfg, node.world_size)
        print(L.format_command(argv, env))
        return X.EXIT_OK
    try:
        run_checks(cfg, node.world_size, node.node_rank, node.master_port)
    except EnvCheckError as exc:
        print(f"anvil launch: pre-launch check failed: {exc}", file=sys.stderr)
        return X.EXIT_ENV_CHECK
    status = Path(env["ANVIL_STATUS_DIR"])
    for old in status.glob("rank*.json"):
        old.unlink()
    print(
        f"anvil launch: node {node.node_rank}/{node.nnodes}: {L.format_command(argv, env)}", file=sys.stderr, flush=True
    )
    os.environ.update(env)
    rc, root = _torchrun(argv[3:])
    code, message = X.classify_exit(rc, read_status(str(status)), root, node.node_rank)
    if code:
        print(f"anvil launch: node {node.node_rank}: {message} (exit {code})", file=sys.stderr, flush=True)
    return code


def _torchrun(torchrun_args: list[str]) -> tuple[int, dict | None]:
    """Run exactly `python -m torch.distributed.run ARGS` in this process (this process is the
    elastic agent, so it sees which rank failed and how, instead of torchrun's exit code 1)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.run import parse_args, run

    from launch.exits import root_cause

    try:
        run(parse_args(torchrun_args))
        return 0, None
    except ChildFailedError as exc:
        failures = {
            rank: {
                "exitcode": f.exitcode,
                "local_rank": f.local_rank,
                "pid": f.pid,
                "timestamp": f.timestamp,
                "signal": f.signal_name() if f.exitcode < 0 else None,
            }
            for rank, f in exc.failures.items()
        }
        return 1, root_cause(failures)
    except SignalException as exc:
        # scancel / Ctrl-C / a preempting scheduler: torchrun has already stopped the workers.
        print(f"anvil launch: stopped by {exc.sigval.name}", file=sys.stderr, flush=True)
        raise SystemExit(128 + int(exc.sigval))
    except RendezvousTimeoutError as exc:
        print(
            f"anvil launch: not every node joined the rendezvous in time ({exc}); are all "
            "--nnodes nodes started with the same --master-addr/--master-port/--rdzv-id?",
            file=sys.stderr,
            flush=True,
        )
        return 1, None
    except RendezvousError as exc:
        print(
            f"anvil launch: lost the rendezvous with node 0 ({type(exc).__name__}: {exc}); "
            "node 0 stopped or is unreachable, see its log",
            file=sys.stderr,
            flush=True,
        )
        return 1, None


def _run_hostfile(args: argparse.Namespace, cfg) -> int:
    from launch import exits as X, hostfile as H, launcher as L

    try:
        text = Path(args.hostfile).read_text()
    except OSError as exc:
        raise SystemExit(f"anvil launch: cannot read hostfile {args.hostfile}: {exc.strerror}")
    hosts = H.parse_hostfile(text, args.hostfile)
    nproc = H.hostfile_nproc(hosts, args.nproc_per_node, args.hostfile)
    node = _node(args, cfg, len(hosts), nproc, args.master_addr or hosts[0].address)
    _check_layout(cfg, node.world_size)
    env = L.forwarded_env(os.environ, args.export)
    cwd = os.getcwd()
    if args.launcher == "pdsh":
        cmds = [L.pdsh_command(hosts, node, _anvil_bin(), cwd, env)]
        names = ["pdsh"]
    else:
        cmds = L.ssh_commands(hosts, node, _anvil_bin(), cwd, env, args.ssh_port)
        names = [h.name for h in hosts]
    if args.dry_run:
        for cmd in cmds:
            print(L.format_command(cmd))
        return X.EXIT_OK
    if shutil.which(cmds[0][0]) is None:
        print(f"anvil launch: {cmds[0][0]} not found on this machine (needed for --hostfile)", file=sys.stderr)
        return X.EXIT_ENV_CHECK
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for cmd in cmds]
    pumps = [threading.Thread(target=_prefix_lines, args=(p, name), daemon=True) for p, name in zip(procs, names)]
    for t in pumps:
        t.start()
    codes = [p.wait() for p in procs]
    for t in pumps:
        t.join(timeout=5)
    code = X.combine_exit_codes(codes)
    if code:
        failed = ", ".join(f"{n} (exit {c})" for n, c in zip(names, codes) if c)
        print(f"anvil launch: failed on {failed} (exit {code})", file=sys.stderr)
    return code


def _prefix_lines(proc: subprocess.Popen, name: str) -> None:
    for line in proc.stdout:
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()


def _run_slurm(args: argparse.Namespace, cfg) -> int:
    from launch import exits as X, launcher as L

    nodes = args.nodes or args.nnodes
    nproc = args.nproc_per_node or args.gpus_per_node or 1
    node = _node(args, cfg, nodes, nproc, "127.0.0.1")
    node.node_rank = 0
    _check_layout(cfg, node.world_size)
    slurm = L.SlurmOptions(
        nodes=nodes,
        gpus_per_node=args.gpus_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name,
        requeue_on_retry=args.requeue,
        container_image=args.container_image,
        container_mounts=args.container_mounts,
    )
    script = L.slurm_script(node, slurm, _anvil_bin(), os.getcwd(), cfg.run_dir)
    path = Path(args.script or f"{cfg.run_dir.rstrip('/')}/launch/anvil.sbatch")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    submit = ["sbatch", str(path)]
    print(script, end="")
    if args.dry_run:
        print(f"# written to {path}; submit with: {L.format_command(submit)}")
        return X.EXIT_OK
    if shutil.which("sbatch") is None:
        print(f"anvil launch: sbatch not found; the script is at {path}", file=sys.stderr)
        return X.EXIT_ENV_CHECK
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)  # Slurm opens --output there before the job runs
    return subprocess.run(submit).returncode


COMMANDS = [
    Command(
        ("launch",),
        "start training on one node, several nodes, a hostfile or Slurm",
        _configure,
        _run,
        description="Start `anvil train CONFIG.yaml` under torchrun on one or more nodes.\n\n" + EPILOG,
    )
]
