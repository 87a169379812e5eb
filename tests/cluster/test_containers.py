"""Apptainer command lines (pure) and the definition file, under golden-file tests.

Apptainer cannot be installed here, so what is checked is the text: the generated command lines
against tests/golden/ (regenerate with HPC_FORGET_UPDATE_GOLDEN=1 after an intended change and
review the diff), bash's parse of them, and the structure of containers/hpc-forget.def.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from _golden import NASTY, check_golden  # noqa: E402

from hpc_forget.cluster import containers as C

ROOT = Path(__file__).resolve().parents[2]
DEF_FILE = ROOT / "containers" / "hpc-forget.def"


def shell_words(cmd: str) -> list[str]:
    """How bash splits a command line (it runs `printf '%s\\n' <cmd>`)."""
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {cmd}"], capture_output=True, check=True
    ).stdout
    return out.decode().split("\0")[:-1]


def example_command() -> str:
    return C.container_command(
        "/images/hpc forget.sif",
        ["python", "-m", "hpc_forget.worker", f"{NASTY}/run/manifests/chains-0.json"],
        binds=[f"{NASTY}/store", f"{NASTY}/cache", f"{NASTY}/run", f"{NASTY}/store"],
        env={"HF_HOME": f"{NASTY}/cache/hf-home", **C.OFFLINE_ENV},
    )


def test_host_command_is_the_inner_command_unchanged():
    argv = ["python", "-m", "hpc_forget.worker", f"{NASTY}/m.json"]
    assert C.container_argv(None, argv, binds=["/a"]) == argv
    text = C.container_command(None, argv, env={"HF_HUB_OFFLINE": "1"})
    assert "apptainer" not in text and "APPTAINERENV" not in text
    assert text.splitlines() == ["export HF_HUB_OFFLINE=1", C.join_words(argv)]


def test_apptainer_command_golden():
    check_golden("apptainer-command.sh", example_command() + "\n")


def test_apptainer_command_words_survive_the_shell():
    last = example_command().splitlines()[-1]
    words = shell_words(last)
    assert words[:4] == ["apptainer", "exec", "--nv", "--cleanenv"]
    binds = [words[i + 1] for i, w in enumerate(words) if w == "--bind"]
    # duplicates dropped, each path bound at the same path
    assert binds == [f"{p}:{p}" for p in (f"{NASTY}/store", f"{NASTY}/cache", f"{NASTY}/run")]
    assert words[-5:] == [
        "/images/hpc forget.sif",
        "python",
        "-m",
        "hpc_forget.worker",
        f"{NASTY}/run/manifests/chains-0.json",
    ]


def test_environment_reaches_the_image_through_apptainerenv(tmp_path):
    """Run the generated lines in bash with a fake `apptainer` that prints the variables an
    image would get under --cleanenv: the APPTAINERENV_* ones."""
    fake = tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text("#!/bin/bash\nenv | grep '^APPTAINERENV_' | sort\n")
    fake.chmod(0o755)
    script = example_command()
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "SLURM_JOB_ID": "42",
        "SLURM_ARRAY_TASK_ID": "3",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "UNRELATED": "x",
    }
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, check=True
    )
    got = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert got["APPTAINERENV_SLURM_JOB_ID"] == "42"
    assert got["APPTAINERENV_SLURM_ARRAY_TASK_ID"] == "3"
    assert got["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "0,1"
    assert got["APPTAINERENV_HF_HUB_OFFLINE"] == "1"
    assert got["APPTAINERENV_HF_DATASETS_OFFLINE"] == "1"
    assert got["APPTAINERENV_PYTHONNOUSERSITE"] == "1"
    assert got["APPTAINERENV_HF_HOME"] == f"{NASTY}/cache/hf-home"
    assert "APPTAINERENV_UNRELATED" not in got


def test_no_nv_without_gpus():
    argv = C.container_argv("/i.sif", ["true"], nv=False)
    assert "--nv" not in argv


@pytest.mark.parametrize("bad", ["/a,b", "/a:b"])
def test_bind_paths_apptainer_cannot_express_are_one_line_errors(bad):
    with pytest.raises(C.ContainerError) as e:
        C.container_argv("/i.sif", ["true"], binds=[bad])
    assert "\n" not in str(e.value) and bad in str(e.value)


def test_image_checks():
    with pytest.raises(C.ContainerError, match="--container"):
        C.check_image("docker://pytorch/pytorch")
    assert C.check_image("rel/img.sif") == os.path.abspath("rel/img.sif")


def test_forward_patterns_are_validated():
    with pytest.raises(C.ContainerError):
        C.forward_loop(["BAD NAME"])
    assert "SLURM_*|CUDA_VISIBLE_DEVICES" in C.forward_loop(["SLURM_*", "CUDA_VISIBLE_DEVICES"])


def test_multi_gpu_uses_accelerate_launch_with_explicit_config_and_port():
    argv = C.launcher_argv("python", ["/m.json"], gpus=4, accelerate_config_file="/run/acc.yaml")
    text = C.join_words(argv)
    assert "accelerate.commands.launch --config_file /run/acc.yaml --num_processes 4" in text
    assert '--main_process_port "$hpcf_port"' in text
    assert text.endswith("-m hpc_forget.worker /m.json")
    assert C.launcher_argv("python", ["/m.json"], gpus=1, accelerate_config_file=None) == [
        "python",
        "-m",
        "hpc_forget.worker",
        "/m.json",
    ]
    cfg = C.accelerate_config(4)
    assert cfg["num_processes"] == 4 and cfg["mixed_precision"] == "no"
    assert cfg["distributed_type"] == "MULTI_GPU"


def test_image_probe_is_one_json_line_command():
    argv = C.image_probe_argv("/i.sif")
    assert argv[:4] == ["apptainer", "exec", "--cleanenv", "/i.sif"]
    code = argv[-1]
    assert "hpc_forget.__version__" in code and "python_version" in code


# ---------------------------------------------------------------------------- definition file


def def_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^%(\w+)", line)
        if m:
            current = m.group(1)
            sections[current] = ""
        elif current is None:
            if ":" in line and not line.lstrip().startswith("#"):
                k, v = line.split(":", 1)
                header[k.strip()] = v.strip()
        else:
            sections[current] += line + "\n"
    return header, sections


def test_definition_file_pins_a_pytorch_cuda_base_image():
    header, _ = def_sections(DEF_FILE.read_text())
    assert header["Bootstrap"] == "docker"
    base = header["From"]
    assert base.startswith("pytorch/pytorch") and "latest" not in base
    if "@sha256:" not in base:
        # PyTorch 2.13 is built for CUDA 12.6 and 13.0 only: there is no cuda12.8 tag
        m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn\d+-runtime", base)
        assert m, base
        assert m.group(1) != "2.13.0" or m.group(2) in ("12.6", "13.0"), base
    else:
        assert re.fullmatch(r"pytorch/pytorch@sha256:[0-9a-f]{64}", base), base


REQUIREMENTS = ROOT / "containers" / "requirements.txt"


def image_pins() -> dict[str, str]:
    """containers/requirements.txt: canonical name -> pinned version."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{line}: pin it with =="
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def setup_cfg_requirements() -> list:
    import configparser

    from packaging.requirements import Requirement

    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    lines = cp["options"]["install_requires"].strip().splitlines()
    return [Requirement(x.strip()) for x in lines if x.strip()]


