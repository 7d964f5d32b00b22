"""What the roles render for set-ups this machine cannot converge.

* The real vLLM engine (no GPU here, so vLLM is never installed or started in tests):
  every flag from its variable, the API key in the environment only (never on the
  command line, which `ps` shows), the Hugging Face cache on the data disk, and the stop
  settings that let in-flight requests finish.
* The portal's Nginx site with TLS, checked by `nginx -t` when Nginx is installed (the
  local converge installs it).
"""

from __future__ import annotations

import configparser
import datetime
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.ansible.conftest import run_ansible, strict, which

pytestmark = pytest.mark.timeout(120)

SECRET = "node-key-with-%-and-\"quotes\""


def render_template(tmp_path: Path, role: str, template: str, variables: dict) -> str:
    overrides = tmp_path / f"{role}-overrides.yml"
    overrides.write_text(yaml.safe_dump(variables))
    out = tmp_path / f"{role}-{template}"
    run_ansible("ansible-playbook", "tests/ansible/playbooks/render_template.yml",
                "-e", f"role={role}", "-e", f"template={template}", "-e", f"out={out}",
                "-e", f"overrides={overrides}").check()
    return out.read_text()


def render(tmp_path: Path, **overrides: object) -> configparser.RawConfigParser:
    variables = {"vllm_node_engine": "vllm", "vllm_node_model": "Qwen/Qwen2.5-7B-Instruct-AWQ",
                 "vllm_node_api_key": SECRET, "vllm_node_hf_token": "hf_secret",
                 "vllm_node_program_name": "vllm", "inventory_hostname": "gpu-1",
                 **overrides}
    parser = configparser.RawConfigParser()
    parser.read_string(render_template(tmp_path, "vllm_node", "program.conf.j2", variables))
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


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "portal.crt", tmp_path / "portal.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_nginx_site_with_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    site = render_template(tmp_path, "portal", "nginx-site.conf.j2", {
        "inventory_hostname": "portal-1", "portal_nginx_server_name": "portal.test",
        "portal_nginx_tls_certificate": str(cert), "portal_nginx_tls_certificate_key": str(key),
        "portal_nginx_listen_port": 18081, "portal_nginx_tls_listen_port": 18443,
        "portal_nginx_admin_allow": ["10.0.0.0/8"],
        "_portal_static": {"stat": {"isdir": True, "path": str(tmp_path)}}})
    assert "listen 18443 ssl http2;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "Strict-Transport-Security" in site
    assert "allow 10.0.0.0/8;" in site and f"alias {tmp_path}/;" in site
    ws = site[site.index("location /ws/"):]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws[:ws.index("}")]
    sse = site[site.index("location /v1/"):]
    assert "proxy_buffering off;" in sse[:sse.index("}")]

    nginx = which("nginx")
    if nginx is None:
        message = "nginx is not installed (tests/ansible/test_site_local.py installs it)"
        if strict():
            pytest.fail(message)
        pytest.skip(message)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n")
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
