"""The real vLLM engine's Supervisor program, rendered by the role's own template.

No GPU here, so vLLM is never installed or started in tests; this checks what the role
would run: every flag from its variable, the API key in the environment only (never on
the command line, which `ps` shows), the Hugging Face cache on the data disk, and the
stop settings that let in-flight requests finish.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from tests.ansible.conftest import run_ansible

pytestmark = pytest.mark.timeout(120)

SECRET = "node-key-with-%-and-\"quotes\""


def render(tmp_path: Path, **overrides: object) -> configparser.RawConfigParser:
    # include_vars has a higher precedence than the defaults it loads next to, so the
    # overrides are given the same way, last.
    variables = {"vllm_node_engine": "vllm", "vllm_node_model": "Qwen/Qwen2.5-7B-Instruct-AWQ",
                 "vllm_node_api_key": SECRET, "vllm_node_hf_token": "hf_secret",
                 "vllm_node_program_name": "vllm", "inventory_hostname": "gpu-1",
                 **overrides}
    (tmp_path / "overrides.yml").write_text(yaml.safe_dump(variables))
    out = tmp_path / "vllm.conf"
    run = run_ansible("ansible-playbook", "tests/ansible/playbooks/render_vllm_program.yml",
                      "-e", f"out={out}", "-e", f"overrides={tmp_path / 'overrides.yml'}")
    run.check()
    parser = configparser.RawConfigParser()
    parser.read_string(out.read_text())
    return parser


def test_every_flag_comes_from_its_variable(tmp_path: Path) -> None:
    program = render(tmp_path, vllm_node_served_model_name="qwen-7b", vllm_node_port=8011,
                     vllm_node_gpu_memory_utilization=0.85, vllm_node_max_model_len=16384,
                     vllm_node_max_num_seqs=64, vllm_node_tensor_parallel_size=2,
                     vllm_node_quantization="awq", vllm_node_dtype="half",
                     vllm_node_enable_prefix_caching=False,
                     vllm_node_extra_args=["--enable-chunked-prefill"])["program:vllm"]
    argv = shlex.split(program["command"])
    assert argv[:3] == ["/opt/vllm/venv/bin/vllm", "serve", "Qwen/Qwen2.5-7B-Instruct-AWQ"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--host"] == "0.0.0.0" and flags["--port"] == "8011"
    assert flags["--served-model-name"] == "qwen-7b"
    assert flags["--gpu-memory-utilization"] == "0.85"
    assert flags["--max-model-len"] == "16384" and flags["--max-num-seqs"] == "64"
    assert flags["--tensor-parallel-size"] == "2"
    assert flags["--quantization"] == "awq" and flags["--dtype"] == "half"
    assert "--no-enable-prefix-caching" in argv and "--enable-chunked-prefill" in argv


def test_secrets_stay_off_the_command_line(tmp_path: Path) -> None:
    program = render(tmp_path)["program:vllm"]
    assert "node-key" not in program["command"] and "hf_secret" not in program["command"]
    # Supervisor expands %(...)s: a literal % is written %%; quotes are escaped.
    assert 'VLLM_API_KEY="node-key-with-%%-and-\\"quotes\\""' in program["environment"]
    assert 'HF_TOKEN="hf_secret"' in program["environment"]
    assert 'HF_HOME="/data/huggingface"' in program["environment"]


def test_supervisor_settings(tmp_path: Path) -> None:
    program = render(tmp_path, vllm_node_stop_wait_seconds=600)["program:vllm"]
    assert program["user"] == "vllm"
    assert program["autostart"] == "true" and program["autorestart"] == "true"
    assert program["stopsignal"] == "TERM" and program["stopwaitsecs"] == "600"
    assert program["stopasgroup"] == "true" and program["killasgroup"] == "true"
    assert program["stdout_logfile"] == "/var/log/vllm/vllm.log"
    assert program["stdout_logfile_maxbytes"] == "100MB"
    assert render(tmp_path, vllm_node_service_state="stopped")["program:vllm"][
        "autostart"] == "false"
