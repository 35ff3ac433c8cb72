"""``mlxserve service``: rendered launchd/systemd files, the exact commands, status, logs, and a
real server started from the rendered command line.

Every test runs with HOME in a temporary folder and a recording runner, so nothing real is
loaded into launchd or systemd; the one exception, ``test_real_systemd_user_install``, runs only
where ``systemctl --user`` works and no mlxserve unit is installed yet.
"""

import configparser
import http.server
import io
import os
import plistlib
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlxserve.cli import main
from mlxserve.config import DEMO_MODEL_PATH
from mlxserve.service_mgr import commands, health, launchd, logs, systemd
from mlxserve.service_mgr.manager import ServiceError, ServiceManager
from mlxserve.service_mgr.runner import Runner
from mlxserve.service_mgr.spec import executable
from tests.conftest import free_port

UID = os.getuid()
LABEL = launchd.DEFAULT_LABEL

# Flag sets in Settings' declaration order (the order the service's command line uses).
FLAG_SETS = [
    [],
    ["--port", "9000"],
    ["--model", "/opt/my models/x", "--served-model-name", 'a "q" $NAME 100%', "--host", "0.0.0.0"],
    ["--max-tokens", "100", "--timeout", "12.5", "--max-context", "6", "--log-level", "debug"],
]


