"""Golden-file tests for the exact commands `anvil launch` builds, and hostfile parsing.

Regenerate the golden files after an intended change with ANVIL_UPDATE_GOLDEN=1.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from framework.configtree import ConfigError
from launch import exits as X, hostfile as H, launcher as L

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
PY, ANVIL, CWD = "/opt/venv/bin/python", "/opt/venv/bin/anvil", "/home/me/project"
ENV = {"NCCL_DEBUG": "INFO", "WANDB_PROJECT": "my proj", "PYTHONPATH": "/src;rm -rf /", "OMP_NUM_THREADS": "4"}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ANVIL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with ANVIL_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


def node(**kw) -> L.NodeLaunch:
    base = dict(
        config="configs/train/tiny.yaml", overrides=["train.steps=10", "run_dir=runs/a b"], rdzv_id="anvil-test"
    )
    return L.NodeLaunch(**{**base, **kw})


def test_single_node_torchrun_golden():
    n = node(nproc_per_node=4)
    check_golden("single_node.txt", L.format_command(L.torchrun_argv(n, PY, ANVIL), L.node_env(n, "runs/a b")) + "\n")


def test_multi_node_torchrun_golden():
    lines = []
    for rank in (0, 1):
        n = node(
            nnodes=2, node_rank=rank, nproc_per_node=8, master_addr="node0.cluster", master_port=29611, max_restarts=2
        )
        lines.append(L.format_command(L.torchrun_argv(n, PY, ANVIL), L.node_env(n, "runs/x")))
    check_golden("multi_node.txt", "\n".join(lines) + "\n")


def test_hostfile_ssh_and_pdsh_golden():
    hosts = H.parse_hostfile("# cluster\nnode0 slots=4\n\nalice@node1 slots=4  # second\n")
    n = node(nnodes=2, nproc_per_node=4, master_addr=hosts[0].address)
    env = L.forwarded_env(ENV)
    ssh = [L.format_command(c) for c in L.ssh_commands(hosts, n, ANVIL, CWD, env)]
    pdsh = L.format_command(L.pdsh_command(hosts, n, ANVIL, CWD, env))
    check_golden("hostfile_ssh.txt", "\n".join(ssh) + "\n")
    check_golden("hostfile_pdsh.txt", pdsh + "\n")


def test_ssh_remote_command_survives_hostile_values():
    """The remote shell line, parsed as a shell would, gives back exactly the intended words."""
    hosts = [H.Host("node0", 2)]
    n = node(overrides=["train.lr=1e-3", "run_dir=$(touch /tmp/pwned)"])
    env = {"PYTHONPATH": "a;b `x` $(y) 'q'"}
    remote = L.ssh_commands(hosts, n, ANVIL, "/dir with space", env)[0][-1]
    words = shlex.split(remote)
    assert words[:4] == ["cd", "/dir with space", "&&", "exec"]
    assert words[5] == "PYTHONPATH=a;b `x` $(y) 'q'"
    assert words[-1] == "run_dir=$(touch /tmp/pwned)"


def test_slurm_script_golden():
    n = node(nnodes=2, nproc_per_node=8, master_port=29700, max_restarts=1)
    slurm = L.SlurmOptions(
        nodes=2, gpus_per_node=8, time="04:00:00", partition="gpu", account="proj-1", requeue_on_retry=3
    )
    check_golden("slurm.sbatch", L.slurm_script(n, slurm, ANVIL, CWD, "runs/a b"))
    pyxis = L.SlurmOptions(
        nodes=2,
        gpus_per_node=8,
        container_image="/shared/images/anvil+cuda.sqsh",
        container_mounts="/shared:/shared,/home/me/project:/home/me/project",
    )
    check_golden("slurm_pyxis.sbatch", L.slurm_script(n, pyxis, ANVIL, CWD, "runs/a b"))


def test_slurm_script_is_valid_bash():
    script = L.slurm_script(node(nnodes=2), L.SlurmOptions(nodes=2), ANVIL, "/x y", "runs/r")
    out = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    with pytest.raises(ConfigError, match="--partition"):
        L.slurm_script(node(), L.SlurmOptions(partition="gpu; rm -rf /"), ANVIL, CWD, "runs/r")


@pytest.mark.parametrize(
    "text, message",
    [
        ("node0\n", "expected 'HOST slots=N'"),
        ("node0 slots=4 extra\n", "expected 'HOST slots=N'"),
        ("node0 gpus=4\n", "expected 'HOST slots=N'"),
        ("node0 slots=0\n", "slots must be a positive integer"),
        ("node0 slots=x\n", "slots must be a positive integer"),
        ("node0 slots=2\nnode0 slots=2\n", "already listed on line 1"),
        ("# nothing\n\n", "no hosts"),
        ("node0;reboot slots=2\n", "invalid host name"),
        ("$(whoami) slots=2\n", "invalid host name"),
        ("-oProxyCommand=sh slots=2\n", "invalid host name"),
        ("node`id` slots=2\n", "invalid host name"),
        ("a|b slots=1\n", "invalid host name"),
        ("node0 slots=2\nnode1&&x slots=2\n", "hosts:2: invalid host name"),
    ],
)
def test_hostfile_rejects_malformed_lines_and_injection(text, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("(", r"\(")):
        H.parse_hostfile(text, "hosts")


def test_hostfile_parses_comments_users_and_ips():
    hosts = H.parse_hostfile("10.0.0.1 slots=8\nbob@gpu-node_2.example.org slots=8 # fast\n")
    assert hosts == [H.Host("10.0.0.1", 8), H.Host("bob@gpu-node_2.example.org", 8)]
    assert hosts[1].address == "gpu-node_2.example.org"
    assert H.hostfile_nproc(hosts, None) == 8 and H.hostfile_nproc(hosts, 2) == 2
    with pytest.raises(ConfigError, match="exceeds the slots"):
        H.hostfile_nproc(hosts, 9)
    with pytest.raises(ConfigError, match="different slots"):
        H.hostfile_nproc([H.Host("a", 2), H.Host("b", 4)], None)


def test_forwarded_env_is_an_explicit_list():
    env = L.forwarded_env(
        {
            **ENV,
            "CUDA_VISIBLE_DEVICES": "0",
            "HOME": "/root",
            "SECRET_TOKEN": "x",
            "ANVIL_NODE_RANK": "3",
            "MY_VAR": "1",
        },
        extra=["MY_VAR"],
    )
    assert list(env) == ["MY_VAR", "NCCL_DEBUG", "OMP_NUM_THREADS", "PYTHONPATH", "WANDB_PROJECT"]
    with pytest.raises(ConfigError, match="invalid environment variable"):
        L.forwarded_env({}, extra=["A;B"])


def test_torchrun_argv_rejects_bad_ranks_and_addresses():
    with pytest.raises(ConfigError, match="--node-rank 2 is outside"):
        L.torchrun_argv(node(nnodes=2, node_rank=2), PY, ANVIL)
    with pytest.raises(ConfigError, match="--master-addr"):
        L.torchrun_argv(node(master_addr="x;y"), PY, ANVIL)
    with pytest.raises(ConfigError, match="--master-port"):
        L.torchrun_argv(node(master_port=70000), PY, ANVIL)


def test_exit_codes_tell_the_scheduler_whether_to_retry():
    assert X.classify_exit(0, [])[0] == X.EXIT_OK
    assert X.classify_exit(1, [])[0] == X.EXIT_RETRY  # died without a record (SIGKILL, OOM)
    dead = {"kind": "dead", "exit_code": X.EXIT_RETRY, "message": "rank 3 (node 1) sent no heartbeat"}
    code, msg = X.classify_exit(1, [dead])
    assert code == X.EXIT_RETRY and "rank 3" in msg
    error = {"kind": "error", "exit_code": X.EXIT_FAILED, "message": "rank 0: ValueError: bad"}
    assert X.classify_exit(1, [dead, error])[0] == X.EXIT_FAILED
    killed = X.root_cause(
        {
            2: {"exitcode": -15, "timestamp": 5, "local_rank": 0, "pid": 11},
            3: {"exitcode": -9, "timestamp": 5, "local_rank": 1, "pid": 12, "signal": "SIGKILL"},
        }
    )
    code, msg = X.classify_exit(1, [], killed, node_rank=1)
    assert code == X.EXIT_RETRY and "rank 3 (node 1, local rank 1, pid 12) was killed by SIGKILL" in msg
    crashed = X.root_cause({0: {"exitcode": 1, "timestamp": 3}})
    assert X.classify_exit(1, [], crashed)[0] == X.EXIT_FAILED  # died before its watchdog started
    assert X.classify_exit(1, [], X.root_cause({0: {"exitcode": 2, "timestamp": 3}}))[0] == X.EXIT_BAD_INPUT
    assert X.combine_exit_codes([0, 75, 255]) == X.EXIT_RETRY
    assert X.combine_exit_codes([75, 1]) == X.EXIT_FAILED
    assert X.combine_exit_codes([0, 0]) == X.EXIT_OK


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", "launch", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_cli_dry_run_matches_golden_and_runs_nothing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run_dir: runs/a b\ntrain:\n  global_batch_size: 8\n  micro_batch_size: 2\n")
    (tmp_path / "hosts").write_text("node0 slots=2\nalice@node1 slots=2\n")
    anvil = str((Path(sys.executable).parent / "anvil").absolute())
    subs = {anvil: ANVIL, sys.executable: PY, str(tmp_path): CWD}

    def norm(text):
        for a, b in subs.items():
            text = text.replace(a, b)
        return text

    single = _cli("--dry-run", "--nproc-per-node", "4", str(cfg), "train.steps=10", cwd=tmp_path)
    hostfile = _cli("--dry-run", "--hostfile", "hosts", "--rdzv-id", "anvil-test", "c.yaml", cwd=tmp_path)
    slurm = _cli(
        "--dry-run",
        "--slurm",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--time",
        "1:00:00",
        "--script",
        "job.sbatch",
        "c.yaml",
        "train.micro_batch_size=1",
        cwd=tmp_path,
    )
    for out in (single, hostfile, slurm):
        assert out.returncode == 0, out.stderr
    text = "\n".join(norm(o.stdout) for o in (single, hostfile, slurm))
    check_golden("cli_dry_run.txt", _strip_env(text))
    assert not (tmp_path / "runs").exists(), "--dry-run must not create the run folder"
    assert (tmp_path / "job.sbatch").read_text() in slurm.stdout


def _strip_env(text: str) -> str:
    """Forwarded variables depend on the caller's environment; golden files keep the rest."""
    out = []
    for line in text.splitlines():
        if "exec env " in line:
            head, tail = line.split("exec env ", 1)
            words = tail.split(" ")
            while words and "=" in words[0] and not words[0].startswith("/"):
                words.pop(0)
            line = head + "exec env <ENV> " + " ".join(words)
        out.append(line)
    return "\n".join(out) + "\n"


