"""An unmodified client of the official openai SDK making the calls whose streams the SDK stops
reading at the protocol's own end (`[DONE]`, `response.completed`) and then closes, as the SDK
and the agents built on it always do. Prints one JSON line per call with what the SDK saw.

usage: openai_streams.py BASE_URL SCENARIO...
scenarios: plain chat_stream responses_stream cut_chat_stream cut_responses_stream
"""
import json
import os
import sys

import openai

API_KEY = "sk-test-streams-secret-do-not-export-5678"

base_url, scenarios = sys.argv[1], sys.argv[2:]
client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
print(json.dumps({"pid": os.getpid()}), flush=True)


def say(**fields):
    print(json.dumps(fields), flush=True)


def chat_stream(model):
    """A streamed chat completion with usage; the SDK breaks at `[DONE]` and closes."""
    result = {"id": None, "model": None, "usage": None, "finish": None}
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        result["id"] = chunk.id
        result["model"] = chunk.model
        for choice in chunk.choices:
            result["finish"] = choice.finish_reason or result["finish"]
        if chunk.usage is not None:
            result["usage"] = {
                "input": chunk.usage.prompt_tokens,
                "output": chunk.usage.completion_tokens,
                "cached": chunk.usage.prompt_tokens_details.cached_tokens,
            }
    return result


def responses_stream(model):
    """A streamed Responses call read as agents read it: up to `response.completed`, then the
    stream is closed."""
    result = {"id": None, "model": None, "usage": None, "status": None}
    with client.responses.create(model=model, input="Weather in Boston?", stream=True) as events:
        for event in events:
            if event.type == "response.created":
                result["id"] = event.response.id
            if event.type == "response.completed":
                r = event.response
                result.update(id=r.id, model=r.model, status=r.status, usage={
                    "input": r.usage.input_tokens,
                    "output": r.usage.output_tokens,
                    "cached": r.usage.input_tokens_details.cached_tokens,
                })
                break
    return result


for scenario in scenarios:
    if scenario == "plain":
        r = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello."}],
        )
        say(scenario=scenario, id=r.id, model=r.model, usage={
            "input": r.usage.prompt_tokens,
            "output": r.usage.completion_tokens,
            "cached": r.usage.prompt_tokens_details.cached_tokens,
        })
    elif scenario == "chat_stream":
        say(scenario=scenario, **chat_stream("gpt-4o-mini"))
    elif scenario == "responses_stream":
        say(scenario=scenario, **responses_stream("gpt-5.4"))
    elif scenario in ("cut_chat_stream", "cut_responses_stream"):
        # The mock drops the connection before the stream's terminal event.
        try:
            if scenario == "cut_chat_stream":
                chat_stream("cut-stream")
            else:
                responses_stream("cut-stream")
            say(scenario=scenario, error=None)
        except openai.APIConnectionError as e:
            say(scenario=scenario, error=type(e).__name__)
    else:
        sys.exit(f"unknown scenario {scenario}")
