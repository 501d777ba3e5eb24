"""A tool-using agent on the official openai SDK whose model keeps asking for the same tool call
(the mock's `agent-stuck` model): the tracer should see a loop, and a repeated request (its first
one is sent twice). Usage: stuck_agent.py BASE_URL"""

import json
import os
import subprocess
import sys

from openai import OpenAI

print(json.dumps({"pid": os.getpid()}), flush=True)
client = OpenAI(base_url=sys.argv[1], api_key="sk-test-secret-do-not-export-0123456789", max_retries=0)
tools = [{"type": "function", "function": {
    "name": "run_task", "description": "Runs a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]
messages = [{"role": "user", "content": "Finish the task."}]
# The first request sent twice, identical, as a client retrying a timed-out call does.
client.chat.completions.create(model="agent-stuck", messages=messages, tools=tools)
while True:
    response = client.chat.completions.create(model="agent-stuck", messages=messages, tools=tools)
    message = response.choices[0].message
    if not message.tool_calls:
        break
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        done = subprocess.run(["sh", "-c", json.loads(call.function.arguments)["cmd"]],
                              capture_output=True, text=True)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": done.stdout.strip()})
print(json.dumps({"answer": message.content}), flush=True)
