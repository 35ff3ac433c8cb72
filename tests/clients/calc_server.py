"""A tiny MCP server over stdio with the tools the test model was trained to call.

mcp-cli starts it as a subprocess (see tests/test_mcp_cli.py); it runs in mcp-cli's
own virtual environment, where the ``mcp`` package is installed.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def get_time() -> str:
    """Get the current time."""
    return "12:00"


if __name__ == "__main__":
    server.run("stdio")