def test_cli_bad_input_exits_2_with_reason(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  global_batch_size: 8\n  micro_batch_size: 2\n")
    (tmp_path / "hosts").write_text("node0 slots=2\nnode1;id slots=2\n")
    out = _cli("--dry-run", "--hostfile", str(tmp_path / "hosts"), str(cfg))
    assert out.returncode == 2 and "hosts:2: invalid host name" in out.stderr
    out = _cli("--dry-run", "--nproc-per-node", "3", str(cfg))
    assert out.returncode == 2 and "not divisible" in out.stderr
    out = _cli("--dry-run", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "missing.yaml" in out.stderr


def test_hostfile_fan_out_runs_one_ssh_per_host_and_combines_exit_codes(tmp_path):
    """A stand-in `ssh` on PATH records what it was asked to run; node1 reports a lost rank (75)."""
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/bash\nhost="${@: -2:1}"\nprintf "%s" "${@: -1}" > "$FAKE_SSH_OUT/$host.cmd"\n'
        'echo "hello from $host"\n[ "$host" = node1 ] && exit 75\nexit 0\n'
    )
    fake.chmod(0o755)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  global_batch_size: 4\n  micro_batch_size: 1\n")
    (tmp_path / "hosts").write_text("node0 slots=2\nnode1 slots=2\n")
    env = {
        **os.environ,
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "FAKE_SSH_OUT": str(tmp_path),
        "NCCL_SOCKET_IFNAME": "eth0",
        "SECRET_TOKEN": "do-not-forward",
    }
    out = subprocess.run(
        [sys.executable, "-m", "launch.cli", "launch", "--hostfile", "hosts", "c.yaml", "train.lr=0.01"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert out.returncode == X.EXIT_RETRY, out.stderr
    assert "[node0] hello from node0" in out.stdout and "[node1] hello from node1" in out.stdout
    assert "failed on node1 (exit 75)" in out.stderr
    for rank in (0, 1):
        words = shlex.split((tmp_path / f"node{rank}.cmd").read_text())
        assert words[:5] == ["cd", str(tmp_path), "&&", "exec", "env"]
        assert "NCCL_SOCKET_IFNAME=eth0" in words and not any("SECRET_TOKEN" in w for w in words)
        tail = words[words.index("launch") - 1 :]
        assert tail[1:] == [
            "launch",
            "--nnodes",
            "2",
            "--node-rank",
            str(rank),
            "--master-addr",
            "node0",
            "--master-port",
            "29500",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "0",
            "--rdzv-id",
            tail[tail.index("--rdzv-id") + 1],
            "c.yaml",
            "train.lr=0.01",
        ]


def test_slurm_submits_the_written_script(tmp_path):
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\ncp "$1" "$FAKE_OUT/submitted.sbatch"\necho "Submitted batch job 42"\n')
    fake.chmod(0o755)
    (tmp_path / "c.yaml").write_text("run_dir: runs/r\ntrain:\n  global_batch_size: 4\n  micro_batch_size: 1\n")
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "FAKE_OUT": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "launch.cli", "launch", "--slurm", "--nodes", "2", "--nproc-per-node", "2", "c.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Submitted batch job 42" in out.stdout
    script = (tmp_path / "runs/r/launch/anvil.sbatch").read_text()
    assert (tmp_path / "submitted.sbatch").read_text() == script and "#SBATCH --nodes=2" in script
