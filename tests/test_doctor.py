"""`mlxserve doctor`: the checks on their own, then the command on a healthy and a broken setup."""

import http.server
import threading

import pytest

from mlxserve import doctor
from mlxserve.cli import main
from mlxserve.config import DEMO_MODEL_PATH
from mlxserve.service_mgr.health import Probe


def test_platform_apple_silicon_with_metal_passes():
    check = doctor.check_platform("Darwin", "arm64", "15.1", metal=True, cuda=False)
    assert check.level == "PASS" and "macOS 15.1 on arm64" in check.detail


def test_platform_intel_mac_fails_with_a_fix():
    check = doctor.check_platform("Darwin", "x86_64", "13.6", metal=False, cuda=False)
    assert check.level == "FAIL" and "Apple Silicon" in check.fix


def test_platform_linux_says_which_backend():
    cpu = doctor.check_platform("Linux", "x86_64", "", metal=False, cuda=False)
    assert cpu.level == "WARN" and "CPU backend" in cpu.detail
    cuda = doctor.check_platform("Linux", "x86_64", "", metal=False, cuda=True)
    assert cuda.level == "PASS" and "CUDA backend" in cuda.detail


def test_memory_model_larger_than_the_limit_fails():
    assert doctor.check_memory(10 * doctor.GB, 8 * doctor.GB, None).level == "FAIL"
    assert doctor.check_memory(7 * doctor.GB, 8 * doctor.GB, None).level == "WARN"
    assert doctor.check_memory(2 * doctor.GB, 8 * doctor.GB, 1 * doctor.GB).level == "WARN"
    assert doctor.check_memory(2 * doctor.GB, 8 * doctor.GB, 6 * doctor.GB).level == "PASS"


def test_model_not_found():
    assert doctor.check_model("org/not-downloaded", None).level == "WARN"
    missing = doctor.check_model("./no-such-model", None)
    assert missing.level == "FAIL" and "does not exist" in missing.detail


def test_a_folder_that_is_no_model_fails(tmp_path):
    check = doctor.check_model(str(tmp_path), None)
    assert check.level == "FAIL" and "is not an MLX model" in check.detail


def test_a_server_whose_self_test_is_broken_is_a_warning():
    probe = Probe("up", "mlxserve 0.1.0, model 'm'")
    check = doctor.check_server("http://x", probe, {"tool_calling": "broken"}, 0.01)
    assert check.level == "WARN" and "tool_calling broken" in check.detail


def _lines(capsys) -> dict:
    out = capsys.readouterr().out
    checks = [line for line in out.splitlines() if line[:4] in ("PASS", "WARN", "FAIL")]
    return {line.split()[1]: line for line in checks}, out


def test_doctor_on_a_healthy_setup(server, capsys):
    port = server.url.rsplit(":", 1)[1]
    status = main(["doctor", "--model", str(DEMO_MODEL_PATH), "--port", port])
    lines, out = _lines(capsys)
    assert status == 0, out
    assert lines["versions"].startswith("PASS  versions  mlx 0.")
    assert lines["model"].startswith("PASS") and str(DEMO_MODEL_PATH) in lines["model"]
    assert lines["memory"].startswith("PASS")
    assert lines["port"].startswith("PASS") and "held by mlxserve" in lines["port"]
    assert lines["server"].startswith("PASS") and "/healthz in" in lines["server"]
    assert "'test-model'" in lines["server"]
    assert "tool_calling ok, reasoning ok" in lines["server"]
    assert " 0 failed" in out or out.rstrip().endswith("passed")


class _NotMLXServe(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"not here")

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign_port():
    """A port held by another HTTP program."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _NotMLXServe)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_doctor_on_a_broken_setup(foreign_port, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    status = main(["doctor", "--model", str(missing), "--port", str(foreign_port)])
    lines, out = _lines(capsys)
    assert status == 1, out
    assert lines["model"].startswith("FAIL") and f"{missing} does not exist" in lines["model"]
    assert lines["port"].startswith("FAIL") and "a different program holds the port" in lines["port"]
    assert f"fix: stop that program, or serve on another port: --port {foreign_port + 1}" in out
    assert lines["server"].startswith("FAIL")
    assert "memory" not in lines  # nothing to weigh without the model
    assert out.rstrip().splitlines()[-1].startswith("3 failed")
