"""The Responses API over a WebSocket, as Codex CLI speaks it, with the real `websockets`
library (permessage-deflate on, its default).
usage: ws_responses.py server PORT   -- a mock streaming response.* events
       ws_responses.py client URL    -- sends response.create, reads until response.completed
"""
import json
import os
import sys
import time

mode, arg = sys.argv[1], sys.argv[2]

if mode == "server":
    from websockets.sync.server import serve

    def handler(ws):
        for message in ws:
            request = json.loads(message)
            if request.get("type") != "response.create":
                continue
            model = request.get("model", "gpt-5.4")
            item = {"type": "function_call", "id": "fc_ws", "call_id": "call_ws_1", "name": "shell",
                    "arguments": "{\"command\":[\"ls\"]}", "status": "completed"}
            events = [
                {"type": "response.created", "response": {"id": "resp_ws_1", "model": model, "status": "in_progress"}},
                {"type": "response.output_item.added", "output_index": 0, "item": dict(item, arguments="", status="in_progress")},
                {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": item["arguments"]},
                {"type": "response.output_item.done", "output_index": 0, "item": item},
                {"type": "response.completed", "response": {"id": "resp_ws_1", "model": model + "-2026", "status": "completed",
                    "output": [item], "usage": {"input_tokens": 321, "output_tokens": 45,
                                                "input_tokens_details": {"cached_tokens": 300}}}},
            ]
            for i, event in enumerate(events):
                event["sequence_number"] = i
                ws.send(json.dumps(event))
                time.sleep(0.03)

    with serve(handler, "127.0.0.1", int(arg)) as server:
        server.serve_forever()
else:
    from websockets.sync.client import connect

    with connect(arg, additional_headers={"Authorization": "Bearer sk-ws-secret-77"}) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "gpt-5.4", "instructions": "You are Codex.",
                            "input": [{"role": "user", "content": "list files"}],
                            "tools": [{"type": "function", "name": "shell"}]}))
        calls = []
        while True:
            event = json.loads(ws.recv())
            if event["type"] == "response.completed":
                calls = [o["call_id"] for o in event["response"]["output"]]
                break
    print(json.dumps({"pid": os.getpid(), "calls": calls}), flush=True)
