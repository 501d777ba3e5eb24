"""A real MCP server (the official `mcp` SDK) over Streamable HTTP on 127.0.0.1.
usage: server.py PORT"""
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


server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