def test_image_pins_agree_with_setup_cfg():
    """One list of pins (containers/requirements.txt) covers every requirement of setup.cfg but
    torch, and each pin satisfies setup.cfg's range."""
    from packaging.utils import canonicalize_name

    pins = image_pins()
    for req in setup_cfg_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins, "torch comes from the base image; do not pin it"
            continue
        assert name in pins, f"setup.cfg requires {req}, which containers/requirements.txt lacks"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"containers/requirements.txt pins {name}=={pins[name]}, outside setup.cfg's {req}"
        )


def test_definition_file_installs_the_pins_into_a_venv_and_checks_them():
    _, sec = def_sections(DEF_FILE.read_text())
    post = sec["post"]
    # the one list of pins, copied in and installed; no second list inline
    assert "containers/requirements.txt /opt/hpc-forget/containers/requirements.txt" in sec["files"]
    assert re.search(r"install -r /opt/hpc-forget/containers/requirements\.txt", post)
    assert not re.findall(r"^\s+[A-Za-z0-9_.-]+==", post, re.M)
    assert re.search(r"install --no-deps /opt/hpc-forget\s*$", post, re.M)
    # Ubuntu's Python refuses pip installs (PEP 668): a venv that sees the base image's torch
    assert (
        "python -m venv --system-site-packages" in post and "--python /opt/venv/bin/python" in post
    )
    assert "PATH=/opt/venv/bin:$PATH" in sec["environment"]
    # a conflict fails the build
    assert re.search(r"pip check\s*$", post.replace("hpcf_pip check", "pip check"), re.M)
    assert "|| true" not in post
    # torch comes from the base image and must not be replaced
    assert "torch" not in image_pins()


def test_definition_file_environment_and_test_sections():
    _, sec = def_sections(DEF_FILE.read_text())
    env = sec["environment"]
    assert re.search(r"^\s*export PYTHONNOUSERSITE=1\s*$", env, re.M)
    assert "HF_HUB_OFFLINE=1" in env and "HF_DATASETS_OFFLINE=1" in env
    assert "import hpc_forget" in sec["test"]
    assert "hpc_forget.worker" in sec["test"]


def test_definition_file_copies_files_that_exist():
    _, sec = def_sections(DEF_FILE.read_text())
    for line in sec["files"].splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        src = shlex.split(line)[0]
        assert (ROOT / src).exists(), f"%files names {src}, which the repository lacks"


@pytest.mark.parametrize("bad", ["\n", "\r", "\0", "\x1b", "\u2028"])
def test_control_characters_never_reach_a_command_line(bad):
    word = f"/x{bad}touch /tmp/hpcf-pwned"
    with pytest.raises(C.ContainerError, match=r"^command word: .*control character"):
        C.join_words(["python", word])
    with pytest.raises(C.ContainerError, match=r"^environment HF_HOME: "):
        C.container_command(None, ["python"], env={"HF_HOME": word})
    with pytest.raises(C.ContainerError, match=r"^--container: "):
        C.check_image(f"/images/x.sif{bad}")
    with pytest.raises(C.ContainerError, match=r"^bind: "):
        C.container_argv("/i.sif", ["python"], binds=[word])
    with pytest.raises(C.ContainerError, match=r"^environment: 'A\s*B"):
        C.env_lines({"A B": "1"})


def test_the_images_import_check_names_modules_that_exist():
    """The definition file's build check imports package modules by name: a module renamed
    in the package must be renamed there too, or the image build fails."""
    import importlib
    import re

    found = re.findall(r"python -c 'import ([\w., ]+);", DEF_FILE.read_text())
    assert found, "no `python -c 'import ...;'` check in the definition file"
    for names in found:
        for name in (n.strip() for n in names.split(",")):
            importlib.import_module(name)
