"""A batch of requests from a JSONL file: concurrent, resumable, failures reported by line.

    python examples/batch.py               # writes prompts.jsonl, runs it, runs it again (all skipped)

The same from the shell: `mediagen batch prompts.jsonl -m MODEL -o out/`.
"""

from __future__ import annotations

import asyncio
import json

from _common import parser, tiny

import mediagen as mg
from mediagen.batch import run_batch


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    prompts = args.output / "prompts.jsonl"
    lines = [
        {"prompt": f"a {animal} in the snow", "seed": i, "width": 32, "height": 32, "steps": 2, "name": animal}
        for i, animal in enumerate(["fox", "hare", "owl", "lynx"])
    ]
    lines.append(
        {
            "type": "audio",
            "prompt": "wind",
            "kind": "music",
            "duration_s": 0.5,
            "seed": 9,
            "model": tiny("musicgen", "transformers"),
            "name": "wind",
        }
    )
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    async with mg.Client() as client:
        first = await run_batch(prompts, args.output / "out", client=client, model=tiny("sd"), concurrency=4)
        print(f"first run: {len(first.done)} done, {len(first.failed)} failed")
        again = await run_batch(prompts, args.output / "out", client=client, model=tiny("sd"))
        print(f"second run: {len(again.done)} done, {len(again.skipped)} skipped")
    for path in first.files:
        print(path)


if __name__ == "__main__":
    asyncio.run(main())
