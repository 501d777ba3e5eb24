"""An unmodified openai-SDK client making one plain chat call per model name given, in order, on
one keep-alive connection, so every call is identifiable in the exported spans by its model.
Prints its pid first, then one JSON line per call.

usage: openai_models.py BASE_URL MODEL...
"""
import json
import os
import sys

import openai

API_KEY = "sk-test-secret-do-not-export-0123456789"

base_url, models = sys.argv[1], sys.argv[2:]
client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
print(json.dumps({"pid": os.getpid()}), flush=True)

for model in models:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"model": model, "id": r.id}), flush=True)
