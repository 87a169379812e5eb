"""Cluster profiles: Slurm times, gres, the shipped profiles, overrides, and every value
checked by what sbatch accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc_forget.cluster import profiles as P
from hpc_forget.errors import SlurmError

ROOT = Path(__file__).resolve().parents[2]


# ============================================================================ profiles


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("1:30", 2), ("2:00:00", 120), ("1-00", 1440), ("1-02:30", 1590), ("0:0:59", 1)],
)
def test_parse_time(text, minutes):
    assert P.parse_time(text, "x") == minutes


@pytest.mark.parametrize("bad", ["", "abc", "1h", "0", "-5"])
def test_parse_time_errors_name_the_option(bad):
    with pytest.raises(SlurmError) as e:
        P.parse_time(bad, "p.yaml: time")
    assert str(e.value).startswith("p.yaml: time:") and "\n" not in str(e.value)


def test_gpus_from_gres():
    assert P.gpus_from_gres(None) == 0
    assert P.gpus_from_gres("gpu:1") == 1
    assert P.gpus_from_gres("gpu:a100:2") == 2
    assert P.gpus_from_gres("gpu") == 1
    assert P.gpus_from_gres("gpu:2,tmpfs:10") == 2


def test_shipped_profiles_load():
    local = P.load_profile("local")
    assert local.partition == "debug" and local.gpus == 0 and not local.nv
    gpu = P.load_profile(str(ROOT / "slurm" / "profiles" / "example-gpu.yaml"))
    assert gpu.gpus == 1 and gpu.chain_time == 24 * 60 and gpu.array_throttle == 50
    assert gpu.sbatch == ("--mail-type=FAIL",)


def test_the_command_lines_in_the_shipped_profiles_work():
    """Profile comments show users how to override a key: that is --slurm, never --set."""
    for path in sorted((ROOT / "slurm" / "profiles").glob("*.yaml")):
        text = path.read_text()
        for key in P.PROFILE_KEYS:
            assert f"--set {key}=" not in text, f"{path.name}: --set {key}= is --slurm {key}="
        for pair in re.findall(r"--slurm (\S+=\S+)", text):
            P.load_profile(str(path), [pair])


def test_overrides_on_the_command_line():
    p = P.load_profile(
        "local", ["time=2:00:00", "array_throttle=4", "setup=module load x", "gres=gpu:2"]
    )
    assert p.time == 120 and p.array_throttle == 4 and p.setup == ("module load x",)
    assert p.gpus == 2
    p = P.load_profile("local", ["sbatch=[--exclusive, --mail-type=END]", "account=null"])
    assert p.sbatch == ("--exclusive", "--mail-type=END") and p.account is None


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("partition: gpu\ncolour: red\n", "colour: unknown key"),
        ("time: 1h\n", "time: '1h' is not a Slurm time"),
        ("cpus_per_task: zero\n", "cpus_per_task: must be an integer"),
        ("mem: lots\n", "mem: 'lots' is not a Slurm memory size"),
        ("time: 1\nsignal_lead_s: 90\n", "signal_lead_s: 90 s is not shorter"),
        ("sbatch: [exclusive]\n", "is not an sbatch option"),
        ("sbatch: ['--array=0-3']\n", "--array is set by hpc-forget"),
        ("partition: [a\n", "cannot parse the profile"),
        ('"time\\n30": 5\n', "contains the control character '\\n'"),
        ('partition: "gpu\\ntouch x"\n', "partition: 'gpu\\ntouch x' contains the control"),
    ],
)
def test_profile_errors_are_one_line_naming_file_and_key(tmp_path, content, needle):
    p = tmp_path / "site.yaml"
    p.write_text(content)
    with pytest.raises(SlurmError) as e:
        P.load_profile(str(p))
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and needle in msg


def test_override_errors_name_the_option():
    with pytest.raises(SlurmError, match=r"^--slurm: colour: unknown profile key"):
        P.load_profile("local", ["colour=red"])
    with pytest.raises(SlurmError, match=r"^--slurm: time: "):
        P.load_profile("local", ["time=soon"])
    with pytest.raises(SlurmError, match="KEY=VALUE"):
        P.load_profile("local", ["time"])


def test_unknown_profile_lists_where_it_looked():
    with pytest.raises(SlurmError, match="no profile named 'nope' in"):
        P.load_profile("nope")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("gres=gpu:x:y:z", "gres: 'gpu:x:y:z' is not a gres list"),
        ("gres=gpu:a100:two", "is not a gres list"),
        ("gres=gpu:", "is not a gres list"),
        ("gres=:2", "is not a gres list"),
        ("gres=gpu:1,,", "is not a gres list"),
        ("cpus_per_task=\u0663", "cpus_per_task: must be an integer >= 1"),
        ("cpus_per_task=-1", "cpus_per_task: must be an integer >= 1"),
        ("max_array_size=0", "max_array_size: must be an integer >= 1"),
        ("signal_lead_s=70000", "signal_lead_s: must be an integer between 0 and 65535"),
        ("mem=16 G", "is not a Slurm memory size"),
        ("partition=gpu;rm", "is not a partition name"),
        ("partition=a b", "is not a partition name"),
        ("account=lab$HOME", "is not a Slurm account name"),
        ("qos=high,low", "is not a Slurm qos name"),
        ("constraint=a100 h100", "is not a Slurm feature expression"),
        ("time=1:2:3:4", "is not a Slurm time"),
        ("time=1-", "is not a Slurm time"),
        ("nv=maybe", "nv: must be true or false"),
        ("setup=[unclosed", "setup: '[unclosed' is not a YAML list"),
        ("sbatch=[a: b]", "sbatch: must be a list of strings"),
        ("time", "use KEY=VALUE"),
        ("=5", "the key before '=' is empty"),
        (" =5", "the key before '=' is empty"),
    ],
)
def test_profile_values_sbatch_would_reject_are_one_line_errors(override, needle):
    with pytest.raises(SlurmError) as e:
        P.load_profile("local", [override])
    msg = str(e.value)
    assert msg.startswith("--slurm") and needle in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("override", "gpus"),
    [("gres=gpu", 1), ("gres=gpu:2", 2), ("gres=gpu:a100:2", 2), ("gres=gpu:a100_80g:1,shard:4", 1),
     ("gres=gpu:h100", 1), ("gres=null", 0)],
)  # fmt: skip
def test_gres_values_slurm_accepts(override, gpus):
    assert P.load_profile("local", [override]).gpus == gpus


def test_names_and_expressions_slurm_accepts():
    p = P.load_profile(
        "local",
        ["partition=gpu,gpu-long", "account=lab.ai_2", "qos=normal", "constraint=a100|h100",
         "mem=64g", "signal_lead_s=65535", "time=7-00:00:00"],
    )  # fmt: skip
    assert p.partition == "gpu,gpu-long" and p.constraint == "a100|h100" and p.mem == "64g"
