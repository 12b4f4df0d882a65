#!/usr/bin/env python3
"""Generate keygate's shipped price table from a LiteLLM-style price map.

Usage:
    python3 tools/gen_prices.py /work/shared/data/model-prices.json \
        [-o crates/keygate-types/data/prices.json] [--as-of YYYY-MM-DD]

Reads a map of model name -> {input_cost_per_token, output_cost_per_token,
cache_read_input_token_cost, litellm_provider, max_input_tokens, max_output_tokens, mode, ...}
and writes keygate's table: models keyed `<hub>/<model>` with prices in USD per million
tokens as exact decimal strings. Standard library only; the output is deterministic for a
given input and date, one model per line, so a regeneration diffs cleanly.

`pricesAsOf` is `--as-of` when given, else the UTC date on which the input file was last
written (when the data was taken). `source` names the upstream package and version when a
README.md beside the input says which (as /work/shared/data/README.md does).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
from decimal import Decimal

# litellm_provider -> keygate hub. Providers not listed here are not served by keygate
# (or not by a hub of the same pricing) and are skipped.
HUB_OF_PROVIDER = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",  # Azure OpenAI. `azure_ai` (AI Foundry serverless) is another product.
    "anthropic": "anthropic",
    "vertex_ai-language-models": "vertex",
    "vertex_ai": "vertex",
    "vertex_ai-anthropic_models": "vertex",
    "together_ai": "together",
    "mistral": "mistral",
    "fireworks_ai": "fireworks",
    "nvidia_nim": "nvidia",
    "openrouter": "openrouter",
    "gradient_ai": "digitalocean",  # DigitalOcean Gradient serverless inference
    "digitalocean": "digitalocean",
    "bedrock": "bedrock",
    "bedrock_converse": "bedrock",
}

# Prefixes the data puts in front of a hub's own model id; stripped (longest first).
PREFIXES = {
    "openai": ["openai/"],
    "azure": ["azure/"],
    "anthropic": ["anthropic/"],
    "vertex": ["vertex_ai/"],
    "together": ["together_ai/"],
    "mistral": ["mistral/"],
    "fireworks": ["fireworks_ai/"],
    "nvidia": ["nvidia_nim/"],
    "openrouter": ["openrouter/"],
    "digitalocean": ["gradient_ai/", "digitalocean/"],
    # `invoke/` and `converse/` pick LiteLLM's Bedrock route, not a Bedrock model id.
    # Region folders (`bedrock/us-east-1/...`) are kept: regional prices differ.
    "bedrock": ["bedrock/invoke/", "bedrock/converse/", "bedrock/"],
}

# Providers whose un-prefixed keys are pricing buckets (by parameter count), not model ids.
BUCKET_PROVIDERS = {"together_ai": "together_ai/", "fireworks_ai": "fireworks_ai/"}

FIREWORKS_ACCOUNT = "accounts/fireworks/models/"

MODES = ("chat", "completion", "embedding")
U32_MAX = 2**32 - 1


def per_million(x) -> str:
    """USD per token (a JSON number) -> exact decimal USD per million tokens, no exponent."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"not a number: {x!r}")
    d = Decimal(repr(x)) * 1_000_000
    if d < 0 or not d.is_finite():
        raise ValueError(f"bad price: {x!r}")
    d = d.normalize()
    if d == 0:
        return "0"
    # keygate holds prices as integer nano-USD per million tokens: refuse anything finer.
    if d.as_tuple().exponent < -9:
        raise ValueError(f"price {x!r} is finer than one nano-USD per million tokens")
    return format(d, "f")


def token_cap(x):
    if isinstance(x, bool) or not isinstance(x, int) or x <= 0:
        return None
    return min(x, U32_MAX)


def model_id(hub: str, provider: str, key: str) -> str:
    for p in PREFIXES.get(hub, []):
        if key.startswith(p):
            key = key[len(p):]
            break
    if hub == "fireworks" and not key.startswith("accounts/"):
        # Fireworks' API names its serverless models accounts/fireworks/models/<id>;
        # the data sometimes gives the short form.
        key = FIREWORKS_ACCOUNT + key
    return key


