"""``mlxserve integrate mcp-cli [--write]``: point mcp-cli at a running server.

mcp-cli sends its LLM traffic through chuk-llm, which reads its providers from one
YAML file: ``$CHUK_LLM_CONFIG`` if set, else ``~/.chuk_llm/config.yaml``, else the
list packaged with chuk-llm. The first file found *replaces* the packaged list, so
writing a new file starts from that packaged list and an existing file keeps its
entries (and is backed up first).
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import yaml

PROVIDER = "mlxserve"
# The env var chuk-llm reads the key from: the server's own, so one export serves both.
KEY_ENV = "MLXSERVE_API_KEY"
# chuk-llm's OpenAI client, the one its packaged openai-compatible providers use.
CLIENT_CLASS = "chuk_llm.llm.providers.openai_client:OpenAILLMClient"
# The OpenAI client insists on some key; a server without one ignores it.
NO_KEY = "not-needed"


class IntegrateError(Exception):
    """Something the user has to fix; the message says what."""


def add_integrate_command(commands, default_url: str) -> None:
    integrate = commands.add_parser(
        "integrate", help="Point a client at the running server (mcp-cli)."
    )
    integrate.add_argument("client", choices=["mcp-cli"], help="The client to configure")
    integrate.add_argument(
        "--write",
        action="store_true",
        help="Merge the provider into the client's config file (backed up first) "
        "instead of printing it",
    )
    integrate.add_argument(
        "--url", default=default_url, help=f"The running server (default {default_url})"
    )


def run(args) -> int:
    url = args.url.rstrip("/")
    try:
        model, key_required = server_facts(url)
        entry = provider_entry(url, model, key_required)
        if args.write:
            path, backup, seeded = write_config(config_path(), entry)
            print(f"mlxserve: wrote provider '{PROVIDER}' to {path}")
            if backup:
                print(f"mlxserve: the previous file is at {backup}")
            if seeded is not None:
                print(f"mlxserve: started from chuk-llm's packaged providers ({seeded})")
        else:
            print(f"# Add to {config_path()} (or run: mlxserve integrate mcp-cli --write)")
            print(yaml.safe_dump({PROVIDER: entry}, sort_keys=False), end="")
    except IntegrateError as exc:
        print(f"mlxserve: {exc}", file=sys.stderr)
        return 1
    print()
    if key_required:
        print(f"export {KEY_ENV}=<your key>   # the server's API key; mcp-cli reads it from here")
    print(f"mcp-cli chat --provider {PROVIDER} --model {model} --server <your MCP server>")
    return 0


def server_facts(url: str) -> tuple[str, bool]:
    """The running server's model, and whether it wants an API key.

    ``/healthz`` is open even with a key; ``/v1/models`` answers 401 without one.
    """
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            health = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise IntegrateError(f"{url}/healthz answered {exc.code}: is the model still loading?")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise IntegrateError(f"no mlxserve at {url} ({exc}); start it with `mlxserve serve`")
    try:
        urllib.request.urlopen(url + "/v1/models", timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise IntegrateError(f"{url}/v1/models answered {exc.code}")
        return health["model"], True
    return health["model"], False


def provider_entry(url: str, model: str, key_required: bool) -> dict:
    """A chuk-llm provider for the server: never the key itself, only its env var."""
    entry = {
        "client_class": CLIENT_CLASS,
        "api_base": url + "/v1",
        "default_model": model,
        "models": ["*"],
    }
    if key_required:
        entry["api_key_env"] = KEY_ENV
    else:
        entry["extra"] = {"api_key": NO_KEY}
    return entry


def config_path() -> Path:
    """The file chuk-llm reads its providers from (for mcp-cli run from your home)."""
    env = os.environ.get("CHUK_LLM_CONFIG")
    return Path(env) if env else Path.home() / ".chuk_llm" / "config.yaml"


def write_config(path: Path, entry: dict) -> tuple[Path, Optional[Path], Optional[Path]]:
    """Set the ``mlxserve`` provider in ``path``, keeping every other entry.

    Returns (path, the backup of the old file or None, the packaged provider list
    a new file started from or None).
    """
    backup, seeded = None, None
    if path.exists():
        config = _read_yaml(path)
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
    else:
        seeded = packaged_providers()
        config = _read_yaml(seeded)
    config[PROVIDER] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, backup, seeded


def _read_yaml(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise IntegrateError(f"{path} is not valid YAML, left as it is: {exc}")
    if not isinstance(config, dict):
        raise IntegrateError(f"{path} is not a mapping of providers, left as it is")
    return config


def packaged_providers() -> Path:
    """chuk-llm's packaged provider file, from the Python that runs ``mcp-cli``."""
    script = shutil.which("mcp-cli")
    if script is None:
        raise IntegrateError(
            "mcp-cli is not on PATH. Install it first (e.g. `uv tool install mcp-cli`): a new "
            "config file replaces chuk-llm's packaged providers, so it starts from them."
        )
    with open(script, "rb") as f:
        first = f.readline().decode(errors="replace")
    python = first[2:].strip() if first.startswith("#!") else sys.executable
    found = subprocess.run(
        [python, "-c", "import chuk_llm, pathlib; print(pathlib.Path(chuk_llm.__file__))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    path = Path(found.stdout.strip()).with_name("chuk_llm.yaml")
    if found.returncode != 0 or not path.is_file():
        raise IntegrateError(f"cannot find chuk-llm's packaged providers beside {script}")
    return path
