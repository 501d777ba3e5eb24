"""The unmodified AWS SDK for Python (boto3 `bedrock-runtime`) against a Bedrock endpoint given
by URL, signing with whatever credentials the environment holds (SigV4). Runs each scenario in
order in this one process and prints one JSON line per scenario with its pid and what the
client saw.

usage: bedrock_calls.py ENDPOINT_URL SCENARIO...   (ENDPOINT_URL like https://127.0.0.1:PORT)
"""
import base64
import json
import os
import sys

import boto3
import botocore.config
import botocore.exceptions

endpoint, scenarios = sys.argv[1], sys.argv[2:]
# No retries: a throttled call is one request, one span.
client = boto3.client("bedrock-runtime", endpoint_url=endpoint,
                      config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))

CONVERSE_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
INVOKE_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a place",
                                 "inputSchema": {"json": {"type": "object",
                                                          "properties": {"location": {"type": "string"}}}}}}]}
MESSAGES = [{"role": "user", "content": [{"text": "What's the weather in Paris?"}]}]
SYSTEM = [{"text": "You are a weather bot."}]
INFERENCE = {"maxTokens": 512, "temperature": 0.5, "topP": 0.9, "stopSequences": ["\n\nHuman:"]}
ANTHROPIC_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256, "temperature": 0.7,
                  "messages": [{"role": "user", "content": "Say hello."}]}


def converse_stream(model):
    text, tools, stop, usage = "", [], None, None
    response = client.converse_stream(modelId=model, messages=MESSAGES, system=SYSTEM,
                                      inferenceConfig=INFERENCE, toolConfig=TOOLS)
    for event in response["stream"]:
        if "contentBlockStart" in event and "toolUse" in event["contentBlockStart"]["start"]:
            tools.append(dict(event["contentBlockStart"]["start"]["toolUse"], input=""))
        elif "contentBlockDelta" in event:
            delta = event["contentBlockDelta"]["delta"]
            text += delta.get("text", "")
            if "toolUse" in delta:
                tools[-1]["input"] += delta["toolUse"]["input"]
        elif "messageStop" in event:
            stop = event["messageStop"]["stopReason"]
        elif "metadata" in event:
            usage = event["metadata"]["usage"]
    return {"text": text, "tool_uses": tools, "stop_reason": stop, "usage": usage}


for scenario in scenarios:
    out = {"pid": os.getpid(), "scenario": scenario}
    if scenario == "converse":
        r = client.converse(modelId=CONVERSE_MODEL, messages=MESSAGES, system=SYSTEM,
                            inferenceConfig=INFERENCE, toolConfig=TOOLS)
        out["stop_reason"] = r["stopReason"]
        out["tool_uses"] = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b]
        out["usage"] = r["usage"]
    elif scenario == "converse_stream":
        out.update(converse_stream(CONVERSE_MODEL))
    elif scenario == "converse_stream_exception":
        try:
            converse_stream("us.anthropic.stream-exception-v1:0")
        except botocore.exceptions.EventStreamError as e:
            out["error"] = e.response["Error"]["Code"]
    elif scenario == "invoke_model":
        r = client.invoke_model(modelId=INVOKE_MODEL, body=json.dumps(ANTHROPIC_BODY),
                                contentType="application/json", accept="application/json")
        body = json.loads(r["body"].read())
        out["id"] = body["id"]
        out["text"] = body["content"][0]["text"]
    elif scenario == "invoke_model_stream":
        r = client.invoke_model_with_response_stream(modelId=INVOKE_MODEL, body=json.dumps(ANTHROPIC_BODY))
        events = [json.loads(e["chunk"]["bytes"]) for e in r["body"] if "chunk" in e]
        out["types"] = [e["type"] for e in events]
        out["tool_input"] = "".join(e["delta"].get("partial_json", "") for e in events
                                    if e["type"] == "content_block_delta")
    elif scenario == "converse_throttled":
        try:
            client.converse(modelId="us.anthropic.throttled-v1:0", messages=MESSAGES)
        except client.exceptions.ThrottlingException as e:
            out["error"] = e.response["Error"]["Code"]
            out["status"] = e.response["ResponseMetadata"]["HTTPStatusCode"]
    else:
        sys.exit(f"unknown scenario {scenario}")
    print(json.dumps(out), flush=True)
