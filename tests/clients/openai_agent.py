"""A minimal tool-using agent on the official openai SDK: it loops until the model stops asking
for tools. Its one tool runs a shell command (subprocess) and calls a local JSON API over plain
HTTP. Usage: openai_agent.py OPENAI_BASE_URL TOOL_API_BASE_URL [SUB_AGENT_BASE_URL]: with a third
argument the tool also runs anthropic_agent.py against it, an agent launching an agent."""

import json
import os
import subprocess
import sys
import urllib.request

from openai import OpenAI

print(json.dumps({"pid": os.getpid()}), flush=True)
client = OpenAI(base_url=sys.argv[1], api_key="sk-test-secret-do-not-export-0123456789", max_retries=0)
tool_api = sys.argv[2]
tools = [{"type": "function", "function": {
    "name": "run_task", "description": "Runs a shell command and looks up its result",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]
messages = [{"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": "Run the task and report."}]
steps = []
while True:
    response = client.chat.completions.create(model="agent-loop", messages=messages, tools=tools)
    message = response.choices[0].message
    if not message.tool_calls:
        break
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        args = json.loads(call.function.arguments)
        done = subprocess.run(["sh", "-c", args["cmd"]], capture_output=True, text=True)
        with urllib.request.urlopen(tool_api + "/tool/lookup") as r:
            looked_up = json.loads(r.read())
        result = f"exit {done.returncode}: {done.stdout.strip()} value {looked_up['value']}"
        if len(sys.argv) > 3:
            sub = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "anthropic_agent.py"),
                                  sys.argv[3]], capture_output=True, text=True, check=True)
            result += " sub-agent: " + json.loads(sub.stdout.splitlines()[-1])["answer"]
        steps.append({"tool_call_id": call.id, "sh_pid_exit": done.returncode})
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
print(json.dumps({"answer": message.content, "steps": steps}), flush=True)