class RecordingRunner(Runner):
    """Records every command; answers from ``results`` (argv tuple -> (rc, stdout)), else rc 0."""

    def __init__(self):
        self.calls = []
        self.results = {}

    def run(self, argv):
        self.calls.append(list(argv))
        rc, stdout = self.results.get(tuple(argv), (0, ""))
        return subprocess.CompletedProcess(list(argv), rc, stdout, "boom" if rc else "")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with no XDG, HF_HOME or MLXSERVE_* variables from the real one."""
    for name in list(os.environ):
        if name.startswith(("MLXSERVE_", "XDG_")) or name == "HF_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def runner(monkeypatch, home):
    """A recording runner behind every ``mlxserve service`` command; set ``runner.platform``."""
    rec = RecordingRunner()
    rec.platform = "linux"

    def make(platform=None, **kwargs):
        return ServiceManager(platform=platform or rec.platform, runner=rec, **kwargs)

    monkeypatch.setattr(commands, "ServiceManager", make)
    return rec


def rendered(capsys, kind, flags):
    assert main(["service", "print", kind, *flags]) == 0
    return capsys.readouterr().out


def read_unit(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(text)
    return parser


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", FLAG_SETS)
def test_plist_parses_back_with_the_given_flags(home, capsys, flags):
    plist = plistlib.loads(rendered(capsys, "--launchd", flags).encode())
    exe = executable()
    assert Path(exe[0]).is_absolute() and Path(exe[0]).exists()
    assert plist["ProgramArguments"] == exe + ["serve", *flags]
    assert plist["Label"] == LABEL
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProcessType"] == "Interactive"
    log = str(home / "Library" / "Logs" / "mlxserve" / "mlxserve.log")
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
    assert plist["WorkingDirectory"] == str(home)
    assert plist["EnvironmentVariables"]["PATH"].split(":")[0] == str(Path(exe[0]).parent)
    assert "HF_HOME" not in plist["EnvironmentVariables"]
    assert plist["ExitTimeOut"] > 30  # longer than the default drain_timeout


@pytest.mark.parametrize("flags", FLAG_SETS)
def test_systemd_unit_parses_with_the_same_command_line(home, capsys, flags):
    unit = read_unit(rendered(capsys, "--systemd", flags))
    service = unit["Service"]
    assert systemd.split_command(service["ExecStart"]) == executable() + ["serve", *flags]
    assert unit["Unit"]["After"] == "network.target"
    assert service["Restart"] == "on-failure"
    log = home / ".local" / "state" / "mlxserve" / "mlxserve.log"
    assert service["StandardOutput"] == service["StandardError"] == f"append:{log}"
    assert service["WorkingDirectory"] == str(home)
    assert service["Environment"].startswith("PATH=" + str(Path(executable()[0]).parent))
    assert unit["Install"]["WantedBy"] == "default.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit(home, capsys, tmp_path):
    text = rendered(capsys, "--systemd", FLAG_SETS[2])
    unit = tmp_path / "verify" / "mlxserve.service"
    unit.parent.mkdir()
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "word", ["plain", "", "two words", 'say "hi"', "back\\slash", "100%d", "$HOME", "it's", "${X}"]
)
def test_systemd_quoting_round_trips(word):
    assert systemd.split_command(systemd.quote(word)) == [word]


def test_environment_carries_hf_home_and_config_path(home, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(home / "hf cache"))
    monkeypatch.setenv("MLXSERVE_CONFIG", str(home / "c.toml"))
    (home / "c.toml").write_text("port = 9100\n")
    env = plistlib.loads(rendered(capsys, "--launchd", []).encode())["EnvironmentVariables"]
    assert env["HF_HOME"] == str(home / "hf cache")
    assert env["MLXSERVE_CONFIG"] == str(home / "c.toml")
    assert f'Environment="HF_HOME={home}/hf cache"' in rendered(capsys, "--systemd", [])


def test_local_model_path_becomes_absolute(home, capsys, monkeypatch):
    (home / "models" / "m").mkdir(parents=True)
    monkeypatch.chdir(home)
    args = plistlib.loads(rendered(capsys, "--launchd", ["--model", "models/m"]).encode())
    assert args["ProgramArguments"][-2:] == ["--model", str(home / "models" / "m")]


def test_invalid_flags_are_refused_before_anything_is_written(runner, capsys):
    assert main(["service", "install", "--max-requests", "0"]) == 2
    assert "max_requests" in capsys.readouterr().err
    assert runner.calls == [] and not systemd.unit_path().exists()


def test_unsupported_platform_is_a_clear_error():
    with pytest.raises(ServiceError, match="macOS .* or Linux"):
        ServiceManager(platform="win32")


# --- exact commands ----------------------------------------------------------------------------


def launchctl(*args):
    return ["launchctl", *args]


PRINT = launchctl("print", f"gui/{UID}/{LABEL}")
NOT_LOADED = (113, "")


@pytest.mark.parametrize("loaded", [False, True])
def test_launchd_install(runner, home, loaded):
    """bootstrap refuses a loaded label, so a re-install boots the old agent out first."""
    runner.platform = "darwin"
    if not loaded:
        runner.results[tuple(PRINT)] = NOT_LOADED
    assert main(["service", "install", "--port", "9000"]) == 0
    path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    bootout = [launchctl("bootout", f"gui/{UID}/{LABEL}")] if loaded else []
    assert runner.calls == [PRINT, *bootout, launchctl("bootstrap", f"gui/{UID}", str(path))]
    assert plistlib.loads(path.read_bytes())["ProgramArguments"][-2:] == ["--port", "9000"]
    assert (home / "Library" / "Logs" / "mlxserve").is_dir()


def test_launchd_custom_label(runner, home):
    runner.platform = "darwin"
    runner.results[("launchctl", "print", f"gui/{UID}/org.example.llm")] = NOT_LOADED
    assert main(["service", "install", "--label", "org.example.llm"]) == 0
    path = home / "Library" / "LaunchAgents" / "org.example.llm.plist"
    assert plistlib.loads(path.read_bytes())["Label"] == "org.example.llm"
    assert runner.calls[-1] == launchctl("bootstrap", f"gui/{UID}", str(path))


@pytest.mark.parametrize(
    "action, loaded, expected",
    [
        ("uninstall", True, [PRINT, launchctl("bootout", f"gui/{UID}/{LABEL}")]),
        ("uninstall", False, [PRINT]),
        ("start", True, [PRINT, launchctl("kickstart", f"gui/{UID}/{LABEL}")]),
        ("start", False, [PRINT, "bootstrap"]),
        ("stop", True, [PRINT, launchctl("bootout", f"gui/{UID}/{LABEL}")]),
        ("stop", False, [PRINT]),
    ],
)
def test_launchd_actions(runner, home, action, loaded, expected):
    runner.platform = "darwin"
    path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    if not loaded:
        runner.results[tuple(PRINT)] = NOT_LOADED
    assert main(["service", action]) == 0
    bootstrap = launchctl("bootstrap", f"gui/{UID}", str(path))
    assert runner.calls == [bootstrap if argv == "bootstrap" else argv for argv in expected]
    assert path.exists() == (action != "uninstall")


def systemctl(*args):
    return ["systemctl", "--user", *args]


IS_ACTIVE = systemctl("is-active", "--quiet", "mlxserve.service")


@pytest.mark.parametrize("running", [False, True])
def test_systemd_install(runner, home, running):
    """`enable --now` leaves a running unit alone, so a re-install stops it first."""
    if not running:
        runner.results[tuple(IS_ACTIVE)] = (3, "")
    assert main(["service", "install", "--port", "9000"]) == 0
    stop = [systemctl("stop", "mlxserve.service")] if running else []
    assert runner.calls == [
        IS_ACTIVE,
        *stop,
        systemctl("daemon-reload"),
        systemctl("enable", "--now", "mlxserve.service"),
    ]
    unit = read_unit((home / ".config" / "systemd" / "user" / "mlxserve.service").read_text())
    assert systemd.split_command(unit["Service"]["ExecStart"])[-2:] == ["--port", "9000"]
    assert (home / ".local" / "state" / "mlxserve").is_dir()


def test_systemd_unit_honours_xdg_config_home(runner, home, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    assert main(["service", "install"]) == 0
    assert (home / "cfg" / "systemd" / "user" / "mlxserve.service").is_file()


@pytest.mark.parametrize(
    "action, expected",
    [
        (
            "uninstall",
            [systemctl("disable", "--now", "mlxserve.service"), systemctl("daemon-reload")],
        ),
        ("start", [systemctl("start", "mlxserve.service")]),
        ("stop", [systemctl("stop", "mlxserve.service")]),
    ],
)
def test_systemd_actions(runner, action, expected):
    path = systemd.unit_path()
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert main(["service", action]) == 0
    assert runner.calls == expected
    assert path.exists() == (action != "uninstall")


@pytest.mark.parametrize("platform", ["darwin", "linux"])
@pytest.mark.parametrize("action", ["uninstall", "start", "stop"])
def test_actions_need_an_installed_service(runner, capsys, platform, action):
    runner.platform = platform
    assert main(["service", action]) == 1
    assert "not installed" in capsys.readouterr().err
    assert runner.calls == []


def test_a_failing_command_exits_1_naming_it(runner, capsys):
    runner.results[tuple(systemctl("daemon-reload"))] = (1, "")
    runner.results[tuple(IS_ACTIVE)] = (3, "")
    assert main(["service", "install"]) == 1
    err = capsys.readouterr().err
    assert "`systemctl --user daemon-reload` failed (exit 1): boom" in err
    assert str(systemd.unit_path()) in err  # says the file was written


# --- status ------------------------------------------------------------------------------------


def test_status_parsers():
    out = "gui/501/com.mlxserve.server = {\n\tstate = running\n\tpid = 4242\n}\n"
    assert launchd.parse_print(out) == (4242, "running")
    assert launchd.parse_print("\tstate = not running\n") == (None, "not running")
    show = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n"
    assert systemd.parse_show(show) == (True, 4242, "active (running)")
    show = "LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n"
    assert systemd.parse_show(show) == (False, None, "inactive (dead)")


@pytest.mark.parametrize(
    "status, body, state",
    [
        (200, b'{"status": "ok", "model": "m", "version": "0.1.0"}', "up"),
        (503, b'{"status": "loading", "model": "m", "version": "0.1.0"}', "loading"),
        (503, b'{"status": "failed", "model": "m", "version": "0.1.0"}', "failed"),
        (200, b'{"status": "ok"}', "foreign"),  # some other service's health check
        (404, b"<html>Not Found</html>", "foreign"),
    ],
)
def test_health_answers_are_classified(status, body, state):
    assert health.classify(status, body).state == state


def install_on_port(port, *flags):
    """Install (recorded, nothing real) a systemd unit serving the demo model on ``port``."""
    argv = ["service", "install", "--model", str(DEMO_MODEL_PATH), "--port", str(port), *flags]
    assert main(argv) == 0


def systemd_says(runner, properties):
    """Make the recorded ``systemctl --user show`` report a loaded unit with these properties."""
    show = systemctl("show", "mlxserve.service", "--property=" + systemd.SHOW_PROPERTIES)
    runner.results[tuple(show)] = (0, f"LoadState=loaded\n{properties}\n")


def test_status_down_when_nothing_listens(runner, capsys):
    port = free_port()
    install_on_port(port)
    systemd_says(runner, "ActiveState=failed\nSubState=failed\nMainPID=0")
    capsys.readouterr()
    assert main(["service", "status"]) == commands.NOT_RUNNING
    out = capsys.readouterr().out
    assert f"server:  down at http://127.0.0.1:{port}" in out
    assert "loaded:  yes, state failed (failed)" in out


def test_status_when_not_installed_probes_the_configured_port(runner, capsys, home):
    port = free_port()
    (home / ".config" / "mlxserve").mkdir(parents=True)
    (home / ".config" / "mlxserve" / "config.toml").write_text(f"port = {port}\n")
    runner.platform = "darwin"
    runner.results[tuple(PRINT)] = NOT_LOADED
    assert main(["service", "status"]) == commands.NOT_RUNNING
    out = capsys.readouterr().out
    assert "(not installed)" in out and "loaded:  no" in out
    assert f"down at http://127.0.0.1:{port}" in out


def test_status_names_a_damaged_service_file(runner, capsys):
    path = systemd.unit_path()
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nType=simple\n")
    assert main(["service", "status"]) == 1
    assert f"cannot read the command line in {path}" in capsys.readouterr().err


class NotFound(http.server.BaseHTTPRequestHandler):
    """Another web server: answers 404 to everything."""

    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


class Silent(socketserver.BaseRequestHandler):
    """Not HTTP at all: accepts a connection, then closes it without a byte."""

    def handle(self):
        pass


@pytest.mark.parametrize("handler", [NotFound, Silent])
def test_status_reports_a_different_program_on_the_port(runner, capsys, handler):
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        port = other.server_address[1]
        install_on_port(port)
        capsys.readouterr()
        assert main(["service", "status"]) == commands.NOT_RUNNING
        other.shutdown()
    expected = f"server:  foreign at http://127.0.0.1:{port}: a different program holds the port"
    assert expected in capsys.readouterr().out


def wait_healthy(url, proc, log, timeout=120):
    """Poll /healthz until 200; fail early, with the server's log, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            r = httpx.get(url + "/healthz", timeout=1)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not become ready:\n{log.read_text()}")


