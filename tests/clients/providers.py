"""Unmodified clients of the other model APIs: the official anthropic SDK, the openai SDK's
Responses API, and Gemini and Ollama over the standard library. One scenario per run; prints
one JSON line with its pid and what the client saw.

usage: providers.py SCENARIO ORIGIN   (ORIGIN like https://127.0.0.1:PORT)
"""
import json
import os
import ssl
import sys
import urllib.request

scenario, origin = sys.argv[1], sys.argv[2]
out = {"pid": os.getpid(), "scenario": scenario}
TOOLS_ANTHROPIC = [{"name": "get_weather", "description": "Weather for a place",
                    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]

if scenario == "anthropic_stream":
    import anthropic
    client = anthropic.Anthropic(base_url=origin, api_key="sk-ant-test-secret-0042", max_retries=0)
    tool_uses = []
    with client.messages.stream(model="claude-sonnet-4-20250514", max_tokens=1024, tools=TOOLS_ANTHROPIC,
                                system="You are a weather bot.",
                                messages=[{"role": "user", "content": "What's the weather in Paris?"}]) as stream:
        message = stream.get_final_message()
    out["tool_uses"] = [{"id": b.id, "name": b.name, "input": b.input} for b in message.content if b.type == "tool_use"]
    out["stop_reason"] = message.stop_reason
elif scenario == "anthropic_overloaded":
    import anthropic
    client = anthropic.Anthropic(base_url=origin, api_key="sk-ant-test-secret-0042", max_retries=0)
    try:
        client.messages.create(model="overloaded", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    except anthropic.APIStatusError as e:
        out["status"] = e.status_code
elif scenario == "responses_stream":
    import openai
    client = openai.OpenAI(base_url=origin + "/v1", api_key="sk-test-secret-responses", max_retries=0)
    tools = [{"type": "function", "name": "get_current_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]
    calls = []
    for event in client.responses.create(model="gpt-5.4", instructions="You are a helpful assistant.",
                                         input="What is the weather like in Boston today?", tools=tools, stream=True):
        if event.type == "response.completed":
            calls = [{"call_id": o.call_id, "name": o.name, "arguments": o.arguments}
                     for o in event.response.output if o.type == "function_call"]
    out["function_calls"] = calls
elif scenario in ("gemini_stream", "ollama_chat"):
    if scenario == "gemini_stream":
        url = origin + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
                "generationConfig": {"temperature": 0.2, "maxOutputTokens": 256}}
        headers = {"content-type": "application/json", "x-goog-api-key": "AIza-test-secret-gemini"}
    else:
        url = origin + "/api/chat"
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "Weather?"}], "options": {"num_predict": 64}}
        headers = {"content-type": "application/json"}
    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE")) if origin.startswith("https") else None
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, context=context) as response:
        out["status"] = response.status
        out["body"] = response.read().decode()
else:
    sys.exit(f"unknown scenario {scenario}")
print(json.dumps(out), flush=True)
