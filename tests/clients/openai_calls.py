"""An unmodified agent-style client: the official openai SDK, one client (one keep-alive
connection), making the calls the end-to-end test asserts on. Prints one JSON line per call
with what the SDK saw, so the test can compare the tracer's spans with the client's truth.

usage: openai_calls.py BASE_URL SCENARIO...   (scenarios: plain stream rate_limited big content)
"""
import json
import os
import sys

import openai

API_KEY = "sk-test-secret-do-not-export-0123456789"
BIG_CONTENT_BYTES = (1 << 20) + 4321

base_url, scenarios = sys.argv[1], sys.argv[2:]
client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
print(json.dumps({"pid": os.getpid()}), flush=True)

for scenario in scenarios:
    if scenario == "plain":
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello."}],
            temperature=0.2,
            max_completion_tokens=64,
        )
        print(json.dumps({"scenario": scenario, "id": r.id, "content": r.choices[0].message.content}), flush=True)
    elif scenario == "stream":
        tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        calls = {}
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        ):
            for choice in chunk.choices:
                for tc in choice.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    entry["id"] = tc.id or entry["id"]
                    entry["name"] += (tc.function.name or "") if tc.function else ""
                    entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
        print(json.dumps({"scenario": scenario, "tool_calls": list(calls.values())}), flush=True)
    elif scenario == "rate_limited":
        try:
            client.chat.completions.create(model="rate-limited", messages=[{"role": "user", "content": "hi"}])
            print(json.dumps({"scenario": scenario, "error": None}), flush=True)
        except openai.RateLimitError as e:
            print(json.dumps({"scenario": scenario, "status": e.status_code}), flush=True)
    elif scenario == "big":
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x" * BIG_CONTENT_BYTES}],
        )
        print(json.dumps({"scenario": scenario, "id": r.id}), flush=True)
    elif scenario == "content":
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello. " + "padding " * 200},
            ],
        )
        print(json.dumps({"scenario": scenario, "content": r.choices[0].message.content}), flush=True)
    elif scenario == "hang":
        # The process is killed by the test while this call waits for its answer.
        print(json.dumps({"scenario": scenario, "waiting": True}), flush=True)
        client.chat.completions.create(model="hang", messages=[{"role": "user", "content": "hi"}], timeout=600)
    else:
        sys.exit(f"unknown scenario {scenario}")
