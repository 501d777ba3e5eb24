"""A real MCP server (the official `mcp` SDK): Streamable HTTP on 127.0.0.1, or stdio.
usage: server.py PORT | server.py stdio"""
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather-tools")


@server.tool()
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It is sunny in {city}."


@server.tool()
def fail_always(reason: str) -> str:
    """A tool that fails."""
    raise ValueError(f"refused: {reason}")


if sys.argv[1] == "stdio":
    # stdout is the wire: who we are goes to stderr, which the client passes through.
    print(f"mcp stdio server pid {os.getpid()}", file=sys.stderr, flush=True)
    server.run(transport="stdio")
else:
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