def read_source(input_path: str) -> str:
    readme = os.path.join(os.path.dirname(os.path.abspath(input_path)), "README.md")
    text = ""
    try:
        with open(readme, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        pass
    m = re.search(r"`?litellm`? package on PyPI, version ([0-9][0-9A-Za-z.\-]*[0-9A-Za-z])", text)
    if m:
        return (
            f"LiteLLM {m.group(1)} (PyPI), model_prices_and_context_window_backup.json, "
            "MIT licence; per-token prices converted to USD per million tokens"
        )
    return f"{os.path.basename(input_path)} (LiteLLM-style price map)"


def convert(data: dict):
    models: dict[str, dict] = {}
    origin: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}

    def skip(reason: str, key: str):
        skipped.setdefault(reason, []).append(key)

    for key in sorted(data):
        v = data[key]
        if not isinstance(v, dict):
            skip("not an object", key)
            continue
        provider = v.get("litellm_provider")
        hub = HUB_OF_PROVIDER.get(provider)
        if hub is None:
            skip(f"provider {provider!r} is not a keygate hub", key)
            continue
        bucket_prefix = BUCKET_PROVIDERS.get(provider)
        if bucket_prefix and not key.startswith(bucket_prefix):
            skip(f"{provider} size-bucket price, not a model id", key)
            continue
        mode = v.get("mode")
        if mode not in MODES:
            skip(f"mode {mode!r}", key)
            continue
        inp = v.get("input_cost_per_token")
        out = v.get("output_cost_per_token")
        if out is None and mode == "embedding":
            out = 0  # embeddings produce no output tokens
        if inp is None or out is None:
            skip("no input or output price", key)
            continue
        entry = {"input": per_million(inp), "output": per_million(out)}
        cached = v.get("cache_read_input_token_cost")
        if cached is not None:
            entry["cachedInput"] = per_million(cached)
        entry["maxOutputTokens"] = token_cap(v.get("max_output_tokens"))
        entry["maxInputTokens"] = token_cap(v.get("max_input_tokens"))
        entry["mode"] = mode

        name = f"{hub}/{model_id(hub, provider, key)}"
        if name in models:
            if models[name] != entry:
                # Keep the entry whose key spells the id in full (the most specific one);
                # between equals, the first in sorted order.
                prev = origin[name]
                if len(key) > len(prev):
                    skip(f"duplicate of {name}, kept {key}", prev)
                    models[name], origin[name] = entry, key
                else:
                    skip(f"duplicate of {name}, kept {prev}", key)
            continue
        models[name] = entry
        origin[name] = key
    return models, skipped


def render(doc_head: dict, models: dict) -> str:
    lines = ["{"]
    for k, val in doc_head.items():
        lines.append(f"{json.dumps(k)}: {json.dumps(val, ensure_ascii=False)},")
    lines.append('"models": {')
    names = sorted(models)
    for i, name in enumerate(names):
        comma = "," if i + 1 < len(names) else ""
        body = json.dumps(models[name], separators=(", ", ": "), ensure_ascii=False)
        lines.append(f"{json.dumps(name, ensure_ascii=False)}: {body}{comma}")
    lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "crates", "keygate-types", "data", "prices.json")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="LiteLLM-style model price JSON")
    ap.add_argument("-o", "--output", default=default_out)
    ap.add_argument("--as-of", help="date the prices were taken (YYYY-MM-DD)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every skipped key")
    args = ap.parse_args(argv)

    with open(args.input, encoding="utf-8") as f:
        data = json.load(f)
    if args.as_of:
        as_of = _dt.date.fromisoformat(args.as_of).isoformat()
    else:
        mtime = os.stat(args.input).st_mtime
        as_of = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).date().isoformat()

    models, skipped = convert(data)
    head = {"pricesAsOf": as_of, "source": read_source(args.input)}
    text = render(head, models)
    json.loads(text)  # self-check: the hand-laid layout is valid JSON

    out = os.path.normpath(args.output)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

    per_hub: dict[str, int] = {}
    for name in models:
        hub = name.split("/", 1)[0]
        per_hub[hub] = per_hub.get(hub, 0) + 1
    print(f"wrote {out}: {len(models)} models, {len(text.encode())} bytes, as of {as_of}",
          file=sys.stderr)
    for hub in sorted(set(HUB_OF_PROVIDER.values())):
        print(f"  {hub:13} {per_hub.get(hub, 0)}", file=sys.stderr)
    for reason in sorted(skipped):
        keys = skipped[reason]
        shown = keys if args.verbose else keys[:3]
        more = "" if len(shown) == len(keys) else f", ... ({len(keys)})"
        print(f"  skipped: {reason}: {', '.join(shown)}{more}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