def test_the_units_command_starts_the_server_and_status_sees_it_up(runner, capsys, home):
    """Run ExecStart the way systemd would (its Environment=, WorkingDirectory=), then status."""
    assert (DEMO_MODEL_PATH / "model.safetensors").exists(), "run: make test-model"
    port = free_port()
    install_on_port(port, "--served-model-name", "svc-demo", "--drain-timeout", "5")
    service = read_unit(systemd.unit_path().read_text())["Service"]
    argv = systemd.split_command(service["ExecStart"])
    assert argv[0] == executable()[0]
    assert argv[1:] == ["serve", "--model", str(DEMO_MODEL_PATH)] + [
        "--served-model-name", "svc-demo", "--port", str(port), "--drain-timeout", "5.0"
    ]
    # systemd's environment is nearly empty: HOME plus the unit's Environment= (PATH here).
    name, value = service["Environment"].split("=", 1)
    env = {"HOME": str(home), "HF_HUB_OFFLINE": "1", name: value}
    log = Path(service["StandardOutput"].removeprefix("append:"))
    assert service["StandardError"] == service["StandardOutput"]
    with log.open("ab") as out:  # StandardOutput=append: — the folder exists after install
        proc = subprocess.Popen(
            argv, env=env, cwd=service["WorkingDirectory"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        body = wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        assert body["status"] == "ok" and body["model"] == "svc-demo"
        systemd_says(runner, f"ActiveState=active\nSubState=running\nMainPID={proc.pid}")
        capsys.readouterr()
        assert main(["service", "status"]) == 0
        out = capsys.readouterr().out
        assert f"loaded:  yes, pid {proc.pid}, state active (running)" in out
        assert f"server:  up at http://127.0.0.1:{port}: mlxserve " in out and "'svc-demo'" in out
        proc.send_signal(signal.SIGTERM)  # what `systemctl stop` sends: a clean exit, no restart
        assert proc.wait(30) == 0
        assert main(["service", "logs", "-n", "1000"]) == 0  # the server's log, via the CLI
        assert "Uvicorn running on" in capsys.readouterr().out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def systemd_user_works() -> bool:
    """Whether a systemd user manager answers here (it needs a user bus)."""
    if not sys.platform.startswith("linux") or not shutil.which("systemctl"):
        return False
    probe = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not systemd_user_works(), reason="no systemd user manager (systemctl --user)")
def test_real_systemd_user_install():
    """The real thing, in the real HOME: only where no mlxserve unit is installed already."""
    manager = ServiceManager(platform="linux")
    if manager.path.exists():
        pytest.skip(f"{manager.path} exists; not touching a real installation")
    port = free_port()
    manager.install({"model": str(DEMO_MODEL_PATH), "port": port})
    try:
        deadline = time.monotonic() + 120
        while (probe := health.probe("127.0.0.1", port)).state != "up":
            assert time.monotonic() < deadline, f"service not up: {probe}"
            time.sleep(0.5)
        assert manager.status().pid
    finally:
        manager.uninstall()
    assert health.probe("127.0.0.1", port).state == "down"


# --- logs --------------------------------------------------------------------------------------


def test_logs_prints_the_last_lines(runner, capsys):
    path = systemd.log_path()
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    assert main(["service", "logs", "-n", "3"]) == 0
    assert capsys.readouterr().out == "line 7\nline 8\nline 9\n"


def test_logs_without_a_log_file_exits_1(runner, capsys):
    assert main(["service", "logs"]) == 1
    assert "no log file yet" in capsys.readouterr().err


def test_follow_prints_appended_lines(tmp_path):
    path = tmp_path / "mlxserve.log"
    path.write_text("old\n")
    out = io.StringIO()
    offset = logs.tail(path, 0, out)
    thread = threading.Thread(
        target=logs.follow,
        args=(path, offset, out),
        kwargs={"stop": lambda: "new 2\n" in out.getvalue(), "interval": 0.01},
    )
    thread.start()
    with path.open("a") as f:
        f.write("new 1\n")
        f.flush()
        f.write("new 2\n")
    thread.join(10)
    assert out.getvalue() == "new 1\nnew 2\n"

