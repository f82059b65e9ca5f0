"""``llmloop models list``: what the registry holds, newest version first."""

import argparse
import json

from llmloop import registry
from llmloop.paths import models_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llmloop models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    list_parser = sub.add_parser(
        "list", help="List base models and adapters with versions and metrics."
    )
    list_parser.add_argument("--json", action="store_true", help="One JSON object per line.")
    args = parser.parse_args(argv)
    rows = [registry.to_dict(a) for a in registry.list_artifacts()]
    registered = {r["path"] for r in rows}
    for model_dir in sorted(models_dir().glob("*/config.json")):  # prepared but never registered
        if str(model_dir.parent.resolve()) not in registered:
            rows.append(
                {
                    "name": model_dir.parent.name,
                    "version": 1,
                    "kind": "base",
                    "path": str(model_dir.parent),
                    "base": None,
                    "created": "",
                    "metrics": {},
                }
            )
    rows.sort(key=lambda r: (r["kind"] != "base", r["name"], -r["version"]))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(
            "No models yet: `llmloop serve` prepares the default model; `llmloop finetune` adds adapters."
        )
        return 0
    print(f"{'NAME':<32} {'VER':>3}  {'KIND':<9} {'BASE':<24} METRICS")
    for r in rows:
        metrics = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(r["metrics"].items())
            if not isinstance(v, dict)
        )
        print(f"{r['name']:<32} {r['version']:>3}  {r['kind']:<9} {r['base'] or '-':<24} {metrics}")
    return 0
