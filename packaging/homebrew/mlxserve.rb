# Homebrew formula for mlxserve, in the style of homebrew-core's Python applications (mlx-lm).
#
# Install from this checkout and run it as a launchd agent:
#
#   HOMEBREW_DEVELOPER=1 brew install --build-from-source packaging/homebrew/mlxserve.rb
#   brew services start mlxserve
#
# Homebrew 4.6.4 and later read a formula given as a file path only when HOMEBREW_DEVELOPER
# is set. Before the first install, generate the `resource` blocks (one per PyPI dependency,
# pinned by URL and sha256) from the `pypi_packages` list below:
#
#   HOMEBREW_DEVELOPER=1 brew update-python-resources packaging/homebrew/mlxserve.rb
#
# They are not written here because they cannot be resolved offline, and a stale hand-written
# list would be worse than none: without them the install stops at the first missing import.
class Mlxserve < Formula
  include Language::Python::Virtualenv

  desc "Local OpenAI-compatible LLM server for Apple Silicon, built on MLX"
  # Nothing is published yet, so the source is the committed HEAD of the checkout holding this
  # file; `homepage` and a release tarball `url` + `sha256` replace these lines on release.
  url "file://#{File.expand_path("../..", __dir__)}", using: :git
  version "0.1.0"
  license "MIT"

  depends_on "pkgconf" => :build
  # pydantic-core, tokenizers, safetensors and hf-xet build from source with Rust.
  depends_on "rust" => :build
  depends_on arch: :arm64
  depends_on "certifi" => :no_linkage
  depends_on "libyaml"
  depends_on :macos
  # Homebrew's Metal build of MLX, with Python bindings for exactly one Python: the venv must
  # use that same Python (python@3.14 today, as in homebrew-core's mlx-lm), not python@3.12.
  depends_on "mlx"
  depends_on "numpy"
  depends_on "protobuf"
  depends_on "python@3.14"
  depends_on "sentencepiece"

  # mlxserve's runtime dependencies from pyproject.toml (keep the two lists in step); mlx and
  # numpy come from the formulae above instead of PyPI.
  pypi_packages package_name:     "",
                extra_packages:   %w[mlx-lm fastapi uvicorn uvloop httptools pydantic
                                     pydantic-settings huggingface-hub sse-starlette jsonschema
                                     llguidance pyyaml prometheus-client],
                exclude_packages: %w[certifi mlx numpy]

  def install
    virtualenv_install_with_resources
  end

  # `brew services start mlxserve` writes ~/Library/LaunchAgents/homebrew.mxcl.mlxserve.plist;
  # `mlxserve service install` writes the same shape of plist under its own label.
  service do
    run [opt_bin/"mlxserve", "serve"]
    # Homebrew's usual keep_alive: launchd restarts it after any exit. (The plist of
    # `mlxserve service install` restarts it only after a crash: KeepAlive {SuccessfulExit:
    # false}; `brew services stop` unloads the agent, so either stops it for good.)
    keep_alive true
    working_dir var
    log_path var/"log/mlxserve.log"
    error_log_path var/"log/mlxserve.log"
    environment_variables PATH: std_service_path_env
    process_type :interactive
  end

  test do
    port = free_port
    pid = spawn bin/"mlxserve", "demo", "--port", port.to_s
    begin
      # The bundled demo model loads in seconds; poll /healthz instead of sleeping blindly.
      health = ""
      60.times do
        health = shell_output("curl -s http://127.0.0.1:#{port}/healthz", nil)
        break if health.include?('"status":"ok"')

        sleep 1
      end
      assert_equal "ok", JSON.parse(health)["status"]
      assert_equal version.to_s, JSON.parse(health)["version"]
    ensure
      Process.kill "TERM", pid
      Process.wait pid
    end
  end
end
