"""The official `mcp` client SDK over Streamable HTTP: initialize, list tools, call two tools.
Prints one JSON line with its pid and what it saw.
usage: client.py URL"""
import asyncio
import json
import os
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url):
    out = {"pid": os.getpid()}
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["protocol_version"] = init.protocol_version
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            ok = await session.call_tool("get_weather", {"city": "Paris"})
            out["weather"] = ok.content[0].text
            failed = await session.call_tool("fail_always", {"reason": "testing"})
            out["failed_is_error"] = failed.is_error
    print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1]))
