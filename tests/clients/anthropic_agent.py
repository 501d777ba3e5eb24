"""A minimal tool-using agent on the official anthropic SDK: its one tool runs a shell command,
and a failing command is sent back as a tool_result with is_error. Usage:
anthropic_agent.py ANTHROPIC_BASE_URL"""

import json
import os
import subprocess
import sys

import anthropic

print(json.dumps({"pid": os.getpid()}), flush=True)
client = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-ant-test-secret-do-not-export", max_retries=0)
tools = [{"name": "run_task", "description": "Runs a shell command",
          "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}]
messages = [{"role": "user", "content": "Run the task and report."}]
while True:
    response = client.messages.create(model="agent-loop", max_tokens=256, system="You are careful.",
                                      tools=tools, messages=messages)
    uses = [b for b in response.content if b.type == "tool_use"]
    if not uses:
        break
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]})
    results = []
    for use in uses:
        done = subprocess.run(["sh", "-c", use.input["cmd"]], capture_output=True, text=True)
        results.append({"type": "tool_result", "tool_use_id": use.id, "is_error": done.returncode != 0,
                        "content": f"exit {done.returncode}: {done.stdout.strip()}"})
    messages.append({"role": "user", "content": results})
print(json.dumps({"answer": response.content[0].text}), flush=True)
