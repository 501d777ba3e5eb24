"""A tool-using agent on the official openai SDK that, like careless real ones, takes its
credentials on its command line and hands them to its tool's shell. Usage:
secret_args_agent.py OPENAI_BASE_URL TOOL_API_BASE_URL API_KEY GEMINI_URL SETTINGS_JSON CURL_SECRETS_JSON

API_KEY is positional; GEMINI_URL carries a key in its query (not called: it only sits on the
command line); SETTINGS_JSON holds an api_key member. The tool runs, in a multi-line bash script,
the model's command piped through tee (a grandchild that ends before its bash) and a real curl
to the tool API with a user:password, an Authorization header and a key in the URL's query."""

import json
import os
import subprocess
import sys
import tempfile

from openai import OpenAI

print(json.dumps({"pid": os.getpid()}), flush=True)
base_url, tool_api, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
curl = json.loads(sys.argv[6])
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
tools = [{"type": "function", "function": {
    "name": "run_task", "description": "Runs a shell command and looks up its result",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]
messages = [{"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": "Run the task and report."}]
log = os.path.join(tempfile.mkdtemp(), "task.log")
steps = []
while True:
    response = client.chat.completions.create(model="agent-loop", messages=messages, tools=tools)
    message = response.choices[0].message
    if not message.tool_calls:
        break
    messages.append(message.model_dump(exclude_none=True))
    for call in message.tool_calls:
        args = json.loads(call.function.arguments)
        # The trailing echo keeps bash from exec'ing curl in its own place.
        script = "\n".join([
            f"({args['cmd']}) | tee {log}",
            f"curl -s -u 'alice:{curl['password']}' -H 'Authorization: Bearer {curl['token']}' "
            f"'{tool_api}/tool/lookup?alt=sse&key={curl['key']}'",
            "echo",
        ])
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        result = f"exit {done.returncode}: {lines[0]} value {json.loads(lines[1])['value']}"
        steps.append({"tool_call_id": call.id, "bash_exit": done.returncode, "stdout": lines})
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
print(json.dumps({"answer": message.content, "steps": steps}), flush=True)
# Stays until the test closes stdin: a quick agent may be gone before a loaded tracer reads it.
sys.stdin.read()
