"""The official `mcp` client SDK: initialize, list tools, call two tools (one fails), over
Streamable HTTP or over stdio with the server (server.py) as its own child process.
Prints one JSON line with its pid and what it saw.
usage: client.py URL | client.py --stdio"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


async def session_calls(read, write, out):
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        out["protocol_version"] = init.protocol_version
        tools = await session.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        ok = await session.call_tool("get_weather", {"city": "Paris"})
        out["weather"] = ok.content[0].text
        failed = await session.call_tool("fail_always", {"reason": "testing"})
        out["failed_is_error"] = failed.is_error
        out["failed_text"] = failed.content[0].text


async def main(target):
    out = {"pid": os.getpid()}
    if target == "--stdio":
        server = StdioServerParameters(
            command=sys.executable,
            args=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py"), "stdio"],
        )
        async with stdio_client(server) as (read, write):
            await session_calls(read, write, out)
    else:
        async with streamable_http_client(target) as streams:
            await session_calls(streams[0], streams[1], out)
    print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1]))
